"""The FP32 engine: export round trip on both runtimes, the meta.json checks, the text cache, bad input."""
import copy
import json
import shutil

import numpy as np
import pytest
import torch

from ptq4ris_core.engine import Engine, EngineError, export_engine
from ptq4ris_core.errors import InputError
from ptq4ris_core.frames import resize_rgb
from ptq4ris_core.segment import Segmenter

BACKENDS = ["onnxruntime"] + (["openvino"] if __import__("importlib").util.find_spec("openvino") else [])


@pytest.fixture(scope="module")
def engine_dir(tiny_model, tmp_path_factory):
    return export_engine(tiny_model, tmp_path_factory.mktemp("eng") / "fp32", {"model": "tiny"})


def _scene(size=(90, 120)):
    from ptq4ris_core.data import SceneGenerator
    return SceneGenerator(size[1], size[0]).sample("test", 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_engine_equals_pytorch(engine_dir, tiny_model, backend):
    eng = Engine.load(engine_dir, backend=backend)
    s = _scene()
    seg = Segmenter(tiny_model)
    with torch.no_grad():
        x = seg.pre.images(resize_rgb(s.image, 64)[None])
        words, m = seg.text_features(s.text)
        ref = tiny_model.segment_features(x, words, m).numpy()
    got = eng.logits(s.image, s.text)
    assert np.abs(got - ref).max() < 1e-3
    mask, score = eng.segment(s.image, s.text)
    assert mask.shape == s.image.shape[:2] and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    tmask, _ = seg.segment(s.image, s.text)
    assert (mask == tmask).mean() > 0.99  # same mask up to border pixels of the upsampling


def test_text_graph_runs_once_per_distinct_command(engine_dir):
    eng = Engine.load(engine_dir, backend="onnxruntime")
    img = _scene().image
    for text in ["the red circle", "the red circle", "  the red   circle ", "the blue star", "the blue star"]:
        eng.segment(img, text)
    assert eng.text_encodes == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_command_or_image_reaches_the_graph(engine_dir, tiny_model, backend):
    """OpenVINO keeps a command's word features bound between frames: each new command and each new image must
    still be what the graph reads (against PyTorch, command by command and frame by frame)."""
    eng, seg = Engine.load(engine_dir, backend=backend), Segmenter(tiny_model)
    a, b = _scene(), _scene((64, 80))
    b_image = np.ascontiguousarray(np.flip(a.image, 1))
    for image, text in [(a.image, "the red circle"), (a.image, "the blue star at the top"), (b_image, "the blue star at the top"),
                        (a.image, "the red circle")]:
        with torch.no_grad():
            words, m = seg.text_features(text)
            ref = tiny_model.segment_features(seg.pre.images(resize_rgb(image, 64)[None]), words, m).numpy()
        assert np.abs(eng.logits(image, text) - ref).max() < 1e-3
    assert eng.text_encodes == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bgr_frame_gives_exactly_the_mask_of_its_rgb_frame(engine_dir, backend):
    """segment(bgr=True) swaps the channels after the resize (what the node does with bgr8 cameras): the same
    graph input, so the same mask and score, as converting the whole frame first."""
    eng = Engine.load(engine_dir, backend=backend)
    s = _scene((96, 160))
    bgr = np.ascontiguousarray(s.image[..., ::-1])
    np.testing.assert_array_equal(eng.preprocess(bgr, bgr=True), eng.preprocess(s.image))
    (m_rgb, sc_rgb), (m_bgr, sc_bgr) = eng.segment(s.image, s.text), eng.segment(bgr, s.text, bgr=True)
    np.testing.assert_array_equal(m_bgr, m_rgb)
    assert sc_bgr == sc_rgb
    assert not np.array_equal(eng.preprocess(bgr), eng.preprocess(s.image))  # the flag is what makes them equal


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs OpenVINO beside ONNX Runtime")
def test_openvino_runs_inputs_that_onnx_runtime_made(engine_dir):
    """Word features and mask from one runtime feed the other's segmenter (ONNX Runtime's int64 arrays carry a
    NumPy type code OpenVINO's binding does not know)."""
    ort_eng, ov_eng = Engine.load(engine_dir, backend="onnxruntime"), Engine.load(engine_dir, backend="openvino")
    feeds = ort_eng.feeds(_scene().image, "the red circle")
    assert np.abs(ov_eng._seg(feeds)[0] - ort_eng._seg(feeds)[0]).max() < 1e-3


def test_meta_json_checks(engine_dir, tmp_path):
    bad = tmp_path / "eng"
    shutil.copytree(engine_dir, bad)
    meta = json.loads((bad / "meta.json").read_text(encoding="utf-8"))
    assert {"text_encoder.onnx", "segmenter.onnx", "vocab.txt"} <= set(meta["files"])
    assert meta["input"]["image_size"] == 64 and meta["quantization"]["bits"] == "FP32"
    with pytest.raises(EngineError, match="no engine folder"):
        Engine.load(tmp_path / "absent")
    seg = bad / "segmenter.onnx"
    data = seg.read_bytes()
    seg.write_bytes(data[:-100])
    with pytest.raises(EngineError, match="SHA-256"):
        Engine.load(bad)
    seg.unlink()
    with pytest.raises(EngineError, match="missing"):
        Engine.load(bad)
    seg.write_bytes(data)
    meta["format_version"] = 99
    (bad / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(EngineError, match="format version"):
        Engine.load(bad)
    (bad / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(EngineError, match="not valid JSON"):
        Engine.load(bad)
    (bad / "meta.json").unlink()
    with pytest.raises(EngineError, match="meta.json is missing"):
        Engine.load(bad)


def test_corrupt_graph_with_matching_hash_is_named(engine_dir, tmp_path):
    from ptq4ris_core.engine.artifact import sha256
    bad = tmp_path / "eng"
    shutil.copytree(engine_dir, bad)
    (bad / "segmenter.onnx").write_bytes(b"not an onnx graph")
    meta = json.loads((bad / "meta.json").read_text(encoding="utf-8"))
    meta["files"]["segmenter.onnx"] = sha256(bad / "segmenter.onnx")
    (bad / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(EngineError, match="cannot load"):
        Engine.load(bad, backend="onnxruntime")


def test_unknown_backend_provider_and_bad_images(engine_dir):
    with pytest.raises(EngineError, match="unknown backend"):
        Engine.load(engine_dir, backend="tensorflow")
    with pytest.raises(EngineError, match="not available"):
        Engine.load(engine_dir, backend="onnxruntime", providers=["NoSuchExecutionProvider"])
    eng = Engine.load(engine_dir, backend="onnxruntime")
    img = _scene().image
    with pytest.raises(InputError, match="uint8"):
        eng.segment(img.astype(np.float32), "the red circle")
    with pytest.raises(InputError, match="shape"):
        eng.segment(img[..., :2], "the red circle")
    with pytest.raises(InputError, match="empty"):
        eng.segment(img, "  ")
    with pytest.raises(InputError, match="empty"):
        eng.segment(np.zeros((0, 10, 3), np.uint8), "the red circle")
    mask, _ = eng.segment(img[..., 0].copy(), "the red circle")  # greyscale is converted
    assert mask.shape == img.shape[:2]


def test_openvino_properties_reach_the_compiled_graph_and_bad_ones_are_named(engine_dir):
    pytest.importorskip("openvino")
    eng = Engine.load(engine_dir, backend="openvino", openvino_config={"PERFORMANCE_HINT": "LATENCY"})
    assert str(eng._seg.compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    with pytest.raises(EngineError, match="OpenVINO cannot compile"):
        Engine.load(engine_dir, backend="openvino", openvino_config={"NO_SUCH_PROPERTY": 1})


def test_openvino_compile_cache_fills_imports_and_never_serves_a_changed_graph(engine_dir, tiny_model, tmp_path,
                                                                              caplog):
    pytest.importorskip("openvino")
    cache = tmp_path / "cache"
    s = _scene()
    cold = Engine.load(engine_dir, backend="openvino", cache_dir=cache)
    files = lambda: sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())  # noqa: E731
    blobs = files()
    assert len(blobs) == 2  # one compiled blob per graph
    again = Engine.load(engine_dir, backend="openvino", cache_dir=cache)
    assert files() == blobs  # imported, nothing compiled anew
    assert np.array_equal(cold.logits(s.image, s.text), again.logits(s.image, s.text))
    Engine.load(engine_dir, backend="openvino", cache_dir=None)
    Engine.load(engine_dir, backend="openvino", cache_dir=cache, verify=False)  # unverified: never cached
    assert files() == blobs
    # other compile settings get their own blob: an f32 load after a bf16 one computes f32
    # (bf16 first: OpenVINO's own key would hand its blob to the f32 load)
    both = tmp_path / "both"
    Engine.load(engine_dir, backend="openvino:bf16", cache_dir=both)
    f32 = Engine.load(engine_dir, backend="openvino:f32", cache_dir=both)
    assert len([p for p in both.rglob("*") if p.is_file()]) == 4
    assert np.array_equal(f32.logits(s.image, s.text), cold.logits(s.image, s.text))
    # a folder that cannot be made: one warning, and the engine still loads (compiling)
    blocker = tmp_path / "a_file"
    blocker.write_text("", encoding="utf-8")
    with caplog.at_level("WARNING"):
        eng = Engine.load(engine_dir, backend="openvino", cache_dir=blocker / "cache")
    assert "compile cache" in caplog.text and "PTQ4RIS_CACHE_DIR" in caplog.text
    assert np.array_equal(eng.logits(s.image, s.text), cold.logits(s.image, s.text))
    # another engine exported to the same folder is compiled, not served the old one's blob, also when only
    # its weights file changed (the graph file, holding the weights' offsets only, stays byte for byte the same)
    folder = tmp_path / "eng"
    shutil.copytree(engine_dir, folder)
    old = Engine.load(folder, backend="openvino", cache_dir=cache).logits(s.image, s.text)
    other = copy.deepcopy(tiny_model)
    big = next(p for p in other.decoder.parameters() if p.numel() * 4 >= 4096)  # a weight in the .data file
    with torch.no_grad():
        big.mul_(1.5)
    shutil.rmtree(folder)
    export_engine(other, folder, {"model": "tiny"})
    assert (folder / "segmenter.onnx").read_bytes() == (engine_dir / "segmenter.onnx").read_bytes()
    assert (folder / "segmenter.onnx.data").read_bytes() != (engine_dir / "segmenter.onnx.data").read_bytes()
    new = Engine.load(folder, backend="openvino", cache_dir=cache).logits(s.image, s.text)
    ref = Engine.load(folder, backend="openvino", cache_dir=None).logits(s.image, s.text)
    assert np.array_equal(new, ref) and not np.allclose(new, old)


def test_weights_lie_beside_each_graph_and_compute_as_if_inline(engine_dir, tmp_path):
    """Every weight of at least a kilobyte is in ``<graph>.data`` (mapped by ONNX Runtime, not copied); the
    same graph with its weights inline gives the same logits."""
    import onnx
    import onnxruntime as ort
    for graph in ("text_encoder.onnx", "segmenter.onnx"):
        m = onnx.load(str(engine_dir / graph), load_external_data=False)
        external = [t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert external and not [n for n in m.graph.node if n.op_type == "Constant"
                                 and len(n.attribute[0].t.raw_data) >= 1024]
        assert (engine_dir / (graph + ".data")).stat().st_mode & 0o044  # readable by the node's user
    inline = tmp_path / "seg_inline.onnx"
    onnx.save_model(onnx.load(str(engine_dir / "segmenter.onnx")), str(inline))  # loaded in full, saved whole
    eng = Engine.load(engine_dir, backend="onnxruntime")
    s = _scene()
    feeds = eng.feeds(s.image, s.text)
    ref = ort.InferenceSession(str(inline), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.array_equal(eng.logits(s.image, s.text), ref)


def test_backend_spec_with_float_precision_and_its_errors(engine_dir):
    from ptq4ris_core.engine.engine import parse_backend
    assert parse_backend("openvino:bf16") == ("openvino", "bf16")
    assert parse_backend("auto") == ("auto", "auto") and parse_backend("openvino", "f16") == ("openvino", "f16")
    with pytest.raises(EngineError, match="unknown float precision 'int3'"):
        parse_backend("openvino:int3")
    with pytest.raises(EngineError, match="say it once"):
        Engine.load(engine_dir, backend="openvino:bf16", precision="f32")
    with pytest.raises(EngineError, match="ONNX Runtime runs an engine's float parts in f32"):
        Engine.load(engine_dir, backend="onnxruntime:bf16")
    assert Engine.load(engine_dir, backend="onnxruntime").runtime == "onnxruntime"


def test_openvino_float_precision_auto_is_f32_for_a_float_engine_and_bf16_for_a_quantized_one_at_8_bits(engine_dir, tmp_path):
    ov = pytest.importorskip("openvino")
    eng = Engine.load(engine_dir, backend="openvino")
    assert eng.precision == "f32" and eng.runtime == "openvino" and "float parts f32" in eng.describe()
    quantized = tmp_path / "eng"  # meta.json is not hashed: say the engine is quantized
    shutil.copytree(engine_dir, quantized)
    meta = json.loads((quantized / "meta.json").read_text(encoding="utf-8"))
    meta["quantization"] = {"method": "ptq4ris", "bits": "W8A8"}
    (quantized / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    q = Engine.load(quantized, backend="openvino")
    assert q.precision == ("bf16" if has_bf16 else "f32")
    hint = lambda e: str(e._seg.compiled.get_property("INFERENCE_PRECISION_HINT"))  # noqa: E731 - "<Type: 'bfloat16'>"
    assert ("bfloat16" in hint(q)) == has_bf16
    forced = Engine.load(quantized, backend="openvino:f32")
    assert forced.precision == "f32" and "float32" in hint(forced)
    s = _scene()
    assert np.abs(q.logits(s.image, s.text) - forced.logits(s.image, s.text)).max() < 0.5  # bf16: same logits, coarser
    # 4-bit activations: bf16 moved whole activation steps there (AGQ W4A4 failed its self-check): auto is f32
    meta["quantization"] = {"method": "ptq4ris", "bits": "W4A4", "weights": {"layer": {"weight_bits": 4, "input_bits": 4}}}
    (quantized / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert Engine.load(quantized, backend="openvino").precision == "f32"


def test_bench_times_engines_side_by_side_with_profiles(engine_dir):
    from ptq4ris_core.engine.bench import bench, markdown
    res = bench([str(engine_dir), str(engine_dir)], ["onnxruntime"], runs=3, warmup=1, threads=1, progress=False)
    a, b = res["rows"]
    assert a["speedup_vs_first"]["seg_ms"] == 1.0 and a["smaller_than_first"] == 1.0
    for r in (a, b):
        assert 0 < r["seg_ms"]["p50"] <= r["seg_ms"]["p99"] and r["segment_ms"]["p50"] > 0
        assert abs(sum(r["op_profile"].values()) - 1) < 1e-6 and "Gemm" in "".join(r["op_profile"])
        assert r["size_mb"] > 1 and r["load_s"] > 0 and r["load_cached_s"] > 0
    assert res["runs"] == 5 and res["settle_ms"] == 60.0  # one round of five timed calls, after the settle
    assert "segmenter p50" in markdown(res)


def test_bench_block_times_only_after_its_settle():
    """Each engine's turn: untimed calls for the settle time (at least one), then exactly n timed ones."""
    import time

    from ptq4ris_core.engine.bench import _block
    calls = []
    t0 = time.perf_counter()
    times = _block(lambda: calls.append(time.perf_counter()), 0.02, 4)
    assert len(times) == 4 and all(t >= 0 for t in times)
    assert len(calls) > 4 and calls[-4] - t0 >= 0.02  # the first timed call starts after the settle


def test_resize_rgb_antialiases_when_shrinking_and_keeps_flat_colour():
    """A camera frame shrunk to the model's size: a 1-pixel checkerboard becomes its mean grey (no aliasing
    into stripes), a flat colour stays exactly itself, a smooth ramp stays the ramp PIL makes, and a small
    image is enlarged."""
    from PIL import Image
    checker = ((np.indices((480, 640)).sum(0) % 2) * 255).astype(np.uint8)
    small = resize_rgb(np.repeat(checker[..., None], 3, 2), 128)
    assert small.shape == (128, 128, 3) and np.abs(small.astype(int) - 127.5).max() <= 3  # nearest would give 0 or 255
    flat = np.full((480, 640, 3), (200, 30, 90), np.uint8)
    assert (resize_rgb(flat, 128) == np.array((200, 30, 90), np.uint8)).all()
    ramp = np.repeat(np.linspace(0, 255, 640, dtype=np.float32)[None, :, None], 480, 0).repeat(3, 2).astype(np.uint8)
    pil = np.asarray(Image.fromarray(ramp).resize((128, 128), Image.BILINEAR)).astype(int)
    assert np.abs(resize_rgb(ramp, 128).astype(int) - pil).max() <= 2
    assert resize_rgb(flat[:40, :50], 128).shape == (128, 128, 3)


@pytest.mark.parametrize("height,width", [(480, 640), (720, 1280), (480, 848), (256, 384), (130, 128)])
def test_resize_rgb_is_the_area_average_within_one_grey_level(height, width):
    """The box-filter shortcut for sides that are whole multiples of the size gives OpenCV's area average,
    up to one level of rounding between its two passes, on a busy image."""
    import cv2
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ref = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA).astype(int)
    got = resize_rgb(image, 128)
    assert got.shape == (128, 128, 3) and got.dtype == np.uint8 and np.abs(got.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("height,width", [(480, 640), (37, 53), (128, 128)])
def test_mask_from_logits_matches_pil_bilinear_and_its_threshold(height, width):
    """The shared post-processing against a reference: PIL's bilinear resize of the logit margin, the
    threshold as a probability, the score as the mean foreground probability over the mask."""
    from PIL import Image

    from ptq4ris_core.frames import mask_from_logits
    rng = np.random.default_rng(0)  # smooth logits, as a network's are: 16x16 noise enlarged to 128x128
    coarse = rng.normal(0, 3, (2, 16, 16)).astype(np.float32)
    logits = np.stack([np.asarray(Image.fromarray(c, mode="F").resize((128, 128), Image.BILINEAR)) for c in coarse])[None]
    d = logits[0, 1] - logits[0, 0]
    ref = np.asarray(Image.fromarray(d, mode="F").resize((width, height), Image.BILINEAR))
    for thr in (0.5, 0.8):
        mask, score = mask_from_logits(logits, height, width, thr)
        assert mask.shape == (height, width) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        ref_mask = 1 / (1 + np.exp(-ref)) > thr
        assert np.mean((mask == 255) != ref_mask) <= 1e-4
        # enlarging resizes the probability map, not the margin: the same mean within a few thousandths
        tol = 5e-3 if height > 128 else 1e-5
        assert score == pytest.approx(float((1 / (1 + np.exp(-ref[ref_mask]))).mean()), abs=tol)
    empty, score = mask_from_logits(np.stack([np.ones((128, 128)), -np.ones((128, 128))])[None].astype(np.float32), 48, 64)
    assert not empty.any() and score == 0.0


def test_tune_for_frames_stops_the_page_faults_of_each_frame():
    """With freed memory kept, a frame's post-processing reuses the last frame's pages instead of faulting
    them in again (each process starts fresh: the setting is global)."""
    import subprocess
    import sys
    code = """
import resource, sys
import numpy as np
from ptq4ris_core.tuning import tune_for_frames
from ptq4ris_core.frames import mask_from_logits
if sys.argv[1] == "keep":
    assert tune_for_frames() == {"keep_freed_memory": True}
logits = np.random.default_rng(0).normal(0, 3, (1, 2, 128, 128)).astype(np.float32)
for _ in range(3):
    mask_from_logits(logits, 480, 640)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    mask_from_logits(logits, 480, 640)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {mode: int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("keep", "default")}
    assert faults["default"] > 40 * 100  # a 640x480 float map alone is 300 pages
    assert faults["keep"] < faults["default"] / 20


def test_release_freed_memory_returns_what_was_kept():
    """The bench's memory column counts live data: memory kept after freeing goes back before it reads RSS."""
    import subprocess
    import sys
    code = """
import numpy as np
from ptq4ris_core.engine.bench import _rss_mb
from ptq4ris_core.tuning import keep_freed_memory
assert keep_freed_memory()
base = _rss_mb()
blocks = [np.ones(4 << 20, np.uint8) for _ in range(25)]  # 100 MB, then freed: kept by the process
del blocks
with open("/proc/self/statm") as f:
    kept = int(f.read().split()[1]) * 4096 / 1e6
print(kept - base, _rss_mb() - base)
"""
    kept, counted = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True).stdout.split())
    assert kept > 80 and counted < 20
