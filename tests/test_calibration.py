"""Calibrate-and-evaluate end to end on a small model: every method quantizes what it claims,
outputs stay close at W8A8, saved models load back identically, bad folders are named."""
import json

import pytest
import torch

from ptq4ris_core.calib.calibrate import CalibrationSet, active_quantizers, calibrate
from ptq4ris_core.calib.saved import example_batch, load_quantized, save_quantized
from ptq4ris_core.config import ConfigError, parse_bits
from ptq4ris_core.errors import ModelLoadError
from ptq4ris_core.evaluate import evaluate_model
from ptq4ris_core.methods import REGISTRY, get_method
from ptq4ris_core.models import load_model, save_model
from ptq4ris_core.nn import QuantModule


@pytest.fixture(scope="module")
def tiny_base(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "tiny.safetensors"
    save_model(tiny_model, path, dtype=torch.float32)
    return str(path), load_model(path)


@pytest.fixture(scope="module")
def calibrated(tiny_base, tmp_path_factory):
    _, fp = tiny_base
    study = tmp_path_factory.mktemp("study")
    # the mixed methods: a study small enough for a test (test_mixed_precision.py covers them fully)
    mixed = lambda name: dict(w_cands="4/8", a_cands="8", study_pairs=2, mix_parts="decoder",  # noqa: E731
                              study=str(study / f"{name}.json")) if name.startswith("mixq") else {}
    return {name: calibrate(fp, get_method(name, recon_iters=20, **mixed(name)), 8, 8, CalibrationSet(n=4),
                            progress=False) for name in sorted(REGISTRY)}


def test_every_method_quantizes_every_tensor_it_claims(calibrated, tiny_base):
    _, fp = tiny_base
    batch = example_batch(fp.cfg)
    for name, (model, report) in calibrated.items():
        claimed = {f"{layer}.{slot}" for layer, r in report["layers"].items() for slot in r["quantizers"]}
        active = active_quantizers(model)
        assert set(active) == claimed, name
        for q in active.values():
            q.n_quantized = 0
        with torch.no_grad():
            model(*batch)
        unused = [k for k, q in active.items() if q.n_quantized == 0]
        assert not unused, f"{name}: quantizers claimed but never applied: {unused[:5]}"
        # Coverage (METHODS.md §1): every wrapped layer's weights and inputs, both matmul operands,
        # except the image into the patch embedding and the final classifier.
        n_layers = sum(isinstance(m, QuantModule) for m in model.modules())
        assert len(claimed) == 2 * n_layers - 1, name  # patch_embed.proj keeps a float input


def test_w8a8_is_close_to_fp_but_really_quantized(calibrated, tiny_base):
    _, fp = tiny_base
    batch = example_batch(fp.cfg)
    with torch.no_grad():
        ref = fp(*batch)
        for name, (model, _) in calibrated.items():
            out = model(*batch)
            assert not torch.equal(out, ref), name
            cos = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0)
            assert cos > 0.98, (name, float(cos))


def test_method_specific_quantizers_land_on_the_right_roles(calibrated):
    kinds = lambda rep, role: {q["kind"] for r in rep["layers"].values() if r["role"] == role  # noqa: E731
                               for q in r["quantizers"].values()}
    _, ptq4ris = calibrated["ptq4ris"]
    vision = {n: r for n, r in ptq4ris["layers"].items() if r["domain"] == "vision"}
    assert any(q["kind"] == "drq_softmax" for r in vision.values() for q in r["quantizers"].values())
    assert any(q["kind"] == "drq_gelu" for r in vision.values() for q in r["quantizers"].values())
    assert "log" in kinds(calibrated["repqvit"][1], "post_softmax")
    assert kinds(calibrated["rtn"][1], "post_softmax") == {"uniform"}


def test_hessian_calibration_is_deterministic(tiny_base):
    _, fp = tiny_base
    a, _ = calibrate(fp, get_method("ptq4ris"), 4, 8, CalibrationSet(n=2, seed=3), progress=False)
    b, _ = calibrate(fp, get_method("ptq4ris"), 4, 8, CalibrationSet(n=2, seed=3), progress=False)
    batch = example_batch(fp.cfg)
    with torch.no_grad():
        assert torch.equal(a(*batch), b(*batch))


