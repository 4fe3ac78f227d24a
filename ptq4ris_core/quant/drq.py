"""PTQ4RIS's dual-region quantization (DRQ) for the vision encoder's post-Softmax and post-GELU values."""
from __future__ import annotations

import torch

from . import functional as Fq
from .base import ALPHAS, Handler, Quantizer, handles, pick_best
from .uniform import grid, part, uniform_over


class DualRegionSoftmaxQuantizer(Quantizer):
    """DRQ for post-Softmax values in [0, 1]; the split s = 2^-k is searched."""

    kind = "drq_softmax"

    def __init__(self, bits: int, strategy: str | None = None):
        super().__init__(bits, strategy)
        self.register_buffer("split", torch.tensor(2.0 ** -(bits - 1)))

    def quantize(self, x):
        return Fq.dual_region_softmax(x, self.split, self.bits)

    def describe(self):
        return {**super().describe(), "split": float(self.split)}


@handles(DualRegionSoftmaxQuantizer)
class DualRegionSoftmaxHandler(Handler):
    """The attention core runs float in the engine (DESIGN.md), so there are no integer parts."""

    strategies = ("minmax", "grid")
    searched = ("grid",)

    def init(self, q, x):
        q.split.fill_(2.0 ** -(q.bits - 1))
        q.mark_calibrated()

    def search(self, q, x, score, score_per_channel=None):
        if q.strategy == "grid":  # split s = 2^-k, so Δ_high/Δ_low = 2^k: a shift on hardware
            pick_best([2.0 ** -k for k in range(20)], q.split.fill_, score)


class DualRegionGeluQuantizer(Quantizer):
    """DRQ for post-GELU values: a fixed negative region and a searched positive step."""

    kind = "drq_gelu"

    def __init__(self, bits: int, strategy: str | None = None):
        super().__init__(bits, strategy)
        self.register_buffer("delta_pos", torch.tensor(0.1))

    def quantize(self, x):
        return Fq.dual_region_gelu(x, self.delta_pos, self.bits)

    def describe(self):
        return {**super().describe(), "delta_pos": float(self.delta_pos)}


@handles(DualRegionGeluQuantizer)
class DualRegionGeluHandler(Handler):
    step_sizes = ("delta_pos",)
    strategies = ("minmax", "grid")
    searched = ("grid",)

    def init(self, q, x):
        q.delta_pos.fill_(max(float(x.max()), 1e-6) / (2 ** (q.bits - 1) - 1))
        q.mark_calibrated()

    def search(self, q, x, score, score_per_channel=None):
        if q.strategy == "grid":
            top = max(float(x.max()), 1e-6)
            pick_best([float(a) * top / (2 ** (q.bits - 1) - 1) for a in ALPHAS], q.delta_pos.fill_, score)

    def integer_parts(self, q, symmetric=False, exact=False):
        half = 2 ** (q.bits - 1)
        if exact:  # x̂ = Q_neg(min(x, 0)) + Q_pos(max(x, 0))
            d_neg, d_pos = -Fq.GELU_MIN / (half - 1), float(q.delta_pos)
            neg = grid(q.bits, d_neg, 0 if symmetric else half - 1, symmetric)
            pos = grid(q.bits, d_pos, 0, symmetric)
            return [part(neg, lo=-(half - 1) * d_neg, hi=0.0), part(pos, lo=0.0, hi=(half - 1) * d_pos)], \
                "exact: DRQ-GELU as two integer GEMMs (negative and positive region)"
        hi = (half - 1) * float(q.delta_pos)
        return [part(uniform_over(Fq.GELU_MIN, hi, q.bits, symmetric))], "uniform stand-in for DRQ-GELU over its range"
