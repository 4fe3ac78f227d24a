"""Each quantizer against its formula, with the edge cases: all-zero, constant, a single outlier."""
import math

import pytest
import torch

from ptq4ris_core.quant import functional as Fq
from ptq4ris_core.quant.observers import channel_groups, channel_minmax, magnitude_groups
from ptq4ris_core.quant.quantizers import (DualRegionGeluQuantizer, DualRegionSoftmaxQuantizer,
                                           ElementGroupQuantizer, LogQuantizer, UniformQuantizer)


def test_qrange():
    assert Fq.qrange(8, True) == (-127, 127)
    assert Fq.qrange(8, False) == (0, 255)
    assert Fq.qrange(4, True) == (-7, 7)
    assert Fq.qrange(2, False) == (0, 3)
    with pytest.raises(ValueError):
        Fq.qrange(9, True)


def test_uniform_asymmetric_matches_formula_by_hand():
    x = torch.tensor([-1.0, -0.35, 0.0, 0.26, 2.0, 5.0])
    scale, zp = Fq.minmax_params(torch.tensor(-1.0), torch.tensor(2.0), 4, symmetric=False)
    assert float(scale) == pytest.approx(3 / 15)
    assert float(zp) == 5  # round(0 - (-1)/0.2)
    q = UniformQuantizer(4).set_params(scale, zp)
    expected = torch.tensor([(q_ - 5) * 0.2 for q_ in (0, 3, 5, round(0.26 / 0.2) + 5, 15, 15)])
    assert torch.allclose(q(x), expected)


def test_uniform_symmetric_per_channel_matches_formula():
    w = torch.tensor([[0.5, -1.0, 0.25], [10.0, -3.0, 7.0]])
    lo, hi = channel_minmax(w, axis=0)
    scale, zp = Fq.minmax_params(lo, hi, 8, symmetric=True)
    assert torch.allclose(scale, torch.tensor([1.0, 10.0]) / 127) and (zp == 0).all()
    q = UniformQuantizer(8, symmetric=True, axis=0).set_params(scale, zp)
    ref = torch.round(w / scale[:, None]).clamp(-127, 127) * scale[:, None]
    assert torch.equal(q(w), ref)
    assert (q(w) - w).abs().max() <= scale.max() / 2 + 1e-7


def test_uniform_edge_cases():
    zeros = torch.zeros(10)
    s, z = Fq.minmax_params(zeros.min(), zeros.max(), 8, False)
    assert torch.isfinite(s) and s > 0
    assert torch.equal(UniformQuantizer(8).set_params(s, z)(zeros), zeros)
    const = torch.full((10,), 3.0)
    s, z = Fq.minmax_params(const.min(), const.max(), 8, False)  # range widened to [0, 3]
    assert torch.allclose(UniformQuantizer(8).set_params(s, z)(const), const)
    # One outlier sets a min-max scale so coarse that the bulk collapses: the problem RORQ and DRQ address.
    x = torch.cat([torch.linspace(-0.1, 0.1, 999), torch.tensor([100.0])])
    s, z = Fq.minmax_params(x.min(), x.max(), 4, False)
    xq = UniformQuantizer(4).set_params(s, z)(x)
    assert xq[-1] == pytest.approx(100.0, rel=0.05)
    assert (xq[:-1] == 0).float().mean() > 0.99


def test_uncalibrated_or_disabled_quantizer_is_identity_and_counts_nothing():
    q = UniformQuantizer(4)
    x = torch.randn(5)
    assert torch.equal(q(x), x) and q.n_quantized == 0
    q.set_params(torch.tensor(0.5), torch.tensor(8.0))
    q.enabled = False
    assert torch.equal(q(x), x) and q.n_quantized == 0
    q.enabled = True
    assert not torch.equal(q(x), x) and q.n_quantized == 1


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_dual_region_softmax_formula(bits):
    half = 2 ** (bits - 1)
    split = 2.0 ** -4
    x = torch.tensor([0.0, 0.001, 0.03, 0.0624, 0.0626, 0.3, 0.999, 1.0])
    out = Fq.dual_region_softmax(x, torch.tensor(split), bits)
    d_low, d_high = split / half, 1 / half
    for xi, oi in zip(x.tolist(), out.tolist()):
        if xi < split:
            assert oi == pytest.approx(min(round(xi / d_low), half - 1) * d_low)
        else:
            assert oi == pytest.approx(min(round(xi / d_high), half - 1) * d_high)
    # 2^(b-1) levels per region; the low region is finer by exactly 1/split (a power of two).
    assert d_high / d_low == 2 ** 4
    assert len(Fq.levels_of_dual_softmax(split, bits)) <= 2 ** bits
    q = DualRegionSoftmaxQuantizer(bits)
    q.split.fill_(split)
    q.mark_calibrated()
    assert torch.equal(q(x), out)


