"""Quantized layers as ONNX QuantizeLinear/DequantizeLinear, in the forms integer kernels take.

A QuantLinear with a uniform per-tensor input quantizer and per-channel symmetric weights becomes

    x ─[Min(x, hi) when a_bits < 8]─ QuantizeLinear ─ DequantizeLinear ─┐
    int Wᵀ ─ DequantizeLinear(axis=1) ──────────────────────────────── MatMul ─ Add ─ y
    int32 bias ─ DequantizeLinear(scale = s_x·s_w) ──────────────────────────────┘

which ONNX Runtime's CPU provider fuses into QGemm (a float bias leaves a float Gemm) and OpenVINO
into int8 GEMMs. A QuantConv2d becomes the same around a Conv, plus a QuantizeLinear/DequantizeLinear
pair on its output: ONNX Runtime has no integer conv with a float output, only QLinearConv, which
needs a quantized output. That output quantizer (8 bits) is calibrated at export on the model's own
calibration set. The attention core stays float, as DESIGN.md's measurements advise.

Quantizers that are not one uniform per-tensor grid run exactly as a sum of integer GEMMs
(``input_parts``), because W·x̂ = Σ_p W_p·x̂_p when x̂ is a sum of parts: DRQ-GELU as its negative and
positive regions (two clipped uniform grids), RORQ's element groups as one masked input per magnitude
band, RORQ's channel groups as one channel slice per group against the matching weight columns (the
split GEMM). That costs more integer GEMMs, so by default (``exact="auto"``) it is done below 8 bits
only; at 8 bits, and with ``exact="never"``, such a quantizer runs as a stated uniform stand-in
(``uniform_stand_in``: one per-tensor grid with the same bits over the same range), which measured as
good as the real thing at W8A8 (docs/RESULTS.md).
Weights of 4 bits or fewer are stored two to a byte and unpacked by a few integer ops on constants,
which both runtimes fold at load: a W4 file is half a W8 one, and the kernels still see int8 weights.
Embedding tables are stored as integers (int8 with a scale per row; int4 with a scale per 32 values
when the model's weights are 4-bit), gathered then scaled, so the text graph is not dominated by a
float vocabulary table. The deploy simulation computes exactly what the graph does.
"""
from __future__ import annotations

import contextlib
import functools
import operator

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import QuantConv2d, QuantLinear, QuantMatMul
from ..quant.uniform import UniformQuantizer, is_per_tensor_activation, uniform_over

OUTPUT_BITS = 8  # conv outputs (QLinearConv)


def deployable_input(q) -> bool:
    return is_per_tensor_activation(q)


def deployable_weight(q) -> bool:
    return isinstance(q, UniformQuantizer) and q.axis == 0 and q.symmetric and q.active


def input_parts(q, symmetric: bool = False, exact: bool = False) -> tuple[list[dict] | None, str]:
    """How the graph quantizes a layer's input: parts whose dequantized values add up to it, and what
    that is (the quantizer type's handler decides). ``exact``: DRQ-GELU and RORQ's groups as several
    parts (their exact integer form); otherwise one uniform stand-in each (or None: float)."""
    if q is None or not q.active:
        return None, "float"
    return q.handler.integer_parts(q, symmetric, exact)


def uniform_stand_in(q, symmetric: bool = False) -> tuple[UniformQuantizer | None, str]:
    """The one uniform per-tensor quantizer the graph runs for input quantizer ``q``, and what it is.
    ``symmetric``: zero point 0 everywhere (TensorRT), over the same range."""
    parts, how = input_parts(q, symmetric, exact=False)
    return (None if parts is None else parts[0]["q"]), how


EXACT_MODES = ("auto", "always", "never")


def _select(x: torch.Tensor, select, axis: int) -> torch.Tensor:
    if select is None:
        return x
    if select[0] == "channels":
        return x.index_select(axis, select[1])
    _, t_lo, t_hi = select
    mag = x.abs()
    inside = (mag <= t_hi) if t_lo is None else (mag > t_lo) if t_hi is None else (mag > t_lo) & (mag <= t_hi)
    return torch.where(inside, x, torch.zeros((), dtype=x.dtype))


