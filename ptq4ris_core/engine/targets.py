"""A calibrated model's weights as an export target stores them, for the export and the simulation alike.

``portable``: every integer layer whose symmetric weights have 8 bits gets 7-bit codes (±63) over the same
clipping range (its scale times 127/63), so no u8 x s8 pair can saturate int16 on a CPU without VNNI
(``cpu.py``). Layers of 7 bits or fewer (W6, W4) already obey the bound and keep their codes. ``vnni``: the
codes as calibrated (full 8 bits: right only where int8 products accumulate in int32).

The simulation (``ptq4ris eval --quantized --target``) and the export run inside the same
``weights_for_target``, so the simulated figure is the one the engine must reproduce on every CPU.
"""
from __future__ import annotations

import contextlib

from ..nn import QuantConv2d, QuantLinear
from .cpu import PAIR_SAFE_WEIGHT_BITS, resolve_target


def _weight_quantizers(model):
    from .qdq import deployable_weight
    for name, mod in model.named_modules():
        if isinstance(mod, (QuantLinear, QuantConv2d)) and deployable_weight(mod.weight_quantizer):
            yield name, mod.weight_quantizer


@contextlib.contextmanager
def weights_for_target(model, target: str = "portable"):
    """Inside: the model's weight quantizers hold what ``target`` stores (``auto``: the target for this
    CPU). Yields the resolved target. The model is restored on exit."""
    target = resolve_target(target)
    changed = []
    if target == "portable":
        for _, wq in _weight_quantizers(model):
            if wq.bits > PAIR_SAFE_WEIGHT_BITS:
                old = wq.qmin_qmax[1]
                changed.append((wq, wq.bits, wq.scale))
                wq.bits = PAIR_SAFE_WEIGHT_BITS
                wq.scale = wq.scale * (old / wq.qmin_qmax[1])  # same clipping range, coarser codes
    try:
        yield target
    finally:
        for wq, bits, scale in changed:
            wq.bits, wq.scale = bits, scale