def test_save_and_load_reproduce_outputs_and_refuse_bad_folders(calibrated, tiny_base, tmp_path):
    base_path, fp = tiny_base
    model, report = calibrated["ptq4ris"]
    out = save_quantized(model, report, tmp_path / "q", base=base_path)
    loaded, meta = load_quantized(out)
    batch = example_batch(fp.cfg)
    with torch.no_grad():
        assert torch.equal(model(*batch), loaded(*batch))
    assert meta["method"] == "ptq4ris" and meta["bits"] == "W8A8"
    assert evaluate_model(loaded, "val", 4, progress=False)["n"] == 4

    with pytest.raises(ModelLoadError, match="not a folder"):
        load_quantized(tmp_path / "nothing")
    tensors = out / "quantized.safetensors"
    original = tensors.read_bytes()
    tensors.write_bytes(original[:-8] + b"\0" * 8)
    with pytest.raises(ModelLoadError, match="altered"):
        load_quantized(out)
    tensors.write_bytes(original)
    meta_path = out / "quantized.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["base"]["sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="another model"):
        load_quantized(out)
    tensors.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load_quantized(out)


def test_bad_method_and_bits_are_named():
    with pytest.raises(ConfigError, match="unknown method 'ptq5ris'"):
        get_method("ptq5ris")
    with pytest.raises(ConfigError, match="WxAy"):
        parse_bits("8bit")
    with pytest.raises(ConfigError, match="between 2 and 8"):
        parse_bits("W1A8")
    assert parse_bits("w4a8") == (4, 8)