def pack_int4(w: torch.Tensor) -> torch.Tensor:
    """Values in [-7, 7] → uint8, two per byte (high nibble first), offset by 8."""
    v = (w.flatten().to(torch.int16) + 8).to(torch.uint8)
    if v.numel() % 2:
        v = torch.cat([v, torch.full((1,), 8, dtype=torch.uint8)])
    return (v[0::2] * 16 + v[1::2]).to(torch.uint8)


def _nibbles(g, packed):
    """Packed uint8 (..., m) → int32 (..., m, 2): high and low nibble of each byte, minus the offset 8."""
    const = lambda v: g.op("Constant", value_t=torch.tensor(v, dtype=torch.int32))  # noqa: E731
    last = g.op("Constant", value_t=torch.tensor([-1]))
    p = g.op("Cast", packed, to_i=6)  # 6 = INT32
    hi = g.op("Div", p, const(16))
    lo = g.op("Sub", p, g.op("Mul", hi, const(16)))
    both = g.op("Concat", g.op("Unsqueeze", hi, last), g.op("Unsqueeze", lo, last), axis_i=-1)
    return g.op("Sub", both, const(8))


def _weight_value(g, w, packed):
    """The int8 weight tensor in the graph: a constant, or the unpacking of a packed int4 constant
    (constant ops, which both runtimes fold at load)."""
    if packed is None:
        return w
    shape = w.type().sizes()
    n = int(torch.tensor(shape).prod())
    flat = g.op("Slice", g.op("Reshape", _nibbles(g, packed), g.op("Constant", value_t=torch.tensor([-1]))),
                g.op("Constant", value_t=torch.tensor([0])), g.op("Constant", value_t=torch.tensor([n])))
    v = g.op("Reshape", flat, g.op("Constant", value_t=torch.tensor(list(shape))))
    return g.op("Cast", v, to_i=3)  # 3 = INT8


def _fake(x, s, z):
    """QuantizeLinear then DequantizeLinear, saturating at the zero point's integer type as ONNX does."""
    qmin, qmax = (-128, 127) if z.dtype == torch.int8 else (0, 255)
    return (torch.clamp(torch.round(x / s) + z.float(), qmin, qmax) - z.float()) * s


def _clip(g, x, lo, hi, clip: str):
    """Narrow ranges (below 8 bits, or symmetric): keep the codes inside what the model was calibrated for."""
    if clip == "max":
        return g.op("Min", x, hi)
    if clip == "both":
        return g.op("Clip", x, lo, hi)
    return x


def _clip_t(x, lo, hi, clip: str):
    if clip == "max":
        return torch.minimum(x, hi)
    if clip == "both":
        return torch.clamp(x, lo, hi)
    return x


class _QDQLinear(torch.autograd.Function):
    """Forward: exactly what the integer graph computes. Symbolic: the QDQ pattern above."""

    @staticmethod
    def forward(ctx, x, s, z, lo, hi, wt, wpack, ws, wz, b, bs, bz, clip: str):
        return _fake(_clip_t(x, lo, hi, clip), s, z) @ (wt.float() * ws) + b.float() * bs

    @staticmethod
    def symbolic(g, x, s, z, lo, hi, wt, wpack, ws, wz, b, bs, bz, clip: str):
        dq = g.op("DequantizeLinear", g.op("QuantizeLinear", _clip(g, x, lo, hi, clip), s, z), s, z)
        w = g.op("DequantizeLinear", _weight_value(g, wt, wpack), ws, wz, axis_i=1)
        bias = g.op("DequantizeLinear", b, bs, bz, axis_i=0)
        return g.op("Add", g.op("MatMul", dq, w), bias)


def _int_conv(x, s, z, lo, hi, w, ws, b, bs, clip, stride, padding, dilation, groups):
    """The conv on quantized input and integer weights, before its output quantizer."""
    return F.conv2d(_fake(_clip_t(x, lo, hi, clip), s, z), w.float() * ws[:, None, None, None],
                    b.float() * bs, stride, padding, dilation, groups)


