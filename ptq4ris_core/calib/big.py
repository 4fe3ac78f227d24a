"""PTQ4SAM's bimodal integration (BIG): a post-Key activation with two clear modes is made unimodal by a
sign per channel, folded into both projections so the float network computes exactly the same.

For an attention with query and key projections, q_c·k_c summed over channels is unchanged when both
channel c's are multiplied by γ_c ∈ {+1, -1}. With γ_c = sign(mean of k_c), channels whose values sit in
the negative mode move to the positive one, and a per-tensor quantizer of K then covers one mode instead
of two (METHODS.md §3). Detection: a Gaussian kernel density estimate (SciPy) of the pooled key values
with exactly two clear peaks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import find_peaks
from scipy.stats import gaussian_kde
from torch import nn

MAX_SAMPLES = 4000  # key values the density is estimated from
PEAK_PROMINENCE = 0.1  # a peak must stand this share of the highest density above its surroundings


@dataclass
class KeyProjection:
    """Where one attention's queries and keys come from: rows of a Linear's output channels."""
    attention: nn.Module  # the core that receives (q, k, v, ...) split into heads
    query: nn.Module  # a Linear, or its quantizable wrapper (both hold .weight and .bias)
    query_rows: slice
    key: nn.Module
    key_rows: slice


def _linear(m) -> bool:
    return m is not None and hasattr(m, "out_features") and getattr(m, "weight", None) is not None and m.weight.dim() == 2


def key_projections(model: nn.Module) -> dict[str, KeyProjection]:
    """Every attention whose query and key are Linear outputs: Swin's fused qkv, or separate query/key
    Linears (the fusion's pixel-word attention, BERT). Named by the module that owns them."""
    found = {}
    for name, mod in model.named_modules():
        attn = getattr(mod, "attn", None)
        if attn is None:
            continue
        qkv = getattr(mod, "qkv", None)
        if _linear(qkv) and qkv.out_features % 3 == 0:
            d = qkv.out_features // 3
            found[name] = KeyProjection(attn, qkv, slice(0, d), qkv, slice(d, 2 * d))
        elif _linear(getattr(mod, "query", None)) and _linear(getattr(mod, "key", None)):
            found[name] = KeyProjection(attn, mod.query, slice(None), mod.key, slice(None))
    return found


@torch.no_grad()
def capture_keys(model: nn.Module, projections: dict[str, KeyProjection], run_batches) -> dict[str, torch.Tensor]:
    """Post-Key activations per attention as (values, channels), from ``run_batches()`` (which runs the
    model on the calibration data). The attention core sees k as (B, heads, M, d): channel = head·d + j."""
    seen: dict[str, list] = {n: [] for n in projections}
    hooks = []
    for name, p in projections.items():
        def hook(_mod, args, name=name):
            k = args[1]
            seen[name].append(k.transpose(1, 2).reshape(-1, k.shape[1] * k.shape[3]).float())
        hooks.append(p.attention.register_forward_pre_hook(hook))
    try:
        run_batches()
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items() if v}


def density_peaks(values: torch.Tensor, seed: int = 0) -> int:
    """How many clear peaks the kernel density of ``values`` (a sample of them) has; 0 when constant."""
    x = values.flatten().double().numpy()
    if x.size > MAX_SAMPLES:
        x = np.random.default_rng(seed).choice(x, MAX_SAMPLES, replace=False)
    if x.size < 10 or np.ptp(x) == 0:
        return 0  # constant or too few: nothing to integrate
    try:
        kde = gaussian_kde(x)
    except np.linalg.LinAlgError:
        return 0
    grid = np.linspace(x.min(), x.max(), 512)
    density = kde(grid)
    peaks, _ = find_peaks(np.concatenate([[0.0], density, [0.0]]), prominence=PEAK_PROMINENCE * density.max())
    return len(peaks)


def is_bimodal(values: torch.Tensor, seed: int = 0) -> bool:
    """Exactly two clear peaks in the kernel density of ``values``."""
    return density_peaks(values, seed) == 2


@torch.no_grad()
def fold_signs(p: KeyProjection, gamma: torch.Tensor) -> None:
    """Multiply the query's and the key's output channel c by gamma[c] (±1): q·kᵀ is unchanged."""
    for lin, rows in ((p.query, p.query_rows), (p.key, p.key_rows)):
        lin.weight[rows] *= gamma[:, None].to(lin.weight.dtype)
        if lin.bias is not None:
            lin.bias[rows] *= gamma.to(lin.bias.dtype)


def integrate_bimodal(model: nn.Module, run_batches) -> dict[str, dict]:
    """Detect bimodal post-Key activations on calibration data and fold γ = sign(channel mean) where
    found. Returns, per attention: bimodal or not, and how many channels flipped. An attention-free
    model gives an empty report."""
    projections = key_projections(model)
    keys = capture_keys(model, projections, run_batches)
    report = {}
    for name, k in keys.items():
        bimodal = is_bimodal(k)
        flipped = 0
        if bimodal:
            gamma = torch.where(k.mean(0) < 0, -1.0, 1.0)
            flipped = int((gamma < 0).sum())
            fold_signs(projections[name], gamma)
        report[name] = {"bimodal": bimodal, "peaks": density_peaks(k), "channels": k.shape[1], "flipped": flipped}
    return report