@pytest.mark.parametrize("bits", [4, 8])
def test_dual_region_gelu_formula(bits):
    half = 2 ** (bits - 1)
    x = torch.tensor([-0.17, -0.1, -0.01, 0.0, 0.07, 1.33, 50.0])
    delta = 0.1
    out = Fq.dual_region_gelu(x, torch.tensor(delta), bits)
    d_neg = 0.17 / (half - 1)
    for xi, oi in zip(x.tolist(), out.tolist()):
        if xi < 0:
            assert oi == pytest.approx(max(round(xi / d_neg), -(half - 1)) * d_neg, abs=1e-7)
        else:
            assert oi == pytest.approx(min(round(xi / delta), half - 1) * delta)
    assert out[0] == pytest.approx(-0.17)  # GELU's minimum is a level


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_log_quantizer_formula_and_underflow(tau):
    bits, s = 4, 1.0
    x = torch.tensor([1.0, 0.5, 0.3, 0.01, 1e-9, 0.0])
    out = Fq.log_quant(x, torch.tensor(s), bits, tau)
    for xi, oi in zip(x.tolist(), out.tolist()):
        if xi <= 0:
            assert oi == 0
            continue
        q = round(-tau * math.log2(xi / s))
        assert oi == pytest.approx(0.0 if q >= 2 ** bits else s * 2 ** (-min(max(q, 0), 15) / tau))
    q = LogQuantizer(bits, tau).mark_calibrated()
    assert torch.equal(q(x), out)


def test_rorq_element_groups_keep_the_outlier_and_the_bulk():
    g = torch.Generator().manual_seed(0)
    bulk = torch.randn(20000, generator=g) * 0.1
    x = torch.cat([bulk, torch.tensor([25.0, -30.0, 8.0])])
    th, lo, hi = magnitude_groups(x)
    mag = x.abs()  # the rule's statistics include the outliers themselves
    assert len(th) >= 2 and th[0] == pytest.approx(float(mag.mean() + 3 * mag.std(unbiased=False)), rel=1e-4)
    scales = (hi - lo) / 255
    zps = torch.round(-lo / scales)
    q = ElementGroupQuantizer(8).set_groups(th, scales, zps)
    xq = q(x)
    # Outliers survive (no clipping) and the bulk keeps a fine step, unlike one min-max scale.
    assert (xq[-3:] - x[-3:]).abs().max() < 0.2
    assert (xq[:-3] - bulk).abs().max() < 0.01
    s1, z1 = Fq.minmax_params(x.min(), x.max(), 8, False)
    assert (UniformQuantizer(8).set_params(s1, z1)(x)[:-3] - bulk).abs().mean() > 5 * (xq[:-3] - bulk).abs().mean()


def test_rorq_element_all_zero_is_safe():
    th, lo, hi = magnitude_groups(torch.zeros(100))
    assert th.numel() == 1 and lo.item() == 0 and hi.item() == 0


def test_rorq_channel_groups_put_outlier_channels_apart():
    x = torch.randn(500, 64) * 0.5
    x[:, 7] *= 60
    x[:, 40] *= 40
    lo, hi = channel_minmax(x, axis=1)
    groups = channel_groups(lo, hi)
    assert groups[7] > 0 and groups[40] > 0
    assert (groups == 0).sum() == 62


