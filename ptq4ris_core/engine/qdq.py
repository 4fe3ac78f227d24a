"""Quantized layers as ONNX QuantizeLinear/DequantizeLinear, in the form integer kernels take.

A QuantLinear with a uniform per-tensor input quantizer and per-channel symmetric weights becomes

    x ─[Min(x, hi) when a_bits < 8]─ QuantizeLinear ─ DequantizeLinear ─┐
    int8 Wᵀ ─ DequantizeLinear(axis=1) ──────────────────────────────── MatMul ─ Add ─ y
    int32 bias ─ DequantizeLinear(scale = s_x·s_w) ──────────────────────────────┘

which ONNX Runtime's CPU provider fuses into QGemm (measured: DQ, DQ, DQ(int32 bias) → Gemm →
QGemm with a float output; a float bias leaves a float Gemm) and OpenVINO into int8 GEMMs.
The attention core (matmul operands) stays float, as DESIGN.md's measurements advise.
"""
from __future__ import annotations

import contextlib

import torch

from ..nn import QuantConv2d, QuantLinear, QuantMatMul
from ..quant.quantizers import UniformQuantizer


def deployable_input(q) -> bool:
    return isinstance(q, UniformQuantizer) and q.axis is None and not q.symmetric and q.active


def deployable_weight(q) -> bool:
    return isinstance(q, UniformQuantizer) and q.axis == 0 and q.symmetric and q.active


class _QDQLinear(torch.autograd.Function):
    """Forward: exactly what the integer graph computes. Symbolic: the QDQ pattern above."""

    @staticmethod
    def forward(ctx, x, s, z, hi, wt, ws, wz, b, bs, bz, clip: bool):
        if clip:
            x = torch.minimum(x, hi)
        xq = torch.clamp(torch.round(x / s) + z.float(), 0, 255)
        xd = (xq - z.float()) * s
        return xd @ (wt.float() * ws) + b.float() * bs

    @staticmethod
    def symbolic(g, x, s, z, hi, wt, ws, wz, b, bs, bz, clip: bool):
        if clip:  # only below 8 bits: the codes must stay in the narrower range the model was calibrated for
            x = g.op("Min", x, hi)
        dq = g.op("DequantizeLinear", g.op("QuantizeLinear", x, s, z), s, z)
        w = g.op("DequantizeLinear", wt, ws, wz, axis_i=1)
        bias = g.op("DequantizeLinear", b, bs, bz, axis_i=0)
        return g.op("Add", g.op("MatMul", dq, w), bias)


def prepare_linear(mod: QuantLinear) -> bool:
    """Precompute the integer tensors of one layer as buffers; False if it is not deployable."""
    iq, wq = mod.input_quantizer, mod.weight_quantizer
    if not (deployable_input(iq) and deployable_weight(wq)):
        return False
    lo, hi = wq.qmin_qmax
    ws = wq.scale.float()
    w_int = torch.clamp(torch.round(mod.weight / ws[:, None]), lo, hi).to(torch.int8)
    s = iq.scale.float().reshape(())
    z = iq.zero_point.reshape(()).to(torch.uint8)
    qmax = iq.qmin_qmax[1]
    bias = mod.bias if mod.bias is not None else torch.zeros(mod.out_features)
    bs = (s * ws).float()
    mod._deploy = {
        "s": s, "z": z, "hi": ((qmax - z.float()) * s).reshape(()), "clip": qmax < 255,
        "wt": w_int.t().contiguous(), "ws": ws, "wz": torch.zeros(mod.out_features, dtype=torch.int8),
        "b": torch.round(bias / bs).to(torch.int32), "bs": bs, "bz": torch.zeros(mod.out_features, dtype=torch.int32)}
    return True


def _deploy_forward_linear(mod: QuantLinear, x):
    d = mod._deploy
    x = mod.transform_input(x)
    return _QDQLinear.apply(x, d["s"], d["z"], d["hi"], d["wt"], d["ws"], d["wz"], d["b"], d["bs"], d["bz"], d["clip"])


@contextlib.contextmanager
def deploy_mode(model):
    """Inside: deployable QuantLinears run (and export) as integer QDQ layers; everything else,
    attention matmuls included, runs in float. Yields the names of the integer layers."""
    patched, integer = [], []
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLinear) and prepare_linear(mod):
            mod.forward = (lambda m: (lambda x: _deploy_forward_linear(m, x)))(mod)
            patched.append(mod)
            integer.append(name)
        elif isinstance(mod, (QuantMatMul, QuantConv2d, QuantLinear)):
            for q in mod.quantizers().values():
                q._saved_enabled, q.enabled = q.enabled, False
                patched.append(q)
    try:
        yield integer
    finally:
        for obj in patched:
            if isinstance(obj, QuantLinear):
                del obj.forward
                del obj._deploy
            else:
                obj.enabled = obj._saved_enabled