class _QDQConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, s, z, lo, hi, w, wpack, ws, wz, b, bs, bz, os_, oz, clip: str, stride, padding,
                dilation, groups):
        return _fake(_int_conv(x, s, z, lo, hi, w, ws, b, bs, clip, stride, padding, dilation, groups), os_, oz)

    @staticmethod
    def symbolic(g, x, s, z, lo, hi, w, wpack, ws, wz, b, bs, bz, os_, oz, clip, stride, padding,
                 dilation, groups):
        dq = g.op("DequantizeLinear", g.op("QuantizeLinear", _clip(g, x, lo, hi, clip), s, z), s, z)
        wdq = g.op("DequantizeLinear", _weight_value(g, w, wpack), ws, wz, axis_i=0)
        bias = g.op("DequantizeLinear", b, bs, bz, axis_i=0)
        y = g.op("Conv", dq, wdq, bias, strides_i=list(stride), pads_i=list(padding) * 2,
                 dilations_i=list(dilation), group_i=groups)
        return g.op("DequantizeLinear", g.op("QuantizeLinear", y, os_, oz), os_, oz)


class _QuantGather(torch.autograd.Function):
    """An embedding lookup on an integer table with one scale per group of ``gs`` values of a row."""

    @staticmethod
    def forward(ctx, ids, table, packed, scales, gs: int):
        rows = table[ids].float()
        return (rows.unflatten(-1, (-1, gs)) * scales[ids][..., None]).flatten(-2)

    @staticmethod
    def symbolic(g, ids, table, packed, scales, gs: int):
        const = lambda v: g.op("Constant", value_t=torch.tensor(v, dtype=torch.int64))  # noqa: E731
        n_groups = scales.type().sizes()[1]
        shape = g.op("Shape", ids)
        if packed is None:
            rows = g.op("Cast", g.op("Gather", table, ids, axis_i=0), to_i=1)  # 1 = FLOAT
        else:  # gather the packed rows, then unpack only those: unpacking the whole table at load took
            # seconds and hundreds of MB (int32 intermediates of a 30 k-word vocabulary)
            nib = _nibbles(g, g.op("Gather", packed, ids, axis_i=0))
            rows = g.op("Cast", g.op("Reshape", nib, g.op("Concat", shape, const([n_groups * gs]), axis_i=0)), to_i=1)
        grouped = g.op("Reshape", rows, g.op("Concat", shape, const([n_groups, gs]), axis_i=0))
        scaled = g.op("Mul", grouped, g.op("Unsqueeze", g.op("Gather", scales, ids, axis_i=0), const([-1])))
        return g.op("Reshape", scaled, g.op("Concat", shape, const([n_groups * gs]), axis_i=0))


def _integer_weights(mod, wq, s, channels=None, with_bias: bool = True):
    """int8 weights (per output channel), int32 bias at scale s_x·s_w, as buffers for the graph.
    ``channels``: only these input channels' weights (a split-GEMM part); ``with_bias``: False for
    every part but one (a zero int32 bias keeps the QGemm pattern)."""
    lo, hi = wq.qmin_qmax
    ws = wq.scale.float()
    shape = (-1,) + (1,) * (mod.weight.dim() - 1)
    w = mod.weight if channels is None else mod.weight.index_select(1, channels)
    w_int = torch.clamp(torch.round(w / ws.view(shape)), lo, hi).to(torch.int8)
    bias = mod.bias if mod.bias is not None and with_bias else torch.zeros(mod.weight.shape[0])
    bs = (s * ws).float()
    return {"w": w_int, "ws": ws, "wz": torch.zeros(len(ws), dtype=torch.int8),
            "b": torch.round(bias / bs).to(torch.int32), "bs": bs, "bz": torch.zeros(len(ws), dtype=torch.int32)}


