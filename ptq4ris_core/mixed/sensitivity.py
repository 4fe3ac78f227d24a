"""Quantization sensitivity (Mix-QViT): each layer at each candidate bit-width, its weights and its inputs
separately, with every other layer at 8 bits; the cost is how far the mask moves.

For layer l and a setting s (weights at b with inputs at 8, or inputs at b with weights at 8) the layer is
calibrated afresh from its float weights by the method itself (its quantizers, reparameterization and
search, as in a full calibration), on its inputs in the W8A8 model, put into the W8A8 model in place of its
8-bit self, and

    e_l(s) = max(0, KL(FP ‖ W8A8 with l at s) − KL(FP ‖ W8A8))

with KL the per-pixel mask divergence (``importance.mask_kl``) averaged over the samples. The allocation
takes weights and inputs as additive, e_l(w, a) = e_l(w, 8) + e_l(8, a), after ``resolved`` has given the
rises too small to measure a floor.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from ..calib.capture import capture_inputs
from ..calib.search import calibrate_layer
from ..config import LayerSetting
from .importance import mask_kl


def requantized(info, pristine, method, setting: LayerSetting, inputs, grad):
    """A fresh copy of the float layer ``pristine``, quantized by ``method`` at ``setting`` on ``inputs``."""
    mod = copy.deepcopy(pristine)
    for slot in mod.slots:
        setattr(mod, slot, None)
    li = replace(info, module=mod)
    li.setting = setting
    for slot, q in method.quantizers_for(li, setting).items():
        setattr(mod, slot, q)
    method.prepare(li, inputs, setting)
    fp_out = calibrate_layer(mod, inputs, grad, method.metric_for(li), method.rounds)
    method.finish(li, inputs, fp_out)
    return mod


class _Swap:
    """Puts a module into ``model`` at ``name`` for the duration of a ``with``."""

    def __init__(self, model, name, mod):
        parent, _, self.child = name.rpartition(".")
        self.parent = model.get_submodule(parent) if parent else model
        self.mod = mod

    def __enter__(self):
        self.old = getattr(self.parent, self.child)
        setattr(self.parent, self.child, self.mod)

    def __exit__(self, *exc):
        setattr(self.parent, self.child, self.old)


@torch.no_grad()
def sensitivities(q8, infos8: dict, pristine: dict, method, costs, batches, fp_logits, w_cands, a_cands,
                  grads: dict, progress=None, done: dict | None = None, save=None) -> dict:
    """{layer: {"w": {bits: e}, "a": {bits: e}}} for every layer of ``costs`` (see the module docstring).

    ``q8``/``infos8``: the method's W8A8 calibration; ``pristine``: each layer's float wrapped module;
    ``fp_logits``: the float model's logits per batch; ``grads``: ∂L/∂O at the float model (Hessian metric);
    ``done``: results of an interrupted run (skipped); ``save(results)`` is called after each layer."""
    full = lambda b: q8(*b)  # noqa: E731
    words = [(img, q8.encode_text(ids, m), m) for img, ids, m in batches]  # fixed unless a text layer moves
    seg = lambda b: q8.segment_features(*b)  # noqa: E731

    def kl(run, data):
        return float(torch.cat([mask_kl(r, run(b)) for r, b in zip(fp_logits, data)]).mean())

    base = kl(full, batches)
    tasks = []
    for c in costs:
        s8 = infos8[c.name].setting
        if c.w_bits:
            tasks += [(c, "w", b, replace(s8, w_bits=b)) for b in w_cands if b != 8]
        if c.a_bits:
            tasks += [(c, "a", b, replace(s8, a_bits=b)) for b in a_cands if b != 8]
    out = {c.name: {"w": {8: 0.0} if c.w_bits and 8 in w_cands else {},
                    "a": {8: 0.0} if c.a_bits and 8 in a_cands else {}} for c in costs}
    for name, parts in (done or {}).items():
        if name in out:
            for part, values in parts.items():
                out[name][part].update(values)
    tasks = [t for t in tasks if t[2] not in out[t[0].name][t[1]]]
    finished = [n for n in out if n in (done or {})]
    inputs_of, current = None, None
    for i, (c, part, bits, setting) in enumerate((progress or (lambda x, **k: x))(tasks, desc="sensitivity",
                                                                                    unit="setting")):
        text = c.domain == "text"
        run, data = (full, batches) if text else (seg, words)
        if current != c.name:
            inputs_of, current = capture_inputs(infos8[c.name].module, data, run), c.name
        mod = requantized(infos8[c.name], pristine[c.name], method, setting, inputs_of, grads.get(c.name))
        with _Swap(q8, c.name, mod):
            out[c.name][part][bits] = max(0.0, kl(run, data) - base)
        if i + 1 == len(tasks) or tasks[i + 1][0].name != c.name:
            finished.append(c.name)
            if save is not None:
                save({n: out[n] for n in finished})
    return out


def resolved(measured: list[dict]) -> list[dict]:
    """Each layer's {bits: e} of one side (weights or inputs) as the allocation uses it.

    A rise measured as 0 (the KL moved less than this measurement resolves, or by chance down) does not mean
    the bits are free: taken at face value, the program puts every such layer at its lowest candidate for
    nothing, and dozens of them together cost what none does alone (on model v3, 69 of 119 layers measured 0
    with 3-bit weights). So a layer's cost at b bits is at least the study's resolution r (its smallest positive
    rise on this side) scaled by the power of uniform quantization noise, r·4^(b_top − b) with b_top the highest
    candidate below 8, and never less than at more bits (the costs are made non-increasing in the bits)."""
    positive = [e for layer in measured for b, e in layer.items() if b != 8 and e > 0]
    below8 = sorted({b for layer in measured for b in layer if b != 8})
    if not below8:
        return [dict(layer) for layer in measured]
    r = min(positive) if positive else 1e-9  # nothing measurable anywhere: any r > 0 orders the bits
    top = below8[-1]
    out = []
    for layer in measured:
        costs, floor_above = {}, 0.0
        for b in sorted(layer, reverse=True):
            e = layer[b] if b == 8 else max(layer[b], r * 4.0 ** (top - b), floor_above)
            costs[b] = floor_above = e
        out.append(costs)
    return out
