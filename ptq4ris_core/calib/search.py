"""Setting a layer's quantizers from calibration data: min-max, quantile, rules, or a grid search.

``calibrate_layer`` is the one entry point. Each quantizer carries its ``strategy`` (set by the method;
``quant/base.py`` lists them) and its type's handler does the initialising and searching, scored by the
method's metric on the layer's output. Weights and inputs are searched alternately for a few rounds,
as PTQ4ViT does.
"""
from __future__ import annotations

import torch

from ..nn import QuantConv2d, QuantLinear
from .metrics import get_metric

MAX_ROWS = 4096  # rows of calibration data scored per candidate (speed; the choice is stable)


def _quantizers(mod):
    return [q for q in mod.quantizers().values()]


def layer_forward(mod, inputs, quantize: bool):
    """The layer's output with its own quantizers on or off (nothing else changes)."""
    saved = [(q, q.enabled) for q in _quantizers(mod)]
    for q, _ in saved:
        q.enabled = quantize
    try:
        with torch.no_grad():
            return mod(*inputs)
    finally:
        for q, e in saved:
            q.enabled = e


def _subsample(inputs, out, grad, max_rows, seed=0):
    """Keep at most ``max_rows`` leading-dim samples so every candidate sees the same data."""
    n = inputs[0].shape[0]
    if n <= max_rows:
        return inputs, out, grad
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows]
    pick = lambda t: None if t is None else t[idx]  # noqa: E731
    return [pick(i) for i in inputs], pick(out), pick(grad)


# --- one quantizer: its type's handler does the work (quant/base.py) ------------------------------

def init_from_stats(q, x: torch.Tensor):
    """Min-max (or rule-based) parameters for ``q`` from the tensor ``x`` it will see."""
    q.handler.init(q, x)


def search_one(q, x, score, score_per_channel=None):
    """Refine ``q`` for its strategy (nothing for strategies that do not search)."""
    q.handler.search(q, x, score, score_per_channel)


def calibrate_layer(mod, inputs: list, grad: torch.Tensor | None, metric: str = "mse", rounds: int = 3):
    """Set every quantizer of ``mod`` from its calibration ``inputs`` (and ∂L/∂O for ``hessian``)."""
    fp_out = layer_forward(mod, inputs, quantize=False)
    if isinstance(mod, QuantLinear) or isinstance(mod, QuantConv2d):
        xin = mod.transform_input(inputs[0]) if isinstance(mod, QuantLinear) else inputs[0]
        operands = {"input_quantizer": xin, "weight_quantizer": mod.weight.detach()}
    else:
        operands = {"a_quantizer": inputs[0], "b_quantizer": inputs[1]}
    slots = mod.quantizers()
    for slot, q in slots.items():
        if q.strategy != "fixed":  # fixed: set by the method's reparameterization
            init_from_stats(q, operands[slot])
    if grad is None and metric == "hessian":
        metric = "mse"
    metric_fn = get_metric(metric)
    sub_in, sub_out, sub_g = _subsample(inputs, fp_out, grad, MAX_ROWS)
    score = lambda: metric_fn(sub_out, layer_forward(mod, sub_in, True), sub_g)  # noqa: E731

    def score_per_channel():
        out = layer_forward(mod, sub_in, True)
        ch = 1 if isinstance(mod, QuantConv2d) else -1
        dims = [d for d in range(out.dim()) if d != (ch % out.dim())]
        return metric_fn(sub_out, out, sub_g, dim=dims)

    # the output-scored searches depend on each other, so they alternate; a quantile clip does not
    searchable = [s for s, q in slots.items() if q.strategy == "grid"]
    for r in range(rounds if len(searchable) > 1 else 1):
        for slot, q in slots.items():
            if r > 0 and q.strategy != "grid":
                continue
            search_one(q, operands[slot], score, score_per_channel if slot == "weight_quantizer" else None)
    return fp_out


@torch.no_grad()
def correct_bias(mod, inputs: list, fp_out: torch.Tensor):
    """Bias correction (as in data-free quantization): the quantized layer's mean output error per
    output channel, measured on its calibration inputs, goes into its bias. Linear and Conv only."""
    from ..nn.wrappers import add_to_bias
    if not isinstance(mod, (QuantLinear, QuantConv2d)) or mod.weight_quantizer is None:
        return
    err = fp_out - layer_forward(mod, inputs, True)
    ch = 1 if isinstance(mod, QuantConv2d) else err.dim() - 1
    add_to_bias(mod, err.mean(dim=[d for d in range(err.dim()) if d != ch]))
