"""The integer (QDQ) export: it computes what its deploy simulation computes, the runtimes really run
its Linear/Conv multiply-adds in integer kernels (read from their optimized graphs), and the stand-ins
for quantizers that QDQ cannot express are what they say."""
import collections
import functools
import importlib.util

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch

from ptq4ris_core.calib.calibrate import CalibrationSet, calibrate
from ptq4ris_core.calib.saved import example_batch
from ptq4ris_core.engine.cpu import cpu_int8
from ptq4ris_core.engine.export import _export, _Segmenter, export_engine
from ptq4ris_core.engine.golden import F32_MAX_ERROR, F32_MEAN_ERROR
from ptq4ris_core.engine.targets import weights_for_target
from ptq4ris_core.engine.integer_ops import layer_macs, ort_integer_share, ov_integer_share
from ptq4ris_core.engine.qdq import deploy_mode, input_parts, uniform_stand_in
from ptq4ris_core.methods import get_method
from ptq4ris_core.models import Preprocessor
from ptq4ris_core.nn import QuantConv2d, QuantLinear
from ptq4ris_core.quant.functional import GELU_MIN
from ptq4ris_core.calib.search import init_from_stats
from ptq4ris_core.data import SceneGenerator
from ptq4ris_core.quant.quantizers import (ChannelGroupQuantizer, DualRegionGeluQuantizer, ElementGroupQuantizer,
                                           UniformQuantizer)

HAS_OV = importlib.util.find_spec("openvino") is not None


def _calibrated(model, method, bits):
    q, _ = calibrate(model, get_method(method, recon_iters=30), *bits, CalibrationSet(n=2), progress=False)
    return q, CalibrationSet(n=2).build(model.cfg, Preprocessor(model.cfg))


CPU = cpu_int8()
VNNI_ONLY = pytest.mark.skipif(CPU.saturates, reason=f"full 8-bit weights saturate int16 pairs here: {CPU.describe()}")


@pytest.mark.parametrize("method,bits,symmetric,target", [
    ("rtn", (8, 8), False, "portable"), ("rtn", (4, 6), False, "portable"), ("ptq4ris", (8, 8), False, "portable"),
    ("ptq4ris", (8, 8), True, "portable"), ("ptq4sam", (4, 6), False, "portable"),  # reconstructed: just weights
    pytest.param("rtn", (8, 8), False, "vnni", marks=VNNI_ONLY)])
def test_qdq_segmenter_matches_deploy_simulation_and_runs_integer_kernels(tiny_model, tmp_path, method, bits, symmetric,
                                                                          target):
    q, batches = _calibrated(tiny_model, method, bits)
    img, ids, m = example_batch(tiny_model.cfg)
    pixels = np.ascontiguousarray(SceneGenerator(tiny_model.cfg.image_size).sample("train", 0).image.transpose(2, 0, 1)[None])  # img, before normalising
    path, opt = tmp_path / "seg.onnx", tmp_path / "seg_opt.onnx"
    with torch.no_grad():
        words = q.text_encoder(ids, m)
        with weights_for_target(q, target), deploy_mode(q, batches, symmetric) as how:
            sim = q.segment_features(img, words, m).numpy()
            _export(_Segmenter(q), (torch.from_numpy(pixels), words, m), path, ["image", "words", "word_mask"], ["logits"])
    seg = {n: h for n, h in how.items() if not n.startswith("text_encoder.")}
    wrapped = {n: type(mod) for n, mod in q.named_modules() if isinstance(mod, (QuantLinear, QuantConv2d))
               and not n.startswith("text_encoder.") and mod.weight_quantizer is not None
               and mod.input_quantizer is not None}
    assert set(seg) == set(wrapped)  # every layer with quantized weights and inputs runs integer
    if method == "ptq4ris":  # DRQ-GELU inputs run as stated uniform stand-ins
        assert any("DRQ-GELU" in h for h in seg.values())
    graph = onnx.load(path).graph
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    n_int8 = sum(t.data_type == onnx.TensorProto.INT8 and len(t.dims) in (2, 4) for t in tensors)
    n_packed = sum(t.data_type == onnx.TensorProto.UINT8 and len(t.dims) == 1 and t.dims[0] > 1 for t in tensors)
    if bits[0] <= 4:  # stored two to a byte, unpacked by constant-folded integer ops at load
        assert (n_int8, n_packed) == (0, len(seg))
    else:  # every integer layer's weights are stored as int8
        assert (n_int8, n_packed) == (len(seg), 0)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(opt)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": pixels, "words": words.numpy(), "word_mask": m.numpy()})[0]
    # QLinearConv requantizes in integer arithmetic: a rare element may land one output step away (the
    # tolerance of the engine's self-check at load, golden.py).
    err = np.abs(out - sim)
    assert err.mean() < F32_MEAN_ERROR and err.max() < F32_MAX_ERROR, (err.mean(), err.max(), CPU.describe())
    ops = collections.Counter(n.op_type for n in onnx.load(opt).graph.node)
    n_linear = sum(t is QuantLinear for t in wrapped.values())
    assert ops["QGemm"] + ops["MatMulIntegerToFloat"] == n_linear, ops
    assert ops["QLinearConv"] == len(wrapped) - n_linear, ops
    if symmetric:  # TensorRT's form: every activation int8 with zero point 0
        zps = [t for n in graph.node if n.op_type == "QuantizeLinear" for t in tensors if t.name == n.input[2]]
        zps += [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                if any(n.output[0] == q.input[2] for q in graph.node if q.op_type == "QuantizeLinear")]
        assert zps and all(t.data_type == onnx.TensorProto.INT8 and not any(onnx.numpy_helper.to_array(t).ravel())
                           for t in zps)
        return
    assert ("Min" in ops) == (bits[1] < 8)  # the narrow-range clip appears only below 8 bits
    is_packed = lambda t: t.data_type == onnx.TensorProto.UINT8 and len(t.dims) == 1 and t.dims[0] > 1  # noqa: E731
    packed_names = {t.name for t in graph.initializer if is_packed(t)} | {
        n.output[0] for n in graph.node if n.op_type == "Constant" and any(is_packed(a.t) for a in n.attribute)}
    consumers = [n.op_type for n in onnx.load(opt).graph.node if packed_names & set(n.input)]
    assert not consumers  # the int4 unpacking was folded at load: nothing unpacks per frame


