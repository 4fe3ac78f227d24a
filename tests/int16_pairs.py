"""The int16 pair bound, read from an exported graph: a CPU without VNNI sums u8 x s8 products in pairs
into int16 (vpmaddubsw), so a pair of weight codes whose |w1|+|w2| exceeds 32767/255 can saturate there."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnx.numpy_helper


def weight_codes(path):
    """{name: int8 weight codes} of every integer layer in an ONNX graph (DequantizeLinear on an int8 constant)."""
    graph = onnx.load(path).graph
    consts = {t.name: t for t in graph.initializer}
    consts.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    out = {}
    for n in graph.node:
        t = consts.get(n.input[0]) if n.op_type == "DequantizeLinear" else None
        if t is not None and t.data_type == onnx.TensorProto.INT8 and len(t.dims) in (2, 4):
            out[n.input[0]] = onnx.numpy_helper.to_array(t).astype(np.int32)
    return out


def pairs_in_kernel_orders(w):
    """Adjacent pairs along the reduction axis in each order an int8 GEMM may pack it: a MatMul's (K, N) weights
    pair along K; a conv's (O, I, kh, kw) weights as im2col lays them out, input channels innermost (NHWC: ONNX
    Runtime, OpenVINO) or outermost (NCHW)."""
    if w.ndim == 2:
        orders = [w.T]  # (N, K)
    else:
        orders = [w.transpose(0, 2, 3, 1).reshape(len(w), -1), w.reshape(len(w), -1)]
    for o in orders:
        k = o.shape[1] - o.shape[1] % 2
        yield np.abs(o[:, 0:k:2]) + np.abs(o[:, 1:k:2])


def saturating_pairs(path) -> int:
    """Weight pairs for which some u8 input makes the int16 pair sum overflow: 255·(|w1|+|w2|) > 32767."""
    return sum(int((255 * s > 32767).sum()) for w in weight_codes(path).values() for s in pairs_in_kernel_orders(w))


CAPPED = r"""
import json, sys
from ptq4ris_core.engine import Engine
out = {}
for name in sys.argv[1:]:
    eng = Engine.load(name, backend="openvino:f32", allow_unsafe=True, cache_dir=None)
    out[name] = {"passed": eng.self_check["passed"], "kernels": eng.int8_kernels()}
print(json.dumps(out))
"""


def self_checks_under_avx2_cap(*engines) -> dict:
    """{engine: {"passed", "kernels"}}: each engine's self-check on OpenVINO f32 in a process whose oneDNN and
    OpenVINO kernels are capped to AVX2 (ONEDNN_MAX_CPU_ISA, OV_CPU_MAX_ISA): the int16 pair sums of a CPU
    without VNNI, on any x86 CPU."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OV_CPU_MAX_ISA": "AVX2"}
    run = subprocess.run([sys.executable, "-c", CAPPED, *map(str, engines)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def cap_took_effect(kernels) -> bool:
    """No int8 kernel of VNNI's, AMX's or AVX-512's ran (e.g. jit_avx2_I8, jit_gemm_I8 only)."""
    return not any(isa in k.lower() for k in kernels for isa in ("vnni", "amx", "avx512"))