def test_channel_group_split_quantizer_matches_per_group_formula_and_search_keeps_groups():
    from ptq4ris_core.calib.search import init_from_stats, search_one
    from ptq4ris_core.quant.quantizers import ChannelGroupQuantizer
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, 6, 6, generator=g)  # conv input: channels on axis 1
    x[:, 3] *= 80  # one source with a much wider range (as a concatenation in the decoder)
    q = ChannelGroupQuantizer(4, axis=1)
    init_from_stats(q, x)
    assert q.groups[3] > 0 and (q.groups == 0).sum() == 31
    bulk = [c for c in range(32) if c != 3]
    # Each group: one asymmetric min-max scale over its channels, the uniform formula per element.
    s0, z0 = Fq.minmax_params(x[:, bulk].min(), x[:, bulk].max(), 4, False)
    expect = Fq.fake_quant(x[:, bulk], s0, z0, 0, 15)
    assert torch.allclose(q(x)[:, bulk], expect)
    s3, z3 = Fq.minmax_params(x[:, 3].min(), x[:, 3].max(), 4, False)
    assert torch.allclose(q(x)[:, 3], Fq.fake_quant(x[:, 3], s3, z3, 0, 15))
    # The bulk keeps a step 80x finer than one per-tensor scale would give it.
    assert float(s0) * 20 < float(Fq.minmax_params(x.min(), x.max(), 4, False)[0])
    err0 = float(((q(x) - x) ** 2).mean())
    groups = q.groups.clone()
    q.strategy = "grid"
    search_one(q, x, lambda: ((q(x) - x) ** 2).mean())
    assert torch.equal(q.groups, groups) and float(((q(x) - x) ** 2).mean()) <= err0 + 1e-9
    q2 = ChannelGroupQuantizer(4, axis=1)
    q2.load_state_dict(q.state_dict())
    assert torch.equal(q2(x), q(x)) and torch.equal(q2.groups, q.groups)


def test_quantizer_state_survives_save_and_load():
    q = UniformQuantizer(8, axis=0).set_params(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 2.0, 3.0]))
    q2 = UniformQuantizer(8, axis=0)
    q2.load_state_dict(q.state_dict())
    x = torch.randn(3, 4)
    assert torch.equal(q(x), q2(x)) and bool(q2.calibrated)
    e = ElementGroupQuantizer(6).set_groups(torch.tensor([0.3, 4.0]), torch.tensor([0.01, 0.1]), torch.tensor([31., 31.]))
    e2 = ElementGroupQuantizer(6)
    e2.load_state_dict(e.state_dict())
    assert torch.equal(e(x), e2(x))


def test_a_strategy_the_type_cannot_run_is_refused_by_name():
    from ptq4ris_core.quant.quantizers import ChannelGroupQuantizer, ElementGroupQuantizer
    with pytest.raises(ValueError, match="choose one of rule"):
        ElementGroupQuantizer(4, strategy="grid")
    with pytest.raises(ValueError, match="quantile"):
        ChannelGroupQuantizer(4, strategy="quantile")
    assert UniformQuantizer(8).strategy == "minmax" and ElementGroupQuantizer(8).strategy == "rule"


def test_agq_search_finds_the_best_of_the_three_bases_on_the_attention_output():
    """AGQ (PTQ4SAM): τ ∈ {1, 2, 4} and the scale searched on Â·V against A·V; its error equals the best
    of three log quantizers each searched with one fixed base."""
    from ptq4ris_core.calib.search import init_from_stats, search_one
    from ptq4ris_core.quant.logq import AGQ_TAUS
    g = torch.Generator().manual_seed(0)
    A = torch.softmax(torch.randn(8, 64, 64, generator=g) * 3, dim=-1)
    V = torch.randn(8, 64, 16, generator=g)

    def searched(q):
        init_from_stats(q, A)
        err = lambda: ((q(A) @ V - A @ V) ** 2).mean()  # noqa: E731
        search_one(q, A, err)
        return float(err())

    errors = {t: searched(LogQuantizer(4, tau=t, strategy="grid")) for t in AGQ_TAUS}
    agq = LogQuantizer(4, tau=1.0, taus=AGQ_TAUS, strategy="grid")
    assert searched(agq) == pytest.approx(min(errors.values()))
    assert float(agq.tau) == min(errors, key=errors.get)
    assert len(set(round(e, 12) for e in errors.values())) == 3  # the bases really differ here


def test_ptq4ris_agq_option_puts_agq_on_post_softmax():
    from types import SimpleNamespace

    from ptq4ris_core.methods import get_method
    from ptq4ris_core.quant.logq import AGQ_TAUS
    info = SimpleNamespace(domain="vision", kind="matmul", role="post_softmax", name="v.attn.av")
    bits = SimpleNamespace(w_bits=4, a_bits=4)
    q = get_method("ptq4ris", agq=True).quantizers_for(info, bits)["a_quantizer"]
    assert isinstance(q, LogQuantizer) and q.taus == AGQ_TAUS and q.strategy == "grid"
    assert not isinstance(get_method("ptq4ris").quantizers_for(info, bits)["a_quantizer"], LogQuantizer)
