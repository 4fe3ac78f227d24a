"""Capturing one layer's inputs on the calibration set, with the layers before it quantized.

The forward pass stops as soon as the layer has its input, so layer-by-layer calibration
costs a partial forward per layer, not a full one.
"""
from __future__ import annotations

import torch


class _Stop(Exception):
    pass


@torch.no_grad()
def capture_inputs(module: torch.nn.Module, batches, run_batch) -> list[torch.Tensor]:
    """Inputs of ``module`` for every batch (``run_batch(batch)`` runs the whole model).

    Returns one tensor per positional input, concatenated over batches along dim 0.
    """
    got: list[tuple] = []

    def hook(_m, args):
        got.append(tuple(a.detach() for a in args))
        raise _Stop

    h = module.register_forward_pre_hook(hook)
    try:
        for b in batches:
            try:
                run_batch(b)
            except _Stop:
                pass
    finally:
        h.remove()
    if not got:
        raise RuntimeError("the layer did not run on the calibration data")
    return [torch.cat([g[i] for g in got], 0) for i in range(len(got[0]))]


def outputs_with_grads(modules: dict, batches, loss_fn):
    """Per batch, {name: (O, ∂L/∂O)} for the output O of each module that the loss depends on.

    ``loss_fn(batch) -> scalar`` runs the model; gradients flow only to activations."""
    outs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_m, _a, out):
            if out.requires_grad:
                out.retain_grad()
                outs[name] = out
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in modules.items()]
    try:
        for b in batches:
            outs.clear()
            with torch.enable_grad():
                loss_fn(b).backward()
            yield {n: (o.detach(), o.grad.detach()) for n, o in outs.items() if o.grad is not None}
    finally:
        for h in hooks:
            h.remove()


def output_grads(model, modules: dict, batches, loss_fn) -> dict[str, torch.Tensor]:
    """∂L/∂O for the output O of each module, concatenated over batches into one tensor per module."""
    grads: dict[str, list] = {n: [] for n in modules}
    for got in outputs_with_grads(modules, batches, loss_fn):
        for n, (_o, g) in got.items():
            grads[n].append(g)
    return {n: torch.cat(g, 0) for n, g in grads.items() if g}
