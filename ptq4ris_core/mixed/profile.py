"""What each quantized layer costs: weights (for the size budget) and multiply-adds per sample (for the
bit-operations budget), measured on the calibration data with forward hooks, in execution order."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..nn import QuantConv2d, QuantLinear, QuantMatMul


@dataclass
class LayerCost:
    name: str
    kind: str  # linear | conv | matmul
    domain: str
    params: int  # weights whose bit-width is chosen (0 for an attention matmul)
    macs: float  # multiply-adds per sample
    w_bits: bool  # its weights are quantized (a bit-width to choose)
    a_bits: bool  # its inputs are quantized

    def to_dict(self):
        return asdict(self)


def _macs(mod, args, out) -> float:
    if isinstance(mod, QuantLinear):
        return out.numel() * mod.in_features
    if isinstance(mod, QuantConv2d):
        w = mod.weight
        return out.numel() * w.shape[1] * w.shape[2] * w.shape[3]
    if isinstance(mod, QuantMatMul):
        return out.numel() * args[0].shape[-1]
    return 0.0


@torch.no_grad()
def layer_costs(infos: dict, batches, run) -> list[LayerCost]:
    """One LayerCost per layer of ``infos`` (a prepared model's LayerInfos, execution order) that has a
    bit-width to choose; layers the model keeps float (its ``float`` overrides) are left out."""
    total = {n: 0.0 for n in infos}
    samples = 0

    def hook(name):
        def count(mod, args, out):
            total[name] += _macs(mod, args, out)
        return count

    handles = [i.module.register_forward_hook(hook(n)) for n, i in infos.items()]
    try:
        for b in batches:
            run(b)
            samples += b[0].shape[0]
    finally:
        for h in handles:
            h.remove()
    out = []
    for n, info in infos.items():
        s = info.setting
        has_w = s.w_bits is not None and info.kind != "matmul"
        has_a = s.a_bits is not None
        if not (has_w or has_a):
            continue
        params = info.module.weight.numel() if has_w else 0
        out.append(LayerCost(n, info.kind, info.domain, int(params), total[n] / max(samples, 1), has_w, has_a))
    return out


def neighbours(costs: list[LayerCost]) -> list[tuple[int, int]]:
    """Adjacent pairs for the synergy term: consecutive layers (execution order) of the same part."""
    return [(i, i + 1) for i in range(len(costs) - 1) if costs[i].domain == costs[i + 1].domain]