def _activation(q: UniformQuantizer, lo: float | None = None, hi: float | None = None) -> dict:
    """Scale, zero point (uint8, or int8 when symmetric), the float range its codes cover (narrowed to
    [lo, hi] when given), and the clip the graph needs to stay inside it."""
    s = q.scale.float().reshape(())
    qmin, qmax = q.qmin_qmax
    z = q.zero_point.reshape(()).to(torch.int8 if q.symmetric else torch.uint8)
    code_lo, code_hi = float((qmin - z.float()) * s), float((qmax - z.float()) * s)
    lo = code_lo if lo is None else max(code_lo, lo)
    hi = code_hi if hi is None else min(code_hi, hi)
    tmin, tmax = (-128, 127) if q.symmetric else (0, 255)  # QuantizeLinear saturates there by itself
    eps = 1e-6 * float(s)
    need_hi = hi < float((tmax - z.float()) * s) - eps
    # 8-bit symmetric codes may use the type's full range (-128 is one step past the grid: harmless, and a
    # clip there would stop ONNX Runtime fusing the layer); narrower ranges must be enforced.
    full_symmetric = q.symmetric and qmin == -127 and lo == code_lo
    need_lo = not full_symmetric and lo > float((tmin - z.float()) * s) + eps
    clip = "both" if need_lo else "max" if need_hi else ""
    return {"s": s, "z": z, "lo": torch.tensor(lo), "hi": torch.tensor(hi), "clip": clip}


def _prepare(mod, symmetric: bool = False, exact: str = "auto") -> str | None:
    """Precompute the integer tensors of one layer, one set per part of its input; None if it cannot
    run integer."""
    if not deployable_weight(mod.weight_quantizer):
        return None
    q = mod.input_quantizer
    split = exact == "always" or (exact == "auto" and q is not None and q.bits < 8)
    parts, how = input_parts(q, symmetric, split)
    if parts is None:
        return None
    packed = mod.weight_quantizer.bits <= 4
    # The bias goes to the part with the finest input step: its int32 grid (s_x·s_w) rounds it least.
    finest = min(range(len(parts)), key=lambda i: float(parts[i]["q"].scale))
    mod._deploy = []
    for i, part in enumerate(parts):
        d = _activation(part["q"], part["lo"], part["hi"])
        channels = part["select"][1] if part["select"] and part["select"][0] == "channels" else None
        d.update(_integer_weights(mod, mod.weight_quantizer, d["s"], channels, with_bias=i == finest))
        if isinstance(mod, QuantLinear):
            d["w"] = d["w"].t().contiguous()
        d["wpack"] = pack_int4(d["w"]) if packed else None
        d["select"] = part["select"]
        mod._deploy.append(d)
    return how


def has_packed_weights(module) -> bool:
    """Whether any layer inside deploy mode holds int4 weights packed two to a byte."""
    return any(isinstance(getattr(m, "_deploy", None), list) and any(d["wpack"] is not None for d in m._deploy)
               for m in module.modules())


def _linear_forward(mod, x):
    x = mod.transform_input(x)
    parts = (_QDQLinear.apply(_select(x, d["select"], -1), d["s"], d["z"], d["lo"], d["hi"], d["w"], d["wpack"],
                              d["ws"], d["wz"], d["b"], d["bs"], d["bz"], d["clip"]) for d in mod._deploy)
    return functools.reduce(operator.add, parts)


def _conv_part(mod, d, x):
    x = _select(x, d["select"], 1)
    if "os" not in d:  # calibrating the output quantizer: float output, range observed
        y = _int_conv(x, d["s"], d["z"], d["lo"], d["hi"], d["w"], d["ws"], d["b"], d["bs"], d["clip"],
                      mod.stride, mod.padding, mod.dilation, mod.groups)
        d["lo_seen"] = min(d.get("lo_seen", 0.0), float(y.min()))
        d["hi_seen"] = max(d.get("hi_seen", 0.0), float(y.max()))
        return y
    return _QDQConv.apply(x, d["s"], d["z"], d["lo"], d["hi"], d["w"], d["wpack"], d["ws"], d["wz"], d["b"], d["bs"],
                          d["bz"], d["os"], d["oz"], d["clip"], mod.stride, mod.padding,
                          mod.dilation, mod.groups)


