"""Log quantization with base 2^(-1/τ): τ = 1 log2, τ = 2 log√2 (RepQ-ViT's post-Softmax), and
PTQ4SAM's adaptive-granularity quantization (AGQ), which searches τ ∈ {1, 2, 4} with the scale."""
from __future__ import annotations

import torch

from . import functional as Fq
from .base import Handler, Quantizer, handles, pick_best

SCALE_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)  # of the observed maximum, tried by the search
AGQ_TAUS = (1.0, 2.0, 4.0)


class LogQuantizer(Quantizer):
    """``taus``: the bases the search may pick from (AGQ: ``AGQ_TAUS``); by default only ``tau``."""

    kind = "log"

    def __init__(self, bits: int, tau: float = 2.0, taus: tuple[float, ...] | None = None, strategy: str | None = None):
        super().__init__(bits, strategy)
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("tau", torch.tensor(float(tau)))
        self.taus = tuple(float(t) for t in (taus or (tau,)))
        if any(t <= 0 for t in self.taus):
            raise ValueError(f"log quantizer bases need τ > 0, got {self.taus}")

    def quantize(self, x):
        return Fq.log_quant(x, self.scale, self.bits, float(self.tau))

    def describe(self):
        return {**super().describe(), "scale": float(self.scale), "tau": float(self.tau)}


@handles(LogQuantizer)
class LogHandler(Handler):
    """The attention core runs float in the engine, so there are no integer parts."""

    step_sizes = ("scale",)
    strategies = ("minmax", "grid")
    searched = ("grid",)

    def init(self, q, x):
        q.scale.fill_(max(float(x.max()), 1e-8))
        q.mark_calibrated()

    def search(self, q, x, score, score_per_channel=None):
        if q.strategy != "grid":
            return
        top = max(float(x.max()), 1e-8)

        def apply(c):
            q.tau.fill_(c[0])
            q.scale.fill_(c[1])
        pick_best([(tau, top * f) for tau in q.taus for f in SCALE_FRACTIONS], apply, score)
