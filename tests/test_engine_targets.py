"""Export targets and the engine's self-check: checks that bite on every CPU, saturating or not."""
import importlib.util
import json
import re
import shutil

import numpy as np
import pytest
import torch

from int16_pairs import cap_took_effect, saturating_pairs, self_checks_under_avx2_cap, weight_codes

from ptq4ris_core.calib.calibrate import CalibrationSet, calibrate
from ptq4ris_core.engine import Engine, EngineError, export_engine
from ptq4ris_core.engine import engine as engine_module
from ptq4ris_core.engine.artifact import read_meta, write_meta
from ptq4ris_core.engine.cpu import CpuInt8, cpu_int8, resolve_target
from ptq4ris_core.engine.golden import F32_MEAN_ERROR
from ptq4ris_core.engine.targets import weights_for_target
from ptq4ris_core.methods import get_method
from ptq4ris_core.models import Preprocessor

CPU = cpu_int8()
HAS_OV = importlib.util.find_spec("openvino") is not None
ZEN3 = CpuInt8("x86_64", (), True, "AMD EPYC 7B13")  # AVX2, no VNNI: the CPU of issue 18
SAPPHIRE = CpuInt8("x86_64", ("AVX512_VNNI", "AMX_INT8"), True, "Xeon")


@pytest.fixture(scope="module")
def calibrated(tiny_model):
    q, _ = calibrate(tiny_model, get_method("rtn"), 8, 8, CalibrationSet(n=2), progress=False)
    return q, CalibrationSet(n=2).build(tiny_model.cfg, Preprocessor(tiny_model.cfg))


@pytest.fixture(scope="module")
def engines(calibrated, tmp_path_factory):
    q, batches = calibrated
    root = tmp_path_factory.mktemp("targets")
    info = {"quantization": {"method": "rtn", "bits": "W8A8", "source": "runs/w8a8"}}
    return {t: export_engine(q, root / t, info, batches, target=t) for t in ("portable", "vnni")}


def test_portable_engine_obeys_the_int16_pair_bound_in_every_kernel_order(engines):
    for graph in ("segmenter.onnx", "text_encoder.onnx"):
        assert len(weight_codes(engines["portable"] / graph)) > 5
        assert saturating_pairs(engines["portable"] / graph) == 0, graph
    # and the check bites: full 8-bit weights break the bound
    assert saturating_pairs(engines["vnni"] / "segmenter.onnx") > 0


def test_meta_records_the_target_and_what_each_layer_stores(engines):
    for target, bits, safe in (("portable", 7, True), ("vnni", 8, False)):
        q = read_meta(engines[target])["quantization"]
        assert q["target"]["stored"] == target and q["target"]["int16_pair_safe"] is safe
        assert q["weights"] and set(q["weights"]) <= set(q["integer_layers"])
        assert {w["weight_bits"] for w in q["weights"].values()} == {bits}
        assert max(w["max_code"] for w in q["weights"].values()) == 2 ** (bits - 1) - 1


def test_portable_keeps_weights_that_already_obey_the_bound(tiny_model):
    """W4 layers cannot saturate: the portable target leaves their codes alone."""
    q, _ = calibrate(tiny_model, get_method("rtn"), 4, 8, CalibrationSet(n=2), progress=False)
    lin = next(m for m in q.modules() if hasattr(m, "weight_quantizer") and m.weight_quantizer is not None)
    before = lin.weight_quantizer(lin.weight).clone()
    with weights_for_target(q, "portable"):
        assert torch.equal(lin.weight_quantizer(lin.weight), before)


def test_portable_simulation_is_seven_bit_codes_over_the_same_range(calibrated):
    q, _ = calibrated
    lin = next(m for m in q.modules() if hasattr(m, "weight_quantizer") and m.weight_quantizer is not None)
    w8 = lin.weight_quantizer(lin.weight).detach()
    with weights_for_target(q, "portable"):
        w7 = lin.weight_quantizer(lin.weight).detach()
    step = w8.abs().amax(1, keepdim=True) / 63  # the same largest value, 63 steps of it
    assert torch.allclose(w7.abs().amax(1, keepdim=True), w8.abs().amax(1, keepdim=True), rtol=1e-5)
    assert torch.allclose(w7 / step, torch.round(w7 / step), atol=1e-3)  # on the 7-bit grid
    assert not torch.equal(w7, w8) and torch.equal(lin.weight_quantizer(lin.weight), w8)  # restored


