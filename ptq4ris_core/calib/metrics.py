"""Scores for the scale search: lower is better. ``O`` float output, ``Oq`` quantized, ``g`` ∂L/∂O."""
from __future__ import annotations

import torch


def mse(O, Oq, g=None, p: float = 2.0, dim=None):
    err = (O - Oq).abs().pow(p)
    return err.mean() if dim is None else err.mean(dim)


def cosine(O, Oq, g=None, dim=None):
    """1 - cosine similarity per row (last axis), averaged."""
    a, b = O.reshape(-1, O.shape[-1]), Oq.reshape(-1, Oq.shape[-1])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8)
    if dim is None:
        return (1 - cos).mean()
    # Per output channel there is no cosine; fall back to squared error for per-channel picks.
    return mse(O, Oq, dim=dim)


def hessian(O, Oq, g, dim=None):
    """PTQ4ViT's output-Hessian-guided distance: mean(g² ⊙ (O - Ô)²)."""
    err = g.pow(2) * (O - Oq).pow(2)
    return err.mean() if dim is None else err.mean(dim)


METRICS = {"mse": mse, "cosine": cosine, "hessian": hessian}


def get_metric(name: str):
    if name.startswith("mse"):
        p = _mse_power(name)
        return lambda O, Oq, g=None, dim=None: mse(O, Oq, g, p, dim)
    if name not in METRICS:
        raise ValueError(f"unknown search metric {name!r}; choose mse, mse2.4, cosine or hessian")
    return METRICS[name]


def _mse_power(name: str) -> float:
    """The p of "mse<p>": "mse" is p = 2, "mse2.4" is p = 2.4 (PD-Quant/QDrop's choice)."""
    text = name[len("mse"):]
    if not text:
        return 2.0
    try:
        p = float(text)
    except ValueError:
        raise ValueError(f"unknown search metric {name!r}; an L_p error is written mse<p>, e.g. mse2.4") from None
    if not p > 0:
        raise ValueError(f"search metric {name!r}: the power p must be positive")
    return p
