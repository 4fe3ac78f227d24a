"""Setting a layer's quantizers from calibration data: min-max, quantile, rules, or a grid search.

``calibrate_layer`` is the one entry point. Each quantizer carries ``strategy`` (set by the method):
``minmax`` (no search), ``grid`` (α grid scored by the method's metric on the layer's output),
``quantile`` (clip at the quantile with the least L2 error on the tensor itself), ``rule``
(RORQ's groups). Weights and inputs are searched alternately for a few rounds, as PTQ4ViT does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nn import QuantConv2d, QuantLinear, QuantMatMul
from ..quant import functional as Fq
from ..quant.observers import channel_groups, channel_minmax, magnitude_groups, quantile, tensor_minmax
from ..quant.quantizers import (ChannelGroupQuantizer, DualRegionGeluQuantizer, DualRegionSoftmaxQuantizer,
                                ElementGroupQuantizer, LogQuantizer, UniformQuantizer)
from .metrics import get_metric

ALPHAS = torch.linspace(0.05, 1.2, 48)  # fractions of the observed range tried by the grid search
QUANTILES = (0.999, 0.9999, 0.99999, 1.0)
MAX_ROWS = 4096  # rows of calibration data scored per candidate (speed; the choice is stable)


def _quantizers(mod):
    return [q for q in mod.quantizers().values()]


def layer_forward(mod, inputs, quantize: bool):
    """The layer's output with its own quantizers on or off (nothing else changes)."""
    saved = [(q, q.enabled) for q in _quantizers(mod)]
    for q, _ in saved:
        q.enabled = quantize
    try:
        with torch.no_grad():
            return mod(*inputs)
    finally:
        for q, e in saved:
            q.enabled = e


def _subsample(inputs, out, grad, max_rows, seed=0):
    """Keep at most ``max_rows`` leading-dim samples so every candidate sees the same data."""
    n = inputs[0].shape[0]
    if n <= max_rows:
        return inputs, out, grad
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows]
    pick = lambda t: None if t is None else t[idx]  # noqa: E731
    return [pick(i) for i in inputs], pick(out), pick(grad)


# --- initial parameters from plain statistics -------------------------------------------------

def init_from_stats(q, x: torch.Tensor):
    """Min-max (or rule-based) parameters for ``q`` from the tensor ``x`` it will see."""
    if isinstance(q, ChannelGroupQuantizer):
        q.set_groups(*_group_params(x, q.bits, q.axis))
    elif isinstance(q, UniformQuantizer):
        if q.axis is None:
            lo, hi = tensor_minmax(x)
        else:
            lo, hi = channel_minmax(x, q.axis)
        if getattr(q, "strategy", "") == "quantile":
            lo, hi = quantile(x, 1 - QUANTILES[0]), quantile(x, QUANTILES[0])
        q.set_params(*Fq.minmax_params(lo, hi, q.bits, q.symmetric))
    elif isinstance(q, DualRegionSoftmaxQuantizer):
        q.split.fill_(2.0 ** -(q.bits - 1))
        q.mark_calibrated()
    elif isinstance(q, DualRegionGeluQuantizer):
        q.delta_pos.fill_(max(float(x.max()), 1e-6) / (2 ** (q.bits - 1) - 1))
        q.mark_calibrated()
    elif isinstance(q, LogQuantizer):
        q.scale.fill_(max(float(x.max()), 1e-8))
        q.mark_calibrated()
    elif isinstance(q, ElementGroupQuantizer):
        th, lo, hi = magnitude_groups(x)
        scale, zp = Fq.minmax_params(lo, hi, q.bits, symmetric=False)
        q.set_groups(th, scale, zp)
    else:  # pragma: no cover
        raise TypeError(f"no initialiser for {type(q).__name__}")


