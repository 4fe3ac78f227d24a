"""Exact float transforms that run before quantization: BatchNorm folding and wrapping by type."""
from __future__ import annotations

import fnmatch

import torch
from torch import nn

from ..config import QuantConfig
from ..nn import QUANT_WRAPPERS


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d in an nn.Sequential into that conv."""
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                std = torch.sqrt(bn.running_var + bn.eps)
                k = bn.weight / std
                conv.weight.mul_(k.view(-1, 1, 1, 1))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * k)
                seq._modules[b] = nn.Identity()
                folded += 1
    return folded


@torch.no_grad()
def fold_input_affine_into_layernorm(ln: nn.LayerNorm, linears: list) -> None:
    """Move QuantLinears' shared input affine x' = (x+s)/r into the LayerNorm that feeds only them.

    γ' = γ/r, β' = (β+s)/r. Exact only when the LayerNorm's output goes nowhere else.
    """
    shift, div = linears[0].in_shift, linears[0].in_div
    for lin in linears[1:]:
        if not (torch.equal(lin.in_shift, shift) and torch.equal(lin.in_div, div)):
            raise ValueError("the LayerNorm's consumers have different input affines; they cannot share one fold")
    ln.weight.div_(div)
    ln.bias.add_(shift).div_(div)
    for lin in linears:
        lin.in_shift, lin.in_div = None, None


def layer_domain(name: str, domains: dict) -> str:
    for dom, patterns in domains.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return dom
    return "other"


def wrap_model(model: nn.Module, config: QuantConfig) -> list[str]:
    """Swap each Linear / Conv2d / MatMul for its quantized wrapper (by type); returns the names."""
    wrapped = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            wrapper = QUANT_WRAPPERS.get(type(child))
            if wrapper is None:
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            s = config.for_module(name)
            if s.w_bits is None and s.a_bits is None:
                continue  # stays a plain float layer
            setattr(parent, child_name, wrapper(child))
            wrapped.append(name)
    return wrapped