@pytest.fixture(scope="module")
def w8a8_engine(tiny_model, tmp_path_factory):
    q, batches = _calibrated(tiny_model, "ptq4ris", (8, 8))
    return export_engine(q, tmp_path_factory.mktemp("w8a8"), {"quantization": {"method": "ptq4ris", "bits": "W8A8"}},
                         batches)


@pytest.mark.parametrize("runtime", ["onnxruntime"] + (["openvino:f32", "openvino:bf16"] if HAS_OV else []))
def test_w8a8_runs_at_least_90_percent_of_linear_and_conv_macs_in_integer_kernels(w8a8_engine, runtime):
    """On each runtime, and on OpenVINO with its float parts in f32 or bf16 (the default on a bf16 CPU)."""
    share = {"onnxruntime": ort_integer_share, "openvino:f32": functools.partial(ov_integer_share, precision="f32"),
             "openvino:bf16": functools.partial(ov_integer_share, precision="bf16")}[runtime]
    for graph in ("segmenter.onnx", "text_encoder.onnx"):
        layers = layer_macs(w8a8_engine / graph)
        assert len(layers) > 10 and all(v["macs"] > 0 for v in layers.values())
        r = share(w8a8_engine / graph, layers)
        assert r["share"] >= 0.9, (graph, r["share"], [n for n, v in r["layers"].items() if not v["integer"]])


def test_fp32_graph_counts_zero_integer_macs(tmp_path, tiny_model):
    out = export_engine(tiny_model, tmp_path / "fp32")
    assert ort_integer_share(out / "segmenter.onnx")["share"] == 0.0