def channel_group_params(x: torch.Tensor, bits: int, axis: int = -1, groups=None, alpha: float = 1.0):
    """RORQ's reorder variant: channels sorted by range, grouped, one asymmetric scale per group
    (each group's range scaled by ``alpha``; ``groups`` given to keep them fixed during a search).

    Returns per-channel (scale, zero_point) that are shared within each group, and the groups.
    """
    lo, hi = channel_minmax(x, axis)
    if groups is None:
        groups = channel_groups(lo, hi)
    scale = torch.empty_like(lo)
    zp = torch.empty_like(lo)
    for g in groups.unique():
        sel = groups == g
        s, z = Fq.minmax_params(lo[sel].min() * alpha, hi[sel].max() * alpha, bits, symmetric=False)
        scale[sel], zp[sel] = s, z
    return scale, zp, groups


def _group_params(x, bits, axis, groups=None, alpha=1.0):
    scale, zp, groups = channel_group_params(x, bits, axis, groups, alpha)
    return groups, scale, zp


# --- searches -----------------------------------------------------------------------------------

def _pick_best(candidates, apply, score):
    """Apply each candidate, score it, and leave the quantizer on the best one (lowest score)."""
    best, best_c = None, None
    for c in candidates:
        apply(c)
        v = float(score())
        if best is None or v < best:
            best, best_c = v, c
    apply(best_c)


def _grid_uniform(q: UniformQuantizer, x, score):
    """α grid on the min-max range: per tensor (or per head), shrink/extend [lo, hi] by α."""
    lo, hi = (tensor_minmax(x) if q.axis is None else channel_minmax(x, q.axis))
    params = [Fq.minmax_params(lo * a, hi * a, q.bits, q.symmetric) for a in ALPHAS]
    _pick_best(params, lambda p: q.set_params(*p), score)


def _grid_channel_groups(q: ChannelGroupQuantizer, x, score):
    """One α for every group's range (the groups stay as the rule set them)."""
    groups = q.groups
    params = [_group_params(x, q.bits, q.axis, groups, float(a)) for a in ALPHAS]
    _pick_best(params, lambda p: q.set_groups(*p), score)


def _grid_weight_per_channel(q: UniformQuantizer, w, score_per_channel):
    """Per output channel α: the layer's error splits by output channel, so each picks its own."""
    lo, hi = channel_minmax(w, 0)
    errs, params = [], []
    for a in ALPHAS:
        s, z = Fq.minmax_params(lo * a, hi * a, q.bits, q.symmetric)
        q.set_params(s, z)
        errs.append(score_per_channel())
        params.append((s, z))
    pick = torch.stack(errs).argmin(0)  # (alphas, out_channels) → best α per channel
    cols = torch.arange(len(pick))
    q.set_params(torch.stack([p[0] for p in params])[pick, cols], torch.stack([p[1] for p in params])[pick, cols])


def _grid_drq_softmax(q: DualRegionSoftmaxQuantizer, score):
    # split s = 2^-k, so Δ_high/Δ_low = 2^k: a shift on hardware
    _pick_best([2.0 ** -k for k in range(20)], q.split.fill_, score)


def _grid_drq_gelu(q: DualRegionGeluQuantizer, x, score):
    top = max(float(x.max()), 1e-6)
    _pick_best([float(a) * top / (2 ** (q.bits - 1) - 1) for a in ALPHAS], q.delta_pos.fill_, score)


def _grid_log(q: LogQuantizer, x, score, taus=None):
    top = max(float(x.max()), 1e-8)

    def apply(c):
        q.tau.fill_(c[0])
        q.scale.fill_(c[1])
    _pick_best([(tau, top * f) for tau in (taus or [float(q.tau)]) for f in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)],
               apply, score)


def _quantile_clip(q: UniformQuantizer, x):
    """Clip at the quantile pair with the least L2 error on the tensor itself (BERT matmul operands)."""
    params = [Fq.minmax_params(*((quantile(x, 1 - p), quantile(x, p)) if p < 1 else tensor_minmax(x)), q.bits, q.symmetric)
              for p in QUANTILES]
    _pick_best(params, lambda p: q.set_params(*p), lambda: ((q.quantize(x) - x) ** 2).mean())