def test_auto_target_follows_the_cpu():
    assert resolve_target("auto", ZEN3) == "portable" and resolve_target("auto", SAPPHIRE) == "vnni"
    assert resolve_target("auto", CpuInt8("aarch64", ("ASIMDDP",), True)) == "vnni"  # ARM does not saturate
    assert resolve_target("auto", CpuInt8("x86_64", (), False)) == "portable"  # unreadable: assume it saturates
    with pytest.raises(ValueError, match="portable, vnni, auto"):
        resolve_target("avx2")


def test_vnni_engine_is_refused_on_a_cpu_that_looks_saturating(engines, monkeypatch):
    monkeypatch.setattr(engine_module, "cpu_int8", lambda: ZEN3)
    with pytest.raises(EngineError) as e:
        Engine.load(engines["vnni"], backend="onnxruntime")
    msg = str(e.value)
    assert "AMD EPYC 7B13" in msg and "no int8 dot-product" in msg and "--target portable" in msg
    assert "runs/w8a8" in msg and "allow_unsafe" in msg  # the command that fixes it names the calibrated folder
    assert Engine.load(engines["portable"], backend="onnxruntime").self_check["passed"]
    eng = Engine.load(engines["vnni"], backend="onnxruntime", allow_unsafe=True)  # experiments
    assert eng.target == "vnni"
    monkeypatch.setattr(engine_module, "cpu_int8", lambda: CpuInt8("x86_64", (), False))
    with pytest.raises(EngineError, match="unreadable"):
        Engine.load(engines["vnni"], backend="onnxruntime")


def test_vnni_engine_is_not_refused_on_a_cpu_with_vnni(engines, monkeypatch):
    monkeypatch.setattr(engine_module, "cpu_int8", lambda: SAPPHIRE)
    eng = Engine.load(engines["vnni"], backend="onnxruntime", allow_unsafe=CPU.saturates)
    assert eng.target == "vnni"


@pytest.mark.skipif(not CPU.saturates, reason=f"needs a CPU whose int8 kernels saturate: {CPU.describe()}")
def test_self_check_catches_real_saturation_on_this_cpu(engines):
    eng = Engine.load(engines["vnni"], backend="onnxruntime", allow_unsafe=True)
    assert not eng.self_check["passed"], eng.self_check


def _with_golden_logits_scaled(src, dst, by: float):
    """A copy of an engine whose stored golden logits are ``by`` times what the simulation computed (as a runtime
    computing differently would see them), its hashes rewritten so only the self-check can notice."""
    shutil.copytree(src, dst)
    with np.load(dst / "golden.npz") as z:
        arrays = {k: z[k] * by if k.endswith("/logits") else z[k] for k in z.files}
    np.savez(dst / "golden.npz", **arrays)
    meta = json.loads((dst / "meta.json").read_text(encoding="utf-8"))
    write_meta(dst, {k: v for k, v in meta.items() if k not in ("format", "format_version", "files")})
    return dst


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino:f32"])
def test_self_check_refuses_outputs_that_diverge_and_names_the_case(engines, tmp_path, backend):
    eng = Engine.load(engines["portable"], backend=backend)
    check = eng.self_check
    assert check["passed"] and len(check["cases"]) == 3 and check["ms"] < 2000
    assert all(c["mean_abs_error"] < F32_MEAN_ERROR for c in check["cases"])  # the small model's parity tolerance
    bad = _with_golden_logits_scaled(engines["portable"], tmp_path / "bad", by=1.25)  # 20 % off
    with pytest.raises(EngineError) as e:
        Engine.load(bad, backend=backend)
    assert "self-check failed" in str(e.value) and repr(check["cases"][0]["text"]) in str(e.value)
    found = re.search(r"([\d.]+)% of their size", str(e.value))  # the error it found
    assert found and 19 < float(found.group(1)) < 21, str(e.value)
    assert not Engine.load(bad, backend=backend, allow_unsafe=True).self_check["passed"]
    assert Engine.load(bad, backend=backend, self_check=False).self_check is None