def test_embedding_tables_are_int8_and_close(w8a8_engine, tiny_model):
    graph = onnx.load(w8a8_engine / "text_encoder.onnx").graph
    vocab = tiny_model.text_encoder.embeddings.word_embeddings.weight.shape
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute]
    big = [t for t in tensors if list(t.dims) == list(vocab)]
    assert len(big) == 1 and big[0].data_type == onnx.TensorProto.INT8  # no float vocabulary table
    sess = ort.InferenceSession(str(w8a8_engine / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    _, ids, m = example_batch(tiny_model.cfg)
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": m.numpy()})[0]
    with torch.no_grad():
        ref = tiny_model.text_encoder(ids, m).numpy()
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos[0][m.numpy()[0] > 0].min() > 0.95  # W8A8 BERT with int8 embeddings stays close to float


def test_uniform_stand_ins_cover_the_quantizers_range():
    g = DualRegionGeluQuantizer(4)
    g.delta_pos.fill_(0.5)
    g.mark_calibrated()
    u, how = uniform_stand_in(g)
    assert "DRQ-GELU" in how and u.bits == 4 and not u.symmetric
    lo, hi = (0 - u.zero_point) * u.scale, (15 - u.zero_point) * u.scale
    assert float(lo) <= GELU_MIN + float(u.scale) and abs(float(hi) - 7 * 0.5) <= float(u.scale)
    x = torch.tensor([0.0])
    assert float(u(x)) == 0.0  # zero is exact
    e = ElementGroupQuantizer(8).set_groups(torch.tensor([1.0, 50.0]), torch.tensor([2 / 255, 100 / 255]),
                                            torch.tensor([128.0, 128.0]))
    u, how = uniform_stand_in(e)
    span = float((255 - u.zero_point) * u.scale - (0 - u.zero_point) * u.scale)
    assert "rorq_element" in how and span == pytest.approx(100, rel=0.02)
    c = ChannelGroupQuantizer(8, axis=1).set_groups(torch.tensor([0, 1, 0]), torch.tensor([2 / 255, 60 / 255, 2 / 255]),
                                                    torch.tensor([128.0, 128.0, 128.0]))
    u, how = uniform_stand_in(c)
    span = float((255 - u.zero_point) * u.scale - (0 - u.zero_point) * u.scale)
    assert "rorq_channel_split" in how and u.axis is None and span == pytest.approx(60, rel=0.02)
    assert uniform_stand_in(None) == (None, "float")


def test_w4_engine_stores_int4_embedding_groups_and_stays_close(tiny_model, tmp_path):
    q, batches = _calibrated(tiny_model, "rtn", (4, 8))
    out = export_engine(q, tmp_path / "w4a8", {"quantization": {"method": "rtn", "bits": "W4A8"}}, batches)
    graph = onnx.load(out / "text_encoder.onnx").graph
    vocab, dim = tiny_model.text_encoder.embeddings.word_embeddings.weight.shape
    sizes = [onnx.numpy_helper.to_array(t).size for t in graph.initializer] + [
        onnx.numpy_helper.to_array(a.t).size for n in graph.node if n.op_type == "Constant" for a in n.attribute]
    assert vocab * dim // 2 in sizes and vocab * dim not in sizes  # packed two to a byte, no full-size table
    table = {t.name for t in graph.initializer if list(t.dims) == [vocab, dim // 2]} | {
        n.output[0] for n in graph.node if n.op_type == "Constant" and list(n.attribute[0].t.dims) == [vocab, dim // 2]}
    # the lookup reads the packed rows; only the gathered rows are unpacked (never the whole table at load)
    assert len(table) == 1 and [n.op_type for n in graph.node if table & set(n.input)] == ["Gather"]
    sess = ort.InferenceSession(str(out / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    _, ids, m = example_batch(tiny_model.cfg)
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": m.numpy()})[0]
    with torch.no_grad():
        ref = tiny_model.text_encoder(ids, m).numpy()
        with deploy_mode(q, batches):
            sim = q.text_encoder(ids, m).numpy()
    # the graph computes its deploy simulation (a rare activation lands one quantization step away), on the
    # tokens the segmenter reads: a padding token's features are masked out of the fusion (on an AMX CPU one
    # padding token's rounding went a step the other way and moved its features by 0.18)
    err = np.abs(got - sim)[m.numpy() > 0]
    assert err.mean() < F32_MEAN_ERROR and err.max() < F32_MAX_ERROR, CPU.describe()
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos[0][m.numpy()[0] > 0].min() > 0.8  # W4A8 BERT with int4 embeddings: still the same sentence
    for graph in ("segmenter.onnx", "text_encoder.onnx"):  # packed weights still run in integer kernels
        assert ort_integer_share(out / graph)["share"] >= 0.9


def _group_quantizer(kind: str, x: torch.Tensor, axis: int, bits: int = 4):
    """A calibrated DRQ-GELU, RORQ element-group or channel-group quantizer for ``x``."""
    q = {"drq_gelu": lambda: DualRegionGeluQuantizer(bits), "element": lambda: ElementGroupQuantizer(bits),
         "channel": lambda: ChannelGroupQuantizer(bits, axis)}[kind]()
    init_from_stats(q, x)
    return q


def _inputs(kind: str, conv: bool) -> torch.Tensor:
    torch.manual_seed(1)
    shape = (2, 48, 6, 6) if conv else (2, 20, 48)
    x = torch.randn(shape)
    if kind == "drq_gelu":
        return torch.nn.functional.gelu(2 * x)
    axis = 1 if conv else -1
    boost = torch.ones(48)
    boost[[2, 7]] = 40.0  # two outlier channels, as BERT has
    x = x * boost.view((1, -1, 1, 1) if conv else (1, 1, -1))
    return x if kind == "channel" else x * (1 + 30 * (torch.rand(shape) > 0.995))  # a few outlier elements


@pytest.mark.parametrize("kind", ["drq_gelu", "element", "channel"])
def test_input_parts_add_up_to_the_quantizer_exactly(kind):
    """The parts' dequantized values, each clipped and quantized as the graph does, sum to q(x)."""
    from ptq4ris_core.engine.qdq import _activation, _clip_t, _fake, _select
    x = _inputs(kind, conv=False)
    q = _group_quantizer(kind, x, -1)
    parts, how = input_parts(q, exact=True)
    assert how.startswith("exact") and len(parts) >= 2
    total = torch.zeros_like(x)
    for p in parts:
        d = _activation(p["q"], p["lo"], p["hi"])
        part = _fake(_clip_t(_select(x, p["select"], -1), d["lo"], d["hi"], d["clip"]), d["s"], d["z"])
        if p["select"] and p["select"][0] == "channels":
            total[..., p["select"][1]] += part
        else:
            total += part
    assert torch.equal(total, q(x))
    stand_in, _ = uniform_stand_in(q)
    assert not torch.allclose(stand_in(x), q(x), atol=1e-3)  # the one-grid stand-in is not the quantizer


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("kind", ["drq_gelu", "element", "channel"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_exact_parts_run_as_integer_gemms_and_match_the_simulated_layer(tmp_path, kind, conv, symmetric):
    """A layer whose input quantizer has no single grid, exported exactly: ONNX Runtime runs one integer
    GEMM per part, and its output is the simulated (fake-quant) layer's, up to the int32 bias rounding
    (and, for convs, the 8-bit output grid QLinearConv needs)."""
    from ptq4ris_core.nn import QuantConv2d, QuantLinear
    torch.manual_seed(0)
    x = _inputs(kind, conv)
    float_layer = torch.nn.Conv2d(48, 8, 3, padding=1) if conv else torch.nn.Linear(48, 8)
    layer = (QuantConv2d if conv else QuantLinear)(float_layer)
    layer.input_quantizer = _group_quantizer(kind, x, 1 if conv else -1)
    wq = UniformQuantizer(4, symmetric=True, axis=0)
    init_from_stats(wq, layer.weight.detach())
    layer.weight_quantizer = wq
    model = torch.nn.Sequential(layer).eval()
    with torch.no_grad():
        ref = model(x)
        with deploy_mode(model, [(x,)], symmetric, exact="always") as how:
            sim = model(x)
            path = tmp_path / "layer.onnx"
            _export(model, (x,), path, ["x"], ["y"])
            # what the integer form may add to the simulated layer: the int32 bias's rounding on its part's
            # s_x·s_w grid, and for convs one step of each part's 8-bit output grid (QLinearConv requantizes
            # in integer arithmetic: a rare element lands one step away)
            bias_step = max((float(d["bs"].max()) for d in layer._deploy if d["b"].any()), default=0.0)
            bound = 0.5 * bias_step + sum(float(d["os"]) for d in layer._deploy if "os" in d)
    n_parts = len(input_parts(layer.input_quantizer, symmetric, exact=True)[0])
    assert "integer GEMMs" in how["0"] and n_parts >= 2
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    out = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    ops = collections.Counter(n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node)
    assert ops["QLinearConv" if conv else "QGemm"] == n_parts, ops
    scale = float(ref.abs().max())
    assert np.abs(out - sim.numpy()).max() < 1e-3 * scale, CPU.describe()  # the graph computes its deploy simulation
    # TensorRT's zero-point-0 form of RORQ's groups is not exact: each band or group is widened to hold 0
    exact_symmetric = not symmetric or kind == "drq_gelu"
    if exact_symmetric:
        assert np.abs(out - ref.numpy()).max() <= bound + 1e-5 * scale
    with deploy_mode(model, [(x,)], symmetric, exact="never"):
        stand_in = model(x)
    if exact_symmetric:  # and the exact form is really closer than one uniform grid
        assert (stand_in - ref).abs().max() > 3 * np.abs(out - ref.numpy()).max()
