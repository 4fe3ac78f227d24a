"""Fake-quantization functions: quantize and dequantize in float, exactly as the formulas in METHODS.md.

Pure functions of a tensor and its parameters; the modules in ``quantizers.py`` hold the
parameters and the observers in ``observers.py`` compute them.
"""
from __future__ import annotations

import math

import torch

GELU_MIN = -0.1700  # GELU's minimum is about -0.16997 (at x = -0.7518)


class _RoundSTE(torch.autograd.Function):
    """Rounding whose gradient passes straight through (block reconstruction fits weights behind
    quantized activations); the forward is ``torch.round`` exactly."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return _RoundSTE.apply(x) if x.requires_grad else torch.round(x)


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range: signed and symmetric (zero point 0), or unsigned with a zero point."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be between 2 and 8, got {bits}")
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def fake_quant(x, scale, zero_point, qmin: int, qmax: int):
    """Uniform affine: q = clamp(round(x/Δ) + z, qmin, qmax), x̂ = (q - z)·Δ."""
    q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def minmax_params(lo, hi, bits: int, symmetric: bool):
    """Scale and zero point that map [lo, hi] (always widened to hold 0) onto the integer range."""
    qmin, qmax = qrange(bits, symmetric)
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    if symmetric:
        scale = torch.maximum(-lo, hi) / qmax
        zp = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zp = torch.round(qmin - lo / torch.clamp(scale, min=1e-12))
    scale = torch.clamp(scale, min=1e-8)  # an all-zero tensor still gets a valid (tiny) scale
    return scale, torch.clamp(zp, qmin, qmax)


def dual_region_softmax(x, split, bits: int):
    """DRQ post-Softmax: [0, s) in 2^(b-1) steps of s/2^(b-1); [s, 1] in 2^(b-1) steps of 1/2^(b-1)."""
    half = 2 ** (bits - 1)
    d_low, d_high = split / half, 1.0 / half
    low = torch.clamp(round_ste(x / d_low), 0, half - 1) * d_low
    high = torch.clamp(round_ste(x / d_high), 0, half - 1) * d_high
    return torch.where(x < split, low, high)


def dual_region_gelu(x, delta_pos, bits: int):
    """DRQ post-GELU: [GELU_MIN, 0] in 2^(b-1) fixed levels; [0, ∞) in 2^(b-1) levels of step Δ+."""
    half = 2 ** (bits - 1)
    d_neg = -GELU_MIN / (half - 1)
    neg = torch.clamp(round_ste(x / d_neg), -(half - 1), 0) * d_neg
    pos = torch.clamp(round_ste(x / delta_pos), 0, half - 1) * delta_pos
    return torch.where(x < 0, neg, pos)


def log_quant(x, scale, bits: int, tau: float):
    """Log quantizer with base 2^(-1/τ): q = clamp(round(-τ·log2(x/s)), 0, 2^b-1), x̂ = s·2^(-q/τ).

    τ = 1 is log2, τ = 2 is RepQ-ViT's log√2, τ ∈ {1, 2, 4} is PTQ4SAM's AGQ. Values below the
    smallest level (q ≥ 2^b), and zeros, become 0 (as RepQ-ViT's log√2 quantizer does).
    """
    levels = 2 ** bits
    q = round_ste(-tau * torch.log2(torch.clamp(x, min=1e-20) / scale))
    under = (q >= levels) | (x <= 0)
    q = torch.clamp(q, 0, levels - 1)
    return torch.where(under, torch.zeros_like(x), scale * torch.exp2(-q / tau))


def element_group_quant(x, thresholds, scales, zero_points, bits: int):
    """RORQ as released: each element uses the (asymmetric) scale of its magnitude band.

    ``thresholds`` (G,) ascending: group g holds thresholds[g-1] < |x| ≤ thresholds[g]; values
    above the last threshold fall in the last group.
    """
    qmin, qmax = qrange(bits, symmetric=False)
    g = torch.bucketize(x.abs(), thresholds).clamp(max=len(thresholds) - 1)
    s, z = scales[g], zero_points[g]
    return fake_quant(x, s, z, qmin, qmax)


def levels_of_dual_softmax(split: float, bits: int) -> torch.Tensor:
    half = 2 ** (bits - 1)
    return torch.cat([torch.arange(half) * split / half, torch.arange(half) / half]).unique()


def log2_int(v: float) -> int:
    return int(round(math.log2(v)))
