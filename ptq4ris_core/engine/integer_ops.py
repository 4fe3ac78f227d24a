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
OV_COMPUTE = {"FullyConnected", "FullyConnectedQuantizedLegacy", "Convolution", "MatMul", "Gemm"}


def layer_macs(path) -> dict:
    """{node name: {"op", "macs"}} for every MatMul, Gemm or Conv whose weights are constant (computed
    from constants only: an initializer, or int4 weights unpacked by ops on constants)."""
    import onnx
    model = onnx.load(str(path))
    g = model.graph
    const = {t.name for t in g.initializer}
    for n in g.node:  # graph order is topological
        if n.op_type == "Constant" or (n.input and all(i in const or i == "" for i in n.input)):
            const.update(n.output)
    found = [n for n in g.node if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in const]
    shapes = _run_shapes(model, [v for n in found for v in (n.output[0], n.input[1])])
    out = {}
    for n in found:
        y, dims = shapes[n.output[0]], shapes[n.input[1]]
        if n.op_type == "Conv":
            k = int(np.prod(dims[1:]))
        elif n.op_type == "Gemm":
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            k = dims[1] if trans_b else dims[0]
        else:
            k = dims[0]
        out[n.name] = {"op": n.op_type, "macs": int(np.prod(y)) * int(k), "output": n.output[0]}
    return out


def _runs_as(layer: str, output: str, executed: list[tuple[str, str, tuple]]) -> list[str]:
    """What the runtime executes for an original node: a node of its name, of a name derived from it
    ("<node>/MatMulAddFusion", "<node>_token_7", "<node>/WithoutBiases"), or that writes its output."""
    return sorted({kind for name, kind, outs in executed
                   if name == layer or name.startswith((layer + "/", layer + "_")) or output in outs})


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
        dtype = {"tensor(int64)": np.int64, "tensor(uint8)": np.uint8}.get(i.type, np.float32)
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
        opt = onnx.load(so.optimized_model_filepath, load_external_data=False)  # its nodes only: the weights
        # stay referenced in the engine's own ``.data`` file, which is not beside this copy
    executed = [(n.name, n.op_type, tuple(n.output)) for n in opt.graph.node]
    per_layer = {}
    for node, info in layers.items():
        runs = _runs_as(node, info["output"], executed)
        per_layer[node] = {**info, "runs_as": runs or ["(folded into another node)"],
                           "integer": bool(set(runs) & ORT_INTEGER_OPS)}
    return _share(per_layer)


def ov_integer_share(path, layers: dict | None = None, device: str = "CPU", precision: str = "f32") -> dict:
    """Share of the Linear/Conv multiply-adds that OpenVINO runs at int8/uint8 runtime precision, with the
    float parts at ``precision`` (the engine's ``openvino:PRECISION``)."""
    import openvino as ov
    layers = layers if layers is not None else layer_macs(path)
    compiled = ov.Core().compile_model(str(path), device, {"INFERENCE_PRECISION_HINT": precision})
    executed = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        names = str(rt["originalLayersNames"].astype(str)) if "originalLayersNames" in rt else ""
        prec = str(rt["runtimePrecision"].astype(str)) if "runtimePrecision" in rt else ""
        kind = str(rt["layerType"].astype(str)) if "layerType" in rt else ""
        executed += [(name.strip(), f"{kind}:{prec}", ()) for name in names.split(",")]
    per_layer = {}
    for node, info in layers.items():
        runs = [r for r in _runs_as(node, "", executed) if r.split(":")[0] in OV_COMPUTE]
        per_layer[node] = {**info, "runs_as": runs, "integer": any(r.split(":")[1].lower() in ("i8", "u8") for r in runs)}
    return _share(per_layer)


def _share(per_layer: dict) -> dict:
    total = sum(v["macs"] for v in per_layer.values())
    integer = sum(v["macs"] for v in per_layer.values() if v["integer"])
    return {"integer_macs": integer, "total_macs": total, "share": integer / total if total else 0.0,
            "layers": per_layer}