def _conv_forward(mod, x):
    return functools.reduce(operator.add, (_conv_part(mod, d, x) for d in mod._deploy))


def _quantize_table(emb: nn.Embedding, bits: int) -> dict:
    """Symmetric integer table: 8 bits with one scale per row, or 4 bits with one per 32 values (packed)."""
    w = emb.weight.detach().float()
    gs = 32 if bits <= 4 and w.shape[1] % 32 == 0 else w.shape[1]
    qmax = 2 ** (bits - 1) - 1
    scales = (w.unflatten(1, (-1, gs)).abs().amax(2) / qmax).clamp(min=1e-12)
    table = torch.round(w.unflatten(1, (-1, gs)) / scales[..., None]).clamp(-qmax, qmax).flatten(1).to(torch.int8)
    # packed row by row (rows have an even length: gs = 32 divides it), so the graph can gather rows
    packed = pack_int4(table).view(len(table), -1) if bits <= 4 else None
    return {"table": table, "packed": packed, "scales": scales, "gs": gs, "bits": bits}


@contextlib.contextmanager
def deploy_mode(model, batches=None, symmetric: bool = False, exact: str = "auto"):
    """Inside: deployable layers run (and export) as integer QDQ layers, embeddings as int8 tables;
    everything else, attention matmuls included, runs in float. ``batches`` (calibration inputs for
    the whole model) calibrate the conv output quantizers; without them, conv layers stay float.
    ``symmetric``: every activation with zero point 0 (int8), as TensorRT requires. ``exact``: when
    DRQ-GELU and RORQ's groups run in their exact form of several integer GEMMs (``input_parts``):
    auto (below 8 bits), always, never (uniform stand-ins). Yields {layer name: how it runs}."""
    if exact not in EXACT_MODES:
        raise ValueError(f"exact must be one of {', '.join(EXACT_MODES)}, got {exact!r}")
    patched, how = [], {}
    has_convs = batches is not None
    w_bits = [m.weight_quantizer.bits for m in model.modules() if isinstance(m, QuantLinear) and m.weight_quantizer]
    table_bits = 4 if w_bits and max(w_bits) <= 4 else 8  # embedding tables follow the model's weights
    for name, mod in model.named_modules():
        deployable = isinstance(mod, QuantLinear) or (isinstance(mod, QuantConv2d) and has_convs)
        note = _prepare(mod, symmetric, exact) if deployable else None
        if note is not None:
            fwd = _linear_forward if isinstance(mod, QuantLinear) else _conv_forward
            mod.forward = (lambda m, f: (lambda x: f(m, x)))(mod, fwd)
            patched.append(mod)
            how[name] = "integer" if note == "exact" else f"integer ({note})"
        elif isinstance(mod, (QuantMatMul, QuantConv2d, QuantLinear)):
            for q in mod.quantizers().values():
                q._saved_enabled, q.enabled = q.enabled, False
                patched.append(q)
        elif isinstance(mod, nn.Embedding):
            d = mod._deploy = _quantize_table(mod, table_bits)
            mod.forward = (lambda m: (lambda ids: _QuantGather.apply(ids, m._deploy["table"], m._deploy["packed"],
                                                                     m._deploy["scales"], m._deploy["gs"])))(mod)
            patched.append(mod)
            how[name] = f"int{d['bits']} table, one scale per {d['gs']} values"
    if has_convs:
        with torch.no_grad():
            for b in batches:
                model(*b)
        for mod in patched:
            if isinstance(mod, QuantConv2d):
                for d in mod._deploy:  # one output quantizer per part: each part is its own QLinearConv
                    u = _activation(uniform_over(d.pop("lo_seen"), d.pop("hi_seen"), OUTPUT_BITS, symmetric))
                    d.update(os=u["s"], oz=u["z"])
    try:
        yield how
    finally:
        for obj in patched:
            if isinstance(obj, nn.Module) and hasattr(obj, "_deploy"):
                del obj.forward
                del obj._deploy
            else:
                obj.enabled = obj._saved_enabled
