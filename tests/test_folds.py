"""Reparameterizations are exact in float: RepQ-ViT / RORQ input affines, the LayerNorm fold, BN folding."""
import copy

import torch
from torch import nn

from ptq4ris_core.quant.rorq import channel_group_params
from ptq4ris_core.calib.transforms import fold_batchnorm, fold_input_affine_into_layernorm
from ptq4ris_core.methods.base import per_channel_params, reparameterize_channels
from ptq4ris_core.nn import QuantLinear
from ptq4ris_core.quant import functional as Fq
from ptq4ris_core.quant.quantizers import UniformQuantizer


def _outlier_input(n=256, c=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g) * 0.5 + torch.randn(c, generator=g)
    x[:, 3] *= 40  # outlier channels, as after LayerNorm in BERT
    x[:, 17] = x[:, 17] * 25 + 30
    return x.double()


def test_input_affine_leaves_the_float_layer_unchanged():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16).double()
    x = _outlier_input()
    q = QuantLinear(lin)
    q.set_input_affine(torch.randn(32).double(), torch.rand(32).double() + 0.5)
    assert torch.allclose(q(x), lin(x), atol=1e-10)


def test_repq_reparameterization_gives_the_per_channel_codes_exactly():
    x = _outlier_input().float()
    lin = QuantLinear(nn.Linear(32, 8))
    scale_c, zp_c = per_channel_params(x, 6)
    d, z = reparameterize_channels(lin, x, scale_c, zp_c, target="mean")
    x2 = lin.transform_input(x)
    qmin, qmax = Fq.qrange(6, False)
    codes_tensor = torch.clamp(torch.round(x2 / d) + z, qmin, qmax)
    codes_channel = torch.clamp(torch.round(x / scale_c) + zp_c, qmin, qmax)
    # Exact up to float rounding at ties: at most a handful of codes off by one.
    assert (codes_tensor != codes_channel).float().mean() < 1e-3
    assert (codes_tensor - codes_channel).abs().max() <= 1
    # And dequantized back through the folded weights: the layer equals per-channel quantization.
    lin.input_quantizer = UniformQuantizer(6).set_params(d, z)
    ref = nn.functional.linear(Fq.fake_quant(x, scale_c, zp_c, qmin, qmax), lin.weight / lin.in_div[None, :],
                               lin.bias + (lin.weight / lin.in_div[None, :]) @ lin.in_shift)
    assert torch.allclose(lin(x), ref, atol=1e-3)


def test_rorq_channel_groups_fold_with_the_bulk_untouched():
    x = _outlier_input().float()
    scale_c, zp_c, groups = channel_group_params(x, 8)
    assert groups[3] > 0 and groups[17] > 0 and (groups == 0).sum() == 30
    lin = QuantLinear(nn.Linear(32, 8))
    reparameterize_channels(lin, x, scale_c, zp_c, target="bulk")
    bulk = groups == 0
    assert torch.allclose(lin.in_div[bulk], torch.ones(int(bulk.sum())))  # group 0 keeps r = 1
    assert (lin.in_div[~bulk] > 1).all()


def test_affine_folds_into_the_layernorm_exactly():
    torch.manual_seed(1)
    ln = nn.LayerNorm(32).double()
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    lins = [nn.Linear(32, 12).double(), nn.Linear(32, 5).double()]
    x = torch.randn(64, 32).double() * 3
    ref = [l(ln(x)) for l in lins]
    shift, div = torch.randn(32).double(), torch.rand(32).double() + 0.5
    qs = [QuantLinear(l) for l in lins]
    for q in qs:
        q.set_input_affine(shift, div)
    fold_input_affine_into_layernorm(ln, qs)
    assert all(q.in_shift is None for q in qs)
    for q, r in zip(qs, ref):
        assert torch.allclose(q(ln(x)), r, atol=1e-9)


def test_batchnorm_fold_is_exact():
    torch.manual_seed(2)
    seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()).double()
    seq.train()
    for _ in range(3):
        seq(torch.randn(4, 3, 16, 16).double() * 5 + 2)  # non-trivial running statistics
    seq.eval()
    x = torch.randn(2, 3, 16, 16).double()
    ref = seq(x)
    folded = copy.deepcopy(seq)
    assert fold_batchnorm(folded) == 1
    assert isinstance(folded[1], nn.Identity)
    assert torch.allclose(folded(x), ref, atol=1e-10)


def test_clipping_shrinks_only_the_outlier_channels_and_bounds_the_folded_weight_columns():
    from ptq4ris_core.methods.base import FENCE_IQR
    x = _outlier_input().float()
    plain_s, plain_z = per_channel_params(x, 4)
    clip_s, clip_z = per_channel_params(x, 4, clip=True)
    changed = torch.nonzero(clip_s < plain_s * (1 - 1e-6)).ravel().tolist()
    assert changed == [3, 17]  # the two outlier channels, nothing else
    assert torch.equal(clip_s[[i for i in range(32) if i not in changed]],
                       plain_s[[i for i in range(32) if i not in changed]])
    from ptq4ris_core.methods.base import clip_channel_ranges
    from ptq4ris_core.quant.observers import channel_minmax
    lo, hi = channel_minmax(x, 1)
    log_r = (hi - lo).log()
    q1, q3 = torch.quantile(log_r, 0.25), torch.quantile(log_r, 0.75)
    lo2, hi2 = clip_channel_ranges(lo, hi)
    assert torch.allclose((hi2 - lo2)[changed], torch.exp(q3 + FENCE_IQR * (q3 - q1)).expand(2), rtol=1e-4)
    # the next layer's weight columns grow by r_c = Δ_c / Δ̃: clipped, the largest is far smaller
    ratios = {}
    for name, (s, z) in {"plain": (plain_s, plain_z), "clip": (clip_s, clip_z)}.items():
        lin = QuantLinear(nn.Linear(32, 8))
        reparameterize_channels(lin, x, s, z, target="mean")
        ratios[name] = float(lin.in_div.max() / lin.in_div.median())
    assert ratios["clip"] < 0.5 * ratios["plain"]
