"""What feeds each quantized layer, found by tracing one forward pass (never by module names).

Roles: ``post_softmax`` (a matmul operand produced by a Softmax), ``post_gelu`` (a layer input
produced by a GELU), ``post_ln`` (produced by a LayerNorm: per-channel outliers live here),
``qk`` (the other attention matmul) and ``generic``. Tensor identity is exact for these
producers because each feeds its consumer directly in the models' code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..nn import QuantConv2d, QuantLinear, QuantMatMul, QuantModule

PRODUCERS = {nn.Softmax: "post_softmax", nn.GELU: "post_gelu", nn.LayerNorm: "post_ln"}


@dataclass
class LayerInfo:
    name: str
    module: QuantModule
    kind: str  # linear | conv | matmul
    role: str  # role of the (first) input
    order: int  # execution order in the traced forward
    domain: str = "other"


def wrapped_layers(model: nn.Module) -> dict[str, QuantModule]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantModule)}


@torch.no_grad()
def trace_roles(model: nn.Module, run) -> dict[str, LayerInfo]:
    """Run ``run()`` (one forward of ``model``) and classify every wrapped layer's input."""
    produced: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # hold produced tensors so their ids stay unique during the pass
    infos: dict[str, LayerInfo] = {}
    hooks = []

    def on_produce(kind):
        def hook(_m, _inp, out):
            produced[id(out)] = kind
            keep.append(out)
        return hook

    def on_consume(name, mod):
        def hook(_m, args):
            if name in infos:
                return
            role = produced.get(id(args[0]), "generic")
            if isinstance(mod, QuantMatMul) and role != "post_softmax":
                role = "qk"
            kind = "matmul" if isinstance(mod, QuantMatMul) else "conv" if isinstance(mod, QuantConv2d) else "linear"
            infos[name] = LayerInfo(name, mod, kind, role, len(infos))
        return hook

    for m in model.modules():
        for t, kind in PRODUCERS.items():
            if type(m) is t:
                hooks.append(m.register_forward_hook(on_produce(kind)))
    for name, mod in wrapped_layers(model).items():
        hooks.append(mod.register_forward_pre_hook(on_consume(name, mod)))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    missing = set(wrapped_layers(model)) - set(infos)
    if missing:
        raise RuntimeError(f"{len(missing)} wrapped layers never ran in the traced forward, e.g. {sorted(missing)[:3]}")
    return infos


def is_linear_like(m) -> bool:
    return isinstance(m, (QuantLinear, QuantConv2d))