def test_ptq4ris_options_choose_the_quantizers_they_name():
    from ptq4ris_core.calib.roles import LayerInfo
    from ptq4ris_core.config import LayerSetting
    s = LayerSetting(4, 4)
    kinds = lambda m, domain, kind, role: {  # noqa: E731
        slot: q.kind for slot, q in m.quantizers_for(LayerInfo("x", None, kind, role, 0, domain), s).items()}
    full, none = get_method("ptq4ris"), get_method("ptq4ris", drq=False)
    assert kinds(full, "vision", "matmul", "post_softmax")["a_quantizer"] == "drq_softmax"
    assert kinds(full, "vision", "linear", "post_gelu")["input_quantizer"] == "drq_gelu"
    assert kinds(none, "vision", "matmul", "post_softmax")["a_quantizer"] == "uniform"
    soft, gelu = get_method("ptq4ris", drq="softmax"), get_method("ptq4ris", drq="gelu")
    assert kinds(soft, "vision", "matmul", "post_softmax")["a_quantizer"] == "drq_softmax"
    assert kinds(soft, "vision", "linear", "post_gelu")["input_quantizer"] == "uniform"
    assert kinds(gelu, "vision", "matmul", "post_softmax")["a_quantizer"] == "uniform"
    assert kinds(gelu, "vision", "linear", "post_gelu")["input_quantizer"] == "drq_gelu"
    # The fusion's attention: plain uniform per tensor as the paper says, or the vision encoder's treatment.
    assert kinds(full, "fusion", "matmul", "post_softmax")["a_quantizer"] == "uniform"
    fa = get_method("ptq4ris", fusion_attention=True)
    assert kinds(fa, "fusion", "matmul", "post_softmax")["a_quantizer"] == "drq_softmax"
    qk = fa.quantizers_for(LayerInfo("x", None, "matmul", "qk", 0, "fusion"), s)
    assert qk["a_quantizer"].axis == qk["b_quantizer"].axis == 1  # per head
    assert kinds(fa, "fusion", "linear", "generic")["input_quantizer"] == "uniform"  # only the attention changes
    assert get_method("ptq4ris", text_metric="hessian").metric_for(LayerInfo("x", None, "linear", "post_ln", 0,
                                                                             "text")) == "hessian"
    # The word projections read BERT's output: RORQ there only when asked; the other fusion and decoder
    # inputs get channel groups (split GEMM) only when asked; attention operands never.
    assert kinds(full, "fusion", "linear", "post_ln")["input_quantizer"] == "uniform"
    words = get_method("ptq4ris", rorq="element", rorq_words=True)
    assert kinds(words, "fusion", "linear", "post_ln")["input_quantizer"] == "rorq_element"
    assert kinds(words, "fusion", "linear", "generic")["input_quantizer"] == "uniform"
    split = get_method("ptq4ris", split_groups=True)
    conv = split.quantizers_for(LayerInfo("x", None, "conv", "generic", 0, "decoder"), s)["input_quantizer"]
    assert conv.kind == "rorq_channel_split" and conv.axis == 1
    assert kinds(split, "fusion", "linear", "post_gelu")["input_quantizer"] == "rorq_channel_split"
    assert kinds(split, "fusion", "matmul", "post_softmax")["a_quantizer"] == "uniform"
    assert kinds(split, "vision", "linear", "generic")["input_quantizer"] == "uniform"
    # split_groups=all: the vision encoder's Linear inputs too, but DRQ keeps the post-GELU ones
    every = get_method("ptq4ris", split_groups="all")
    assert kinds(every, "vision", "linear", "post_ln")["input_quantizer"] == "rorq_channel_split"
    assert kinds(every, "vision", "linear", "post_gelu")["input_quantizer"] == "drq_gelu"
    assert kinds(every, "vision", "matmul", "post_softmax")["a_quantizer"] == "drq_softmax"
    no_drq = get_method("ptq4ris", split_groups="all", drq=False)
    assert kinds(no_drq, "vision", "linear", "post_gelu")["input_quantizer"] == "rorq_channel_split"
    for bad in ({"drq": "both"}, {"rorq": "rows"}, {"text_metric": "l3"}, {"split_groups": "vision"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            get_method("ptq4ris", **bad)


@pytest.mark.parametrize("bits", ["W8A8", "W6A6", "W4A8", "W4A4"])
def test_every_shipped_preset_resolves_to_its_bits_and_a_valid_method(bits):
    from ptq4ris_core.presets import PRESET_DIR, load_preset, resolve
    preset = load_preset(PRESET_DIR / f"{bits}.yaml")
    plan = resolve(preset)
    assert f"W{plan.w_bits}A{plan.a_bits}" == bits and plan.n in (32, 64, 128)
    assert plan.method.options() == {**plan.method.options(), **{k: (None if v == "none" else v)
                                                                  for k, v in preset["options"].items()}}
    # YAML's 'none' means no RORQ, as on the CLI
    assert resolve({"method": "ptq4ris", "bits": bits, "options": {"rorq": "none"}}).method.rorq is None



def test_a_mixed_method_over_a_ptq4ris_preset_keeps_the_presets_quantizers():
    # 'calibrate --preset calibration/W4A4.yaml --method mixq-lrp' is mixed bits over the preset's PTQ4RIS,
    # as the table's 'mixq-lrp@preset' is; an unrelated method does not take PTQ4RIS's options
    from ptq4ris_core.presets import PRESET_DIR, cell_method, load_preset, resolve
    preset = load_preset(PRESET_DIR / "W4A4.yaml")
    plan = resolve(preset, "mixq-lrp", options=["study_pairs=4"])
    _, cell = cell_method("mixq-lrp@preset:study_pairs=4", "W4A4")
    assert {k: plan.method.options()[k] for k in cell} == {k: option for k, option in cell.items()}
    assert plan.method.rorq == preset["options"]["rorq"] and plan.method.study_pairs == 4
    assert not hasattr(resolve(preset, "rtn").method, "rorq")

def test_bias_correction_removes_the_mean_output_error_and_survives_save_load():
    from ptq4ris_core.calib.search import calibrate_layer, correct_bias, layer_forward
    from ptq4ris_core.methods.base import uniform, weight_q
    from ptq4ris_core.nn import QuantConv2d, QuantLinear
    torch.manual_seed(0)
    for mod, x in ((QuantLinear(torch.nn.Linear(16, 8, bias=False)), torch.randn(64, 5, 16) + 0.5),
                   (QuantConv2d(torch.nn.Conv2d(4, 6, 3, padding=1)), torch.randn(8, 4, 7, 7) + 0.5)):
        mod.weight_quantizer, mod.input_quantizer = weight_q(3, "minmax"), uniform(3, "minmax")
        fp_out = calibrate_layer(mod, [x], None, "mse", 1)
        ch = 1 if isinstance(mod, QuantConv2d) else -1
        dims = [d for d in range(fp_out.dim()) if d != ch % fp_out.dim()]
        before = (fp_out - layer_forward(mod, [x], True)).mean(dims)
        correct_bias(mod, [x], fp_out)
        after = (fp_out - layer_forward(mod, [x], True)).mean(dims)
        assert before.abs().max() > 1e-3 and after.abs().max() < 1e-5
        # the corrected bias (created where the layer had none) loads into a fresh wrapper
        fresh = type(mod)(torch.nn.Linear(16, 8, bias=False) if isinstance(mod, QuantLinear)
                          else torch.nn.Conv2d(4, 6, 3, padding=1))
        fresh.weight_quantizer, fresh.input_quantizer = weight_q(3, "minmax"), uniform(3, "minmax")
        fresh.load_state_dict(mod.state_dict())
        assert torch.equal(fresh(x), mod(x))
    # PTQ4RIS corrects image layers only: token sequences are mostly padding
    from ptq4ris_core.calib.roles import LayerInfo
    m = get_method("ptq4ris", bias_correction=True)
    lin = QuantLinear(torch.nn.Linear(16, 8))
    lin.weight_quantizer = weight_q(3, "minmax")
    x = torch.randn(4, 16) + 1
    fp_out = calibrate_layer(lin, [x], None, "mse", 1)
    bias = lin.bias.detach().clone()
    for domain, role in (("text", "generic"), ("fusion", "post_ln")):
        m.finish(LayerInfo("x", lin, "linear", role, 0, domain), [x], fp_out)
        assert torch.equal(lin.bias, bias)
    m.finish(LayerInfo("x", lin, "linear", "generic", 0, "fusion"), [x], fp_out)
    assert not torch.equal(lin.bias, bias)


def test_part_off_brings_back_the_float_model_one_part_at_a_time(tiny_base):
    from ptq4ris_core.experiments.part_off import set_part_quantizers
    from ptq4ris_core.experiments.sensitivity import PARTS
    _, fp = tiny_base
    model, _ = calibrate(fp, get_method("ptq4ris"), 6, 6, CalibrationSet(n=2), progress=False)
    batch = example_batch(fp.cfg)
    with torch.no_grad():
        ref, quant = fp(*batch), model(*batch)
        assert set_part_quantizers(model, PARTS["decoder"], False) > 0
        decoder_float = model(*batch)
        for patterns in PARTS.values():
            set_part_quantizers(model, patterns, False)
        all_float = model(*batch)
        for patterns in PARTS.values():
            set_part_quantizers(model, patterns, True)
        again = model(*batch)
    assert torch.allclose(all_float, ref, atol=1e-4)  # every quantizer of the model lies in one of the parts
    assert not torch.allclose(decoder_float, quant, atol=1e-4) and not torch.allclose(decoder_float, ref, atol=1e-4)
    assert torch.equal(again, quant)


def test_part_off_takes_parts_by_name_and_refuses_one_that_matches_nothing_before_scoring(tiny_base, tmp_path,
                                                                                           capsys, monkeypatch):
    from ptq4ris_core.calib.saved import save_quantized
    from ptq4ris_core.experiments import part_off as P
    base, fp = tiny_base
    model, report = calibrate(fp, get_method("ptq4ris"), 8, 8, CalibrationSet(n=2), progress=False)
    folder = save_quantized(model, report, tmp_path / "q", base=base)
    with pytest.raises(SystemExit):
        P.main(["--quantized", str(folder), "--part", "no globs"])
    assert "NAME=GLOB" in capsys.readouterr().err
    with monkeypatch.context() as m:
        m.setattr("ptq4ris_core.evaluate.evaluate_model", lambda *a, **k: pytest.fail("scored before the parts were checked"))
        with pytest.raises(ValueError, match="no quantizer's name matches fusions.9"):
            P.part_off(folder, limit=2, parts={"typo": ["fusions.9.*"]}, progress=False)
    res = P.part_off(folder, limit=2, parts={"decoder weights": ["decoder.*.weight_quantizer"]}, progress=False)
    assert [r["float"] for r in res["rows"]] == ["FP32 model", "nothing (as calibrated)", "decoder weights"]
    assert res["rows"][2]["quantizers_off"] == len(P.part_quantizers(model, ["decoder.*.weight_quantizer"])) > 0
