"""Observers: statistics of calibration tensors, kept apart from the quantizers that use them.

Each returns plain tensors (ranges, thresholds, groups); turning them into scales is the
quantizer's or the method's business.
"""
from __future__ import annotations

import torch

MAX_QUANTILE_ELEMS = 4_000_000  # torch.quantile's input limit is 2^24; sample beyond this


def flat_sample(x: torch.Tensor, n: int = MAX_QUANTILE_ELEMS, seed: int = 0) -> torch.Tensor:
    x = x.reshape(-1).float()
    if x.numel() <= n:
        return x
    g = torch.Generator().manual_seed(seed)
    return x[torch.randint(0, x.numel(), (n,), generator=g)]


def tensor_minmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.min().float(), x.max().float()


def channel_minmax(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of each channel along ``axis``, over everything else."""
    xt = x.transpose(axis, -1).reshape(-1, x.shape[axis]).float()
    return xt.min(0).values, xt.max(0).values


def quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    return torch.quantile(flat_sample(x), q)


def _sigma_bands(values: torch.Tensor, max_groups: int, k: float = 3.0) -> list[torch.Tensor]:
    """RORQ's rule: t = mean + k·std of what is left; the values ≤ t form a group; repeat."""
    thresholds, rest = [], values
    while rest.numel() and len(thresholds) < max_groups - 1:
        t = rest.mean() + k * rest.std(unbiased=False) if rest.numel() > 1 else rest.max()
        if t >= rest.max():
            break
        thresholds.append(t)
        rest = rest[rest > t]
    thresholds.append(values.max() if values.numel() else torch.tensor(1.0))
    return thresholds


def magnitude_groups(x: torch.Tensor, max_groups: int = 10):
    """RORQ element groups: thresholds on |x| (non-zero values) and each band's signed min/max.

    Returns (thresholds (G,), lo (G,), hi (G,)); group g holds t[g-1] < |x| ≤ t[g].
    """
    v = flat_sample(x)
    mag = v.abs()
    nz = mag[mag > 0]
    if nz.numel() == 0:
        z = torch.zeros(1)
        return torch.ones(1), z, z
    th = torch.stack(_sigma_bands(nz, max_groups))
    g = torch.bucketize(mag, th).clamp(max=len(th) - 1)
    lo = torch.stack([v[g == i].min() if (g == i).any() else torch.tensor(0.0) for i in range(len(th))])
    hi = torch.stack([v[g == i].max() if (g == i).any() else torch.tensor(0.0) for i in range(len(th))])
    return th, lo, hi


def channel_groups(lo: torch.Tensor, hi: torch.Tensor, max_groups: int = 4) -> torch.Tensor:
    """RORQ channel groups ("reorder"): sort channels by range and split by the same rule.

    Returns the group id of each channel (0 = the bulk, higher = wider ranges).
    """
    ranges = (hi - lo).float()
    th = torch.stack(_sigma_bands(ranges, max_groups))
    return torch.bucketize(ranges, th).clamp(max=len(th) - 1)
