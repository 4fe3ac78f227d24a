"""Quantizers as small modules: parameters are buffers (so a calibrated model saves and loads),
the math is in ``functional.py``, and the statistics come from ``observers.py``.

A quantizer does nothing until it is calibrated and enabled. Each real quantization bumps
``n_quantized``, so a test can prove that a method quantizes every tensor it claims to.
"""
from __future__ import annotations

import torch
from torch import nn

from . import functional as Fq


class Quantizer(nn.Module):
    kind = "base"

    def __init__(self, bits: int):
        super().__init__()
        Fq.qrange(bits, True)  # validates bits
        self.bits = bits
        self.enabled = True
        self.register_buffer("calibrated", torch.tensor(False))
        self.n_quantized = 0

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.calibrated)

    def forward(self, x):
        if not self.active:
            return x
        self.n_quantized += 1
        return self.quantize(x)

    def quantize(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def mark_calibrated(self):
        self.calibrated.fill_(True)
        return self

    def describe(self) -> dict:
        return {"kind": self.kind, "bits": self.bits}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Parameter shapes are set at calibration (per channel, per group): take the saved ones.
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buf is not None and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class UniformQuantizer(Quantizer):
    """Uniform affine, per tensor (``axis=None``) or per channel along ``axis``; symmetric or not."""

    kind = "uniform"

    def __init__(self, bits: int, symmetric: bool = False, axis: int | None = None):
        super().__init__(bits)
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


class DualRegionSoftmaxQuantizer(Quantizer):
    """DRQ for post-Softmax values in [0, 1]; the split s = 2^-k is searched."""

    kind = "drq_softmax"

    def __init__(self, bits: int):
        super().__init__(bits)
        self.register_buffer("split", torch.tensor(2.0 ** -(bits - 1)))

    def quantize(self, x):
        return Fq.dual_region_softmax(x, self.split, self.bits)

    def describe(self):
        return {**super().describe(), "split": float(self.split)}


class DualRegionGeluQuantizer(Quantizer):
    """DRQ for post-GELU values: a fixed negative region and a searched positive step."""

    kind = "drq_gelu"

    def __init__(self, bits: int):
        super().__init__(bits)
        self.register_buffer("delta_pos", torch.tensor(0.1))

    def quantize(self, x):
        return Fq.dual_region_gelu(x, self.delta_pos, self.bits)

    def describe(self):
        return {**super().describe(), "delta_pos": float(self.delta_pos)}


class LogQuantizer(Quantizer):
    """Log quantizer with base 2^(-1/τ): τ=1 log2, τ=2 log√2 (RepQ-ViT), τ∈{1,2,4} AGQ (PTQ4SAM)."""

    kind = "log"

    def __init__(self, bits: int, tau: float = 2.0):
        super().__init__(bits)
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("tau", torch.tensor(float(tau)))

    def quantize(self, x):
        return Fq.log_quant(x, self.scale, self.bits, float(self.tau))

    def describe(self):
        return {**super().describe(), "scale": float(self.scale), "tau": float(self.tau)}


class ElementGroupQuantizer(Quantizer):
    """RORQ as in the released code: magnitude bands, each with its own asymmetric scale."""

    kind = "rorq_element"

    def __init__(self, bits: int):
        super().__init__(bits)
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


class ChannelGroupQuantizer(UniformQuantizer):
    """RORQ's channel groups without the fold: each group of input channels keeps its own scale.

    For inputs with no LayerNorm to fold into (a concatenation of sources with different ranges,
    a product of two features): deployed, the GEMM splits along the input dimension by group
    and sums the partial products (METHODS.md). Parameters are per channel, shared within a group.
    """

    kind = "rorq_channel_split"

    def __init__(self, bits: int, axis: int = -1):
        super().__init__(bits, symmetric=False, axis=axis)
        self.register_buffer("groups", torch.zeros(1, dtype=torch.long))

    def set_groups(self, groups, scale, zero_point):
        self.groups = groups.detach().clone().long()
        return self.set_params(scale, zero_point)

    def describe(self):
        d = super().describe()
        d.update(granularity="channel groups", groups=int(self.groups.max()) + 1 if self.groups.numel() else 1)
        return d


QUANTIZERS = {q.kind: q for q in (UniformQuantizer, DualRegionSoftmaxQuantizer, DualRegionGeluQuantizer,
                                  LogQuantizer, ElementGroupQuantizer, ChannelGroupQuantizer)}
