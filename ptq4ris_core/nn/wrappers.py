"""QuantLinear, QuantConv2d, QuantMatMul: the float layer with quantizer slots around it.

A slot holds a Quantizer or None (float). QuantLinear also carries an optional input channel
affine ``x' = (x + shift) / div`` with the weights compensated (RepQ-ViT's reparameterization
and RORQ's channel groups), so that one per-tensor scale serves every channel; a transform
moves it into a preceding LayerNorm when that LayerNorm feeds nothing else.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import MatMul


class QuantModule(nn.Module):
    """Base: knows its quantizer slots; ``quantizers()`` lists the filled ones by slot name."""

    slots: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        for s in self.slots:
            setattr(self, s, None)

    def quantizers(self) -> dict:
        return {s: getattr(self, s) for s in self.slots if getattr(self, s) is not None}


def _bias_from_state(mod, state_dict, prefix):
    """A bias that calibration created (a reparameterization, a bias correction) loads into a layer without one."""
    if prefix + "bias" in state_dict and mod.bias is None:
        mod.bias = nn.Parameter(torch.empty_like(state_dict[prefix + "bias"]), requires_grad=False)


def add_to_bias(mod, delta: torch.Tensor):
    """bias += delta (per output channel), creating the bias if the layer has none."""
    if mod.bias is None:
        mod.bias = nn.Parameter(delta.detach().clone(), requires_grad=False)
    else:
        mod.bias.data = mod.bias.data + delta


class QuantLinear(QuantModule):
    slots = ("input_quantizer", "weight_quantizer")

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.register_buffer("in_shift", None)
        self.register_buffer("in_div", None)

    def set_input_affine(self, shift: torch.Tensor, div: torch.Tensor):
        """Quantize ``(x + shift) / div`` instead of ``x``; fold the inverse into the weights (exact)."""
        if self.in_shift is not None:
            raise RuntimeError("input affine already set; fold or reset it first")
        w = self.weight.data
        bias = self.bias.data if self.bias is not None else torch.zeros(self.out_features)
        new_bias = bias - w @ shift
        self.weight.data = w * div[None, :]
        if self.bias is None:
            self.bias = nn.Parameter(new_bias, requires_grad=False)
        else:
            self.bias.data = new_bias
        self.in_shift, self.in_div = shift.clone(), div.clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("in_shift", "in_div"):  # present only after a reparameterization
            if prefix + name in state_dict and getattr(self, name) is None:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        _bias_from_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def transform_input(self, x):
        return x if self.in_shift is None else (x + self.in_shift) / self.in_div

    def forward(self, x):
        x = self.transform_input(x)
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w = self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)
        return F.linear(x, w, self.bias)


class QuantConv2d(QuantModule):
    slots = ("input_quantizer", "weight_quantizer")

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _bias_from_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x):
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w = self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class QuantMatMul(QuantModule):
    slots = ("a_quantizer", "b_quantizer")

    def forward(self, a, b):
        if self.a_quantizer is not None:
            a = self.a_quantizer(a)
        if self.b_quantizer is not None:
            b = self.b_quantizer(b)
        return a @ b


# Float type → wrapper; the registry is how wrapping finds layers (by type, never by name).
QUANT_WRAPPERS = {nn.Linear: QuantLinear, nn.Conv2d: QuantConv2d, MatMul: lambda m: QuantMatMul()}
