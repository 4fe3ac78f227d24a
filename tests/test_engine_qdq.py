"""The integer (QDQ) export: it computes what its deploy simulation computes, and ONNX Runtime
really runs integer GEMMs for it (counted in the optimized graph)."""
import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ptq4ris_core.calib.calibrate import CalibrationSet, calibrate
from ptq4ris_core.calib.saved import example_batch
from ptq4ris_core.engine.export import _export, _Segmenter
from ptq4ris_core.engine.qdq import deploy_mode
from ptq4ris_core.methods import get_method
from ptq4ris_core.nn import QuantLinear


@pytest.mark.parametrize("bits", [(8, 8), (4, 6)])
def test_qdq_segmenter_matches_deploy_simulation_and_runs_integer_gemms(tiny_model, tmp_path, bits):
    q, _ = calibrate(tiny_model, get_method("rtn"), *bits, CalibrationSet(n=2), progress=False)
    img, ids, m = example_batch(tiny_model.cfg)
    path, opt = tmp_path / "seg.onnx", tmp_path / "seg_opt.onnx"
    with torch.no_grad():
        words = q.text_encoder(ids, m)
        with deploy_mode(q) as integer:
            sim = q.segment_features(img, words, m).numpy()
            _export(_Segmenter(q), (img, words, m), path, ["image", "words", "word_mask"], ["logits"])
    seg_integer = [n for n in integer if not n.startswith("text_encoder.")]
    assert len(seg_integer) == sum(isinstance(mod, QuantLinear) for n, mod in q.named_modules()
                                   if not n.startswith("text_encoder."))
    graph = onnx.load(path).graph
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    n_int8 = sum(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2 for t in tensors)
    assert n_int8 == len(seg_integer)  # every integer layer's weights are stored as int8
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(opt)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": img.numpy(), "words": words.numpy(), "word_mask": m.numpy()})[0]
    assert np.abs(out - sim).max() < 1e-3
    ops = collections.Counter(n.op_type for n in onnx.load(opt).graph.node)
    assert ops["QGemm"] + ops["MatMulIntegerToFloat"] == len(seg_integer), ops
    assert ("Min" in ops) == (bits[1] < 8)  # the narrow-range clip appears only below 8 bits
