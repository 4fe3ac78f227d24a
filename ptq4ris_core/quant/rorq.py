"""PTQ4RIS's outlier-retained quantization (RORQ): inputs split into groups that keep their own scale,
by magnitude band (as the released code does) or by channel (the split GEMM)."""
from __future__ import annotations

import torch

from . import functional as Fq
from .base import ALPHAS, Handler, Quantizer, handles, pick_best
from .observers import channel_groups, channel_minmax, magnitude_groups
from .uniform import UniformQuantizer, grid, part, symmetric_grid, uniform_over


class ElementGroupQuantizer(Quantizer):
    """RORQ as in the released code: magnitude bands, each with its own asymmetric scale."""

    kind = "rorq_element"

    def __init__(self, bits: int, strategy: str | None = None):
        super().__init__(bits, strategy)
        self.register_buffer("thresholds", torch.ones(1))
        self.register_buffer("scales", torch.ones(1))
        self.register_buffer("zero_points", torch.zeros(1))

    def set_groups(self, thresholds, scales, zero_points):
        self.thresholds, self.scales, self.zero_points = (t.detach().clone().float() for t in
                                                          (thresholds, scales, zero_points))
        return self.mark_calibrated()

    def quantize(self, x):
        return Fq.element_group_quant(x, self.thresholds, self.scales, self.zero_points, self.bits)

    def describe(self):
        return {**super().describe(), "groups": int(self.thresholds.numel()),
                "thresholds": [round(float(t), 4) for t in self.thresholds]}


def _range_stand_in(q, scales, zero_points, symmetric):
    """One uniform grid over the range every group's codes cover."""
    qmin, qmax = Fq.qrange(q.bits, False)
    lo = float(((qmin - zero_points) * scales).min())
    hi = float(((qmax - zero_points) * scales).max())
    return [part(uniform_over(lo, hi, q.bits, symmetric))], f"uniform stand-in for {q.kind} groups over their range"


@handles(ElementGroupQuantizer)
class ElementGroupHandler(Handler):
    step_sizes = ("scales",)
    strategies = ("rule",)

    def init(self, q, x):
        th, lo, hi = magnitude_groups(x)
        scale, zp = Fq.minmax_params(lo, hi, q.bits, symmetric=False)
        q.set_groups(th, scale, zp)

    def integer_parts(self, q, symmetric=False, exact=False):
        if not exact:
            return _range_stand_in(q, q.scales, q.zero_points, symmetric)
        th = q.thresholds.float()
        bounds = [None] + list(th[:-1])  # the last band is open above: bucketize's clamp
        parts = [part(grid(q.bits, s, z) if not symmetric else symmetric_grid(q.bits, s, z),
                      ("band", bounds[g], th[g] if g < len(th) - 1 else None))
                 for g, (s, z) in enumerate(zip(q.scales.tolist(), q.zero_points.tolist()))]
        return parts, f"{'exact' if not symmetric else 'symmetric per band'}: {q.kind} groups as " \
                      f"{len(parts)} integer GEMMs on magnitude bands"


class ChannelGroupQuantizer(UniformQuantizer):
    """RORQ's channel groups without the fold: each group of input channels keeps its own scale.

    For inputs with no LayerNorm to fold into (a concatenation of sources with different ranges,
    a product of two features): deployed, the GEMM splits along the input dimension by group
    and sums the partial products (METHODS.md). Parameters are per channel, shared within a group.
    """

    kind = "rorq_channel_split"

    def __init__(self, bits: int, axis: int = -1, strategy: str | None = None):
        super().__init__(bits, symmetric=False, axis=axis, strategy=strategy)
        self.register_buffer("groups", torch.zeros(1, dtype=torch.long))

    def set_groups(self, groups, scale, zero_point):
        self.groups = groups.detach().clone().long()
        return self.set_params(scale, zero_point)

    def describe(self):
        d = super().describe()
        d.update(granularity="channel groups", groups=int(self.groups.max()) + 1 if self.groups.numel() else 1)
        return d


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


@handles(ChannelGroupQuantizer)
class ChannelGroupHandler(Handler):
    step_sizes = ("scale",)
    step_groups = "groups"  # the split GEMM takes one grid per group: learned steps stay shared
    strategies = ("rule", "grid")
    searched = ("grid",)

    def init(self, q, x):
        scale, zp, groups = channel_group_params(x, q.bits, q.axis)
        q.set_groups(groups, scale, zp)

    def search(self, q, x, score, score_per_channel=None):
        if q.strategy != "grid":
            return
        groups = q.groups  # one α for every group's range; the groups stay as the rule set them

        def params(a):
            scale, zp, _ = channel_group_params(x, q.bits, q.axis, groups, float(a))
            return groups, scale, zp
        pick_best([params(a) for a in ALPHAS], lambda p: q.set_groups(*p), score)

    def integer_parts(self, q, symmetric=False, exact=False):
        if not exact:
            return _range_stand_in(q, q.scale, q.zero_point, symmetric)
        parts, groups = [], q.groups.unique().tolist()
        for g in groups:
            idx = torch.nonzero(q.groups == g).flatten()
            s, z = float(q.scale[idx[0]]), float(q.zero_point[idx[0]])
            parts.append(part(grid(q.bits, s, z) if not symmetric else symmetric_grid(q.bits, s, z),
                              ("channels", idx) if len(groups) > 1 else None))
        return parts, f"{'exact' if not symmetric else 'symmetric per group'}: {q.kind} groups as " \
                      f"{len(parts)} integer GEMMs on channel slices (split GEMM)"
