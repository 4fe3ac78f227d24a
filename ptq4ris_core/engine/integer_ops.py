"""Which multiply-adds really run in integer kernels: read each runtime's optimized graph and count.

The exported graph gives every Linear/Conv (a MatMul, Gemm or Conv whose weights are constant) and its
multiply-adds from the inferred shapes. ONNX Runtime's optimized graph (what it runs, saved by the
session) shows which op consumes each weight: an integer op (QGemm, QLinearConv, ...) or a float one.
OpenVINO's compiled runtime model names, for each executed layer, the original layers it fused and
the precision it runs in.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

ORT_INTEGER_OPS = {"QGemm", "MatMulIntegerToFloat", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                   "ConvInteger", "DynamicQuantizeMatMul", "QAttention", "MatMulNBits"}
WEIGHT_OPS = {"MatMul", "Gemm", "Conv"}


def layer_macs(path) -> dict:
    """{weight tensor name: {"node", "op", "macs"}} for every layer with constant weights."""
    import onnx
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    inits = {t.name: list(t.dims) for t in g.initializer}
    consts = {n.output[0]: list(a.t.dims) for n in g.node if n.op_type == "Constant" for a in n.attribute
              if a.name == "value"}
    inits.update(consts)
    producer = {o: n for n in g.node for o in n.output}

    def weight_source(name):
        seen = 0
        while name not in inits and name in producer and seen < 4:
            node = producer[name]
            if node.op_type not in ("DequantizeLinear", "Transpose", "Cast", "Identity"):
                return None
            name, seen = node.input[0], seen + 1
        return name if name in inits else None

    found = [(n, weight_source(n.input[1])) for n in g.node if n.op_type in WEIGHT_OPS and len(n.input) > 1]
    found = [(n, w) for n, w in found if w is not None]  # activation x activation (attention) is no Linear/Conv
    shapes = _run_shapes(model, [n.output[0] for n, _ in found])
    out = {}
    for n, w in found:
        y = shapes[n.output[0]]
        dims = inits[w]
        if n.op_type == "Conv":
            k = int(np.prod(dims[1:]))
        elif n.op_type == "Gemm":
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            k = dims[1] if trans_b else dims[0]
        else:
            k = dims[0]
        out[w] = {"node": n.name, "op": n.op_type, "macs": int(np.prod(y)) * int(k)}
    return out


def _run_shapes(model, names: list[str]) -> dict:
    """The real shapes of some intermediate tensors: run the graph once on zeros with them as outputs
    (static shape inference loses dims through the window reshapes)."""
    import onnx
    import onnxruntime as ort
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        dtype = np.int64 if "int64" in i.type else np.float32
        feeds[i.name] = np.ones([d if isinstance(d, int) else 1 for d in i.shape], dtype)
    outs = sess.run(names, feeds)
    return {n: list(o.shape) for n, o in zip(names, outs)}


def ort_integer_share(path, layers: dict | None = None) -> dict:
    """Share of the Linear/Conv multiply-adds that ONNX Runtime (CPU) runs in integer kernels."""
    import onnx
    import onnxruntime as ort
    layers = layers if layers is not None else layer_macs(path)
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        opt = onnx.load(so.optimized_model_filepath)
    consumers = {}
    for n in opt.graph.node:
        for i in n.input:
            consumers.setdefault(i, set()).add(n.op_type)
    per_layer = {w: {**info, "runs_as": sorted(consumers.get(w, {"(folded)"})),
                     "integer": bool(consumers.get(w, set()) & ORT_INTEGER_OPS)} for w, info in layers.items()}
    return _share(per_layer)


def ov_integer_share(path, layers: dict | None = None, device: str = "CPU") -> dict:
    """Share of the Linear/Conv multiply-adds that OpenVINO runs at int8/uint8 runtime precision."""
    import openvino as ov
    layers = layers if layers is not None else layer_macs(path)
    compiled = ov.Core().compile_model(str(path), device, {"INFERENCE_PRECISION_HINT": "f32"})
    by_original = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        names = str(rt["originalLayersNames"].astype(str)) if "originalLayersNames" in rt else ""
        prec = str(rt["runtimePrecision"].astype(str)) if "runtimePrecision" in rt else ""
        kind = str(rt["layerType"].astype(str)) if "layerType" in rt else ""
        for name in names.split(","):
            by_original.setdefault(name.strip(), []).append((kind, prec))
    per_layer = {}
    for w, info in layers.items():
        node = info["node"]  # OpenVINO keeps it, or names its parts "<node>/WithoutBiases", "<node>/Dequantization..."
        runs = [r for name, rs in by_original.items() if name == node or name.startswith(node + "/") for r in rs]
        compute = [(k, p) for k, p in runs if k in ("FullyConnected", "Convolution", "MatMul", "Gemm")]
        per_layer[w] = {**info, "runs_as": sorted({f"{k}:{p}" for k, p in compute or runs}),
                        "integer": any(p.lower() in ("i8", "u8") for _, p in compute)}
    return _share(per_layer)


def _share(per_layer: dict) -> dict:
    total = sum(v["macs"] for v in per_layer.values())
    integer = sum(v["macs"] for v in per_layer.values() if v["integer"])
    return {"integer_macs": integer, "total_macs": total, "share": integer / total if total else 0.0,
            "layers": per_layer}
