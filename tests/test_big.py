"""BIG (PTQ4SAM): bimodal post-Key detection and the sign fold, against the float network and the quantizer."""
import numpy as np
import torch

from ptq4ris_core.calib.big import capture_keys, fold_signs, integrate_bimodal, is_bimodal, key_projections
from ptq4ris_core.data import SceneGenerator
from ptq4ris_core.models import Preprocessor, load_model
from ptq4ris_core.quant import functional as Fq


def _batch(model, n=2):
    gen = SceneGenerator(model.cfg.image_size)
    samples = [gen.sample("val", i) for i in range(n)]
    pre = Preprocessor(model.cfg)
    img = pre.images(np.stack([s.image for s in samples]))
    ids, mask = pre.texts([s.text for s in samples])
    return img, ids, mask


def test_the_default_model_has_its_vision_fusion_and_text_attentions_found():
    names = list(key_projections(load_model("default")))
    assert sum(n.startswith("stages.") for n in names) == 2 + 2 + 4 + 2  # every Swin block (fused qkv)
    assert sum(n.startswith("fusions.") for n in names) == 4  # the pixel-word attentions
    assert sum(n.startswith("text_encoder.") for n in names) == 6  # MiniLM's layers


def test_folding_any_signs_leaves_the_float_network_unchanged():
    model = load_model("default").eval()
    batch = _batch(model)
    with torch.no_grad():
        before = model(*batch)
        g = torch.Generator().manual_seed(0)
        for p in key_projections(model).values():
            n = p.key.weight[p.key_rows].shape[0]
            fold_signs(p, torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0))
        after = model(*batch)
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)


def test_bimodality_is_two_clear_peaks():
    g = torch.Generator().manual_seed(0)
    one = torch.randn(5000, generator=g)
    two = torch.cat([torch.randn(2500, generator=g) * 0.5 - 3, torch.randn(2500, generator=g) * 0.5 + 3])
    three = torch.cat([two, torch.randn(2500, generator=g) * 0.3 + 9])
    assert not is_bimodal(one) and is_bimodal(two) and not is_bimodal(three)
    assert not is_bimodal(torch.full((100,), 0.7))  # degenerate keys: no fold, no error


def test_sign_fold_makes_a_bimodal_key_quantize_better():
    """Channels with means ±3: per-tensor 4-bit quantization of K before and after γ = sign(channel mean)."""
    g = torch.Generator().manual_seed(0)
    means = torch.where(torch.rand(32, generator=g) < 0.5, -3.0, 3.0)
    k = torch.randn(2000, 32, generator=g) * 0.5 + means
    gamma = torch.where(k.mean(0) < 0, -1.0, 1.0)

    def err(x):
        s, z = Fq.minmax_params(x.min(), x.max(), 4, False)
        return float(((Fq.fake_quant(x, s, z, 0, 15) - x) ** 2).mean())
    assert is_bimodal(k) and not is_bimodal(k * gamma)
    assert err(k * gamma) < 0.5 * err(k)


def test_integrate_reports_every_attention_and_keeps_the_output():
    model = load_model("default").eval()
    batch = _batch(model)
    with torch.no_grad():
        before = model(*batch)
        report = integrate_bimodal(model, lambda: model(*batch))
        after = model(*batch)
    assert set(report) == set(key_projections(model))
    assert all(r["flipped"] == 0 for r in report.values() if not r["bimodal"])
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)
    keys = capture_keys(model, key_projections(model), lambda: model(*batch))
    assert all(v.shape[1] == report[n]["channels"] for n, v in keys.items())


def test_a_model_without_attention_gives_an_empty_report_and_is_left_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(), torch.nn.Linear(4, 2))
    x = torch.randn(3, 4)
    before = model(x)
    assert integrate_bimodal(model, lambda: model(x)) == {}
    assert torch.equal(model(x), before)


def test_ptq4ris_big_option_folds_on_the_quantizable_copy_before_calibration():
    """The method's whole-model step sees the wrapped layers, reports every attention, and leaves the
    (not yet quantized) copy computing what the float model computes; without the option it does nothing."""
    from ptq4ris_core.calib.calibrate import build_config, prepare_model
    from ptq4ris_core.methods import get_method
    fp = load_model("default").eval()
    batch = _batch(fp)
    for big in (True, False):
        method = get_method("ptq4ris", big=big)
        model, _ = prepare_model(fp, method, build_config(fp, 4, 4), batch)
        with torch.no_grad():
            folds = method.prepare_model(model, lambda: model(*batch))
            assert torch.allclose(model(*batch), fp(*batch), atol=1e-4, rtol=1e-4)
        assert (set(folds.get("big", {})) == set(key_projections(fp))) if big else folds == {}