def search_one(q, x, score, strategy: str, score_per_channel=None):
    if strategy in ("minmax", "rule", "fixed"):
        return  # init_from_stats already set it
    if strategy == "quantile":
        return _quantile_clip(q, x)
    if strategy != "grid":
        raise ValueError(f"unknown strategy {strategy!r}")
    if isinstance(q, ChannelGroupQuantizer):
        return _grid_channel_groups(q, x, score)
    if isinstance(q, UniformQuantizer):
        if q.axis == 0 and score_per_channel is not None:
            return _grid_weight_per_channel(q, x, score_per_channel)
        return _grid_uniform(q, x, score)
    if isinstance(q, DualRegionSoftmaxQuantizer):
        return _grid_drq_softmax(q, score)
    if isinstance(q, DualRegionGeluQuantizer):
        return _grid_drq_gelu(q, x, score)
    if isinstance(q, LogQuantizer):
        return _grid_log(q, x, score, getattr(q, "search_taus", None))
    return None  # element groups: rule only


def calibrate_layer(mod, inputs: list, grad: torch.Tensor | None, metric: str = "mse", rounds: int = 3):
    """Set every quantizer of ``mod`` from its calibration ``inputs`` (and ∂L/∂O for ``hessian``)."""
    fp_out = layer_forward(mod, inputs, quantize=False)
    if isinstance(mod, QuantLinear) or isinstance(mod, QuantConv2d):
        xin = mod.transform_input(inputs[0]) if isinstance(mod, QuantLinear) else inputs[0]
        operands = {"input_quantizer": xin, "weight_quantizer": mod.weight.detach()}
    else:
        operands = {"a_quantizer": inputs[0], "b_quantizer": inputs[1]}
    slots = mod.quantizers()
    for slot, q in slots.items():
        if getattr(q, "strategy", "") != "fixed":  # fixed: set by the method's reparameterization
            init_from_stats(q, operands[slot])
    if grad is None and metric == "hessian":
        metric = "mse"
    metric_fn = get_metric(metric)
    sub_in, sub_out, sub_g = _subsample(inputs, fp_out, grad, MAX_ROWS)
    score = lambda: metric_fn(sub_out, layer_forward(mod, sub_in, True), sub_g)  # noqa: E731

    def score_per_channel():
        out = layer_forward(mod, sub_in, True)
        ch = 1 if isinstance(mod, QuantConv2d) else -1
        dims = [d for d in range(out.dim()) if d != (ch % out.dim())]
        return metric_fn(sub_out, out, sub_g, dim=dims)

    searchable = [s for s, q in slots.items() if getattr(q, "strategy", "minmax") == "grid"]
    for r in range(rounds if len(searchable) > 1 else 1):
        for slot, q in slots.items():
            strategy = getattr(q, "strategy", "minmax")
            if r > 0 and strategy != "grid":
                continue
            search_one(q, operands[slot], score, strategy,
                       score_per_channel if slot == "weight_quantizer" else None)
    return fp_out


@torch.no_grad()
def correct_bias(mod, inputs: list, fp_out: torch.Tensor):
    """Bias correction (as in data-free quantization): the quantized layer's mean output error per
    output channel, measured on its calibration inputs, goes into its bias. Linear and Conv only."""
    from ..nn.wrappers import add_to_bias
    if not isinstance(mod, (QuantLinear, QuantConv2d)) or mod.weight_quantizer is None:
        return
    err = fp_out - layer_forward(mod, inputs, True)
    ch = 1 if isinstance(mod, QuantConv2d) else err.dim() - 1
    add_to_bias(mod, err.mean(dim=[d for d in range(err.dim()) if d != ch]))