def test_auto_backend_says_why_and_moves_on_when_a_runtime_fails_its_check(engines, monkeypatch):
    eng = Engine.load(engines["portable"])
    assert eng.why.startswith("auto:") and eng.report()["self_check"].startswith("passed")
    real = Engine.run_self_check
    monkeypatch.setattr(Engine, "run_self_check", lambda self: (
        {**real(self), "passed": False, "cases": [{**c, "ok": False} for c in real(self)["cases"]]}
        if self.backend == eng.backend else real(self)))
    second = Engine.load(engines["portable"])
    assert second.backend != eng.backend and "failed its self-check" in second.why


@pytest.mark.skipif(not HAS_OV, reason="OpenVINO not installed")
def test_openvino_capped_to_avx2_int8_kernels_keeps_the_portable_engine_right(engines):
    """oneDNN and OpenVINO's own kernels can be capped to AVX2 (ONEDNN_MAX_CPU_ISA, OV_CPU_MAX_ISA), which gives
    any x86 CPU the saturating int16 pair sums of a CPU without VNNI: the portable engine must still reproduce
    its simulation there, and the vnni engine must not, wherever the cap took effect (no VNNI or AMX kernel ran)."""
    if not CPU.is_x86:
        pytest.skip(f"the ISA cap is x86's: {CPU.describe()}")
    res = self_checks_under_avx2_cap(engines["portable"], engines["vnni"])
    portable, vnni = res[str(engines["portable"])], res[str(engines["vnni"])]
    assert portable["passed"], (portable, CPU.describe())
    if not cap_took_effect(vnni["kernels"]):
        pytest.skip(f"this OpenVINO build ignored the cap: {vnni['kernels']} ({CPU.describe()})")
    assert not vnni["passed"], (vnni, CPU.describe())  # the cap gives saturating kernels: the check bites


def test_auto_order_follows_the_measured_table_for_each_cpu_class():
    from ptq4ris_core.engine.choice import backend_order
    quantized, fp32 = {"quantization": {"method": "ptq4ris"}}, {"quantization": {"method": "fp32"}}
    both = ("onnxruntime", "openvino")
    assert [b for b, _ in backend_order(quantized, ZEN3, both)] == ["onnxruntime", "openvino"]
    assert [b for b, _ in backend_order(quantized, SAPPHIRE, both)] == ["openvino", "onnxruntime"]
    assert "AVX2" in backend_order(quantized, ZEN3, both)[0][1] and "VNNI Xeons" in backend_order(quantized, SAPPHIRE, both)[0][1]
    assert backend_order(fp32, ZEN3, both)[0][0] == "openvino"
    only = backend_order(quantized, SAPPHIRE, ("onnxruntime",))
    assert only[0][0] == "onnxruntime" and "openvino is not installed" in only[0][1]
    with pytest.raises(EngineError, match="pip install"):
        backend_order(quantized, ZEN3, ())


def test_method_table_simulates_and_deploys_each_cell_at_the_target(tiny_model, tmp_path):
    from ptq4ris_core.models import load_model
    from ptq4ris_core.models.store import save_model
    from ptq4ris_core.table import method_table
    base = save_model(tiny_model, tmp_path / "tiny.safetensors", dtype=torch.float32)
    res = method_table(load_model(base), ["rtn"], ["W8A8"], limit=4, calib_n=2, progress=False, save_dir=tmp_path,
                       deploy=("rtn",), backends=("onnxruntime",), base=str(base))
    cell = res["rows"][1]
    assert cell["target"] == "portable" and set(cell["deployed"]) == {"onnxruntime"}
    assert read_meta(tmp_path / "rtn_W8A8_engine")["quantization"]["target"]["stored"] == "portable"


def test_reduced_precision_check_forgives_flips_on_the_mask_edge_only():
    from ptq4ris_core.engine.golden import compare
    rng = np.random.default_rng(0)
    want = rng.normal(0, 5, (1, 2, 32, 32))
    edge = np.abs(want[:, 1] - want[:, 0]) < 0.05  # pixels the simulation was unsure of
    flipped_on_edge = want.copy()
    flipped_on_edge[:, :, edge[0]] = want[:, ::-1][:, :, edge[0]]
    assert edge.any() and compare(flipped_on_edge, want, "bf16")["ok"]
    far = np.zeros_like(edge)
    far[0, :4] = True  # 4 rows of 32: 12 % of the pixels, wherever they are
    flipped_far = want.copy()
    flipped_far[:, :, far[0]] = want[:, ::-1][:, :, far[0]]
    assert not compare(flipped_far, want, "bf16")["ok"] and not compare(flipped_far, want, "f32")["ok"]
