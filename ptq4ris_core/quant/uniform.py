"""Uniform affine quantization, per tensor or per channel, and the uniform grids the engine runs.

Every integer GEMM in the engine takes its input on one uniform grid, so the other quantizer types
say how they deploy in these terms: ``part`` (a slice of the input on one grid) and ``uniform_over``
(a stand-in grid over a range).
"""
from __future__ import annotations

import torch

from . import functional as Fq
from .base import ALPHAS, QUANTILES, Handler, Quantizer, handles, pick_best
from .observers import channel_minmax, quantile, tensor_minmax


class UniformQuantizer(Quantizer):
    """Uniform affine, per tensor (``axis=None``) or per channel along ``axis``; symmetric or not."""

    kind = "uniform"

    def __init__(self, bits: int, symmetric: bool = False, axis: int | None = None, strategy: str | None = None):
        super().__init__(bits, strategy)
        self.symmetric, self.axis = symmetric, axis
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))

    @property
    def qmin_qmax(self):
        return Fq.qrange(self.bits, self.symmetric)

    def _shaped(self, p, x):
        if self.axis is None or p.dim() == 0:
            return p
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return p.view(shape)

    def set_params(self, scale, zero_point):
        self.scale = scale.detach().clone().float()
        self.zero_point = zero_point.detach().clone().float()
        return self.mark_calibrated()

    def quantize(self, x):
        return Fq.fake_quant(x, self._shaped(self.scale, x), self._shaped(self.zero_point, x), *self.qmin_qmax)

    def describe(self):
        d = super().describe()
        d.update(symmetric=self.symmetric, granularity="tensor" if self.axis is None else "channel")
        return d


# --- the grids the engine runs ------------------------------------------------------------------

def grid(bits: int, scale: float, zero_point: float, symmetric: bool = False) -> UniformQuantizer:
    return UniformQuantizer(bits, symmetric).set_params(torch.tensor(float(scale)), torch.tensor(float(zero_point)))


def uniform_over(lo: float, hi: float, bits: int, symmetric: bool = False) -> UniformQuantizer:
    """A per-tensor grid covering [lo, hi] (widened to include 0: padding and ReLU zeros stay exact).
    ``symmetric``: TensorRT's int8, zero point 0 and codes ±(2^(b-1) - 1)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = max(-lo, hi, 1e-8) / qmax
        return UniformQuantizer(bits, symmetric=True).set_params(torch.tensor(scale), torch.tensor(0.0))
    qmax = 2 ** bits - 1
    scale = max(hi - lo, 1e-8) / qmax
    zp = min(max(round(-lo / scale), 0), qmax)
    return UniformQuantizer(bits).set_params(torch.tensor(scale), torch.tensor(float(zp)))


def symmetric_grid(bits: int, scale: float, zero_point: float) -> UniformQuantizer:
    """Zero point 0 (TensorRT) over the range of an asymmetric grid."""
    qmax = 2 ** bits - 1
    return uniform_over((0 - zero_point) * scale, (qmax - zero_point) * scale, bits, True)


def part(q: UniformQuantizer, select=None, lo: float | None = None, hi: float | None = None) -> dict:
    """One part of a layer's input: ``select`` (None: the whole input; ("band", t_lo, t_hi): the elements
    with t_lo < |x| ≤ t_hi, the rest zero; ("channels", index): a slice of input channels), quantized
    by the uniform grid ``q`` and clipped to [lo, hi] when given."""
    return {"select": select, "q": q, "lo": lo, "hi": hi}


def is_per_tensor_activation(q) -> bool:
    """The grid an integer GEMM takes as it is: per tensor, asymmetric uint8-style."""
    return type(q) is UniformQuantizer and q.axis is None and not q.symmetric and q.active


@handles(UniformQuantizer)
class UniformHandler(Handler):
    step_sizes = ("scale",)
    strategies = ("minmax", "grid", "quantile", "fixed")
    searched = ("grid", "quantile")

    def init(self, q, x):
        lo, hi = tensor_minmax(x) if q.axis is None else channel_minmax(x, q.axis)
        if q.strategy == "quantile":
            lo, hi = quantile(x, 1 - QUANTILES[0]), quantile(x, QUANTILES[0])
        q.set_params(*Fq.minmax_params(lo, hi, q.bits, q.symmetric))

    def search(self, q, x, score, score_per_channel=None):
        if q.strategy == "quantile":
            return self._quantile_clip(q, x)
        if q.strategy != "grid":
            return
        if q.axis == 0 and score_per_channel is not None:
            return self._grid_per_output_channel(q, x, score_per_channel)
        lo, hi = tensor_minmax(x) if q.axis is None else channel_minmax(x, q.axis)
        # α grid on the min-max range: per tensor (or per head), shrink/extend [lo, hi] by α
        params = [Fq.minmax_params(lo * a, hi * a, q.bits, q.symmetric) for a in ALPHAS]
        pick_best(params, lambda p: q.set_params(*p), score)

    @staticmethod
    def _grid_per_output_channel(q, w, score_per_channel):
        """Weights: the layer's error splits by output channel, so each channel picks its own α."""
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

    @staticmethod
    def _quantile_clip(q, x):
        """Clip at the quantile pair with the least L2 error on the tensor itself (BERT matmul operands)."""
        params = [Fq.minmax_params(*((quantile(x, 1 - p), quantile(x, p)) if p < 1 else tensor_minmax(x)),
                                   q.bits, q.symmetric) for p in QUANTILES]
        pick_best(params, lambda p: q.set_params(*p), lambda: ((q.quantize(x) - x) ** 2).mean())

    def integer_parts(self, q, symmetric=False, exact=False):
        if not is_per_tensor_activation(q):
            return super().integer_parts(q, symmetric, exact)
        if symmetric:
            qmin, qmax = q.qmin_qmax
            s, z = q.scale.float().reshape(()), q.zero_point.float().reshape(())
            lo, hi = float((qmin - z) * s), float((qmax - z) * s)  # the range its codes cover
            return [part(uniform_over(lo, hi, q.bits, True))], \
                "symmetric stand-in over the same range"
        return [part(q)], "exact"
