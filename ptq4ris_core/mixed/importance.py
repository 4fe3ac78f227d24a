"""How much each layer matters to the mask, two ways.

- **Mix-QSAM's KL importance**: layer i's output is zeroed and the KL divergence between the model's
  per-pixel mask distribution with and without it, averaged over pixels, is I_i per sample; normalized over
  layers per sample (to sum to 1) and averaged over samples, Ω_i.
- **Mix-QSAM's cross-layer synergy** for adjacent layers l, m: per sample S = 1 / (|I_l − I_m| + ε) with
  the normalized importances, averaged over samples, Ŝ = log(1 + S̄); ε = 1 % of the mean importance.
- **LRP relevance (LRP-QViT, Mix-QViT)** from the referred object's mask logits
  f = Σ_{pixels predicted foreground} (z_fg − z_bg), propagated with the conservative rules of Ali et al.
  (ICML 2022), realised as gradient × input on a forward pass in which the attention probabilities
  (after Softmax), LayerNorm's 1/σ and GELU's gate Φ(x) are held constant: attention then passes relevance
  along its value path only (the AH rule), LayerNorm and GELU pass it through unchanged in proportion to
  their inputs (the LN rule and the identity rule for element-wise nonlinearities), and Linear/Conv/MatMul
  follow LRP-0. A layer's relevance is Σ |y ⊙ ∂f/∂y| over its output y, the relevance it passes on (its
  inputs can be shared, as BERT's query, key and value share theirs, and their gradient sums over every
  reader), its share of the total over layers. A query or key projection thus scores 0: under the AH rule
  no relevance flows through the attention probabilities.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..calib.capture import outputs_with_grads


def mask_kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p) of the per-pixel class distributions (softmax over dim 1), mean over pixels: one
    value per sample."""
    log_p_ref = F.log_softmax(ref_logits.double(), 1)
    log_p = F.log_softmax(logits.double(), 1)
    kl = (log_p_ref.exp() * (log_p_ref - log_p)).sum(1)
    return kl.flatten(1).mean(1)


@torch.no_grad()
def kl_importance(layers: dict[str, nn.Module], batches, run, progress=None) -> torch.Tensor:
    """[layers x samples] KL of the mask with each layer's output zeroed (Mix-QSAM's I_i per sample)."""
    ref = [run(b) for b in batches]
    rows = []
    for name, mod in (progress or (lambda x, **k: x))(list(layers.items()), desc="KL importance", unit="layer"):
        h = mod.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out))
        try:
            rows.append(torch.cat([mask_kl(r, run(b)) for r, b in zip(ref, batches)]))
        finally:
            h.remove()
    return torch.stack(rows).float()


def normalized(per_sample: torch.Tensor) -> torch.Tensor:
    """Per sample, the importances divided by their sum over layers (Ω's normalization over layers)."""
    return per_sample / per_sample.sum(0, keepdim=True).clamp_min(1e-30)


def synergy(per_sample: torch.Tensor, pairs: list[tuple[int, int]]) -> list[float]:
    """Ŝ = log(1 + mean_samples 1/(|I_l − I_m| + ε)) for each adjacent pair, I normalized per sample."""
    imp = normalized(per_sample)
    eps = max(0.01 * float(imp.mean()), 1e-12)  # all-zero importances (nothing matters) stay finite
    return [math.log1p(float((1.0 / ((imp[l] - imp[m]).abs() + eps)).mean())) for l, m in pairs]


def _gelu_gate(_mod, args, out):
    x = args[0]
    return x * (0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))).detach()


def _layernorm_frozen_sigma(mod, args, out):
    x = args[0]
    mu = x.mean(-1, keepdim=True)
    sigma = (x.var(-1, unbiased=False, keepdim=True) + mod.eps).sqrt().detach()
    y = (x - mu) / sigma
    if mod.weight is not None:
        y = y * mod.weight
    return y if mod.bias is None else y + mod.bias


def _softmax_constant(_mod, _args, out):
    return out.detach()


LRP_RULES = {nn.Softmax: _softmax_constant, nn.GELU: _gelu_gate, nn.LayerNorm: _layernorm_frozen_sigma}


def lrp_relevance(model: nn.Module, layers: dict[str, nn.Module], batches, logits_of) -> torch.Tensor:
    """[layers] each layer's share of Σ |y ⊙ ∂f/∂y| over its output (see the module's docstring).

    ``logits_of(batch)`` runs ``model`` with gradients reaching its inputs (image, and the token
    embeddings), returning [B, 2, H, W] mask logits."""
    def mask_evidence(b):
        z = logits_of(b)
        fg = z[:, 1] - z[:, 0]
        chosen = (fg > 0).to(fg.dtype)
        chosen[chosen.flatten(1).sum(1) == 0] = 1.0  # nothing predicted: the whole image's evidence
        return (fg * chosen).sum()

    rules = [m.register_forward_hook(LRP_RULES[type(m)]) for m in model.modules() if type(m) in LRP_RULES]
    index = {n: i for i, n in enumerate(layers)}
    total = torch.zeros(len(layers), dtype=torch.float64)
    try:
        for got in outputs_with_grads(layers, batches, mask_evidence):
            for name, (y, g) in got.items():
                total[index[name]] += float((y * g).abs().double().sum())
    finally:
        for h in rules:
            h.remove()
    return (total / total.sum().clamp_min(1e-30)).float()
