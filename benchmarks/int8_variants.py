"""Int8 weight forms of one segmenter graph, timed side by side and checked against the deploy simulation.

    .venv/bin/python benchmarks/int8_variants.py --fp32 engines/fp32 --engine engines/w8a8_vnni \
        [--engine engines/w8a8_portable] [--runs 200] [--json out.json]

For each engine's segmenter.onnx it writes, next to the original (u8 activations x s8 weights, "U8S8"):
- "U8U8": the same weight codes stored as uint8 with zero point 128 (ONNX Runtime's x86 U8U8 GEMMs widen to
  int16 before multiplying: no pair can saturate, so full 8-bit weights stay right without VNNI, if slower).
Each variant runs on ONNX Runtime and on OpenVINO (f32 float parts), interleaved with the FP32 engine's
segmenter on ONNX Runtime (the ratio's reference), and its logits on the engine's golden cases are compared
with what the deploy simulation computed at export (``golden.npz``): relative mean error and mask pixels.
The CPU's int8 features head the output: a figure holds for the CPU it was measured on.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptq4ris_core.engine import Engine  # noqa: E402
from ptq4ris_core.engine.cpu import cpu_int8  # noqa: E402
from ptq4ris_core.engine.golden import compare, read_golden  # noqa: E402


def to_u8u8(src: Path, dst: Path) -> int:
    """Every int8 weight constant read by a DequantizeLinear → uint8 codes + 128, its zero point 128 (uint8)."""
    model = onnx.load(src)
    g = model.graph
    inits = {t.name: t for t in g.initializer}  # constants live as initializers or as Constant nodes
    inits.update({n.output[0]: a.t for n in g.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    done = 0
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in inits:
            continue
        w = inits[n.input[0]]
        if w.data_type != onnx.TensorProto.INT8 or len(w.dims) not in (2, 4) or len(n.input) < 3:
            continue
        zp = inits.get(n.input[2])
        if zp is None or np.any(onnx.numpy_helper.to_array(zp)):
            continue
        codes = onnx.numpy_helper.to_array(w).astype(np.int16) + 128
        w.CopyFrom(onnx.numpy_helper.from_array(codes.astype(np.uint8), w.name))
        # a zero point of its own: the exporter shares equal constants between nodes
        g.initializer.append(onnx.numpy_helper.from_array(np.full(zp.dims, 128, np.uint8), f"{n.input[0]}_zp_u8"))
        n.input[2] = f"{n.input[0]}_zp_u8"
        done += 1
    onnx.save(model, dst)
    return done


def _ort(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda feeds: s.run(None, feeds)[0]


def _ov(path, threads):
    import openvino as ov
    req = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    return lambda feeds: req.infer(feeds)[0].copy()


def _golden_feeds(folder: Path) -> list[tuple[dict, np.ndarray]]:
    """Each golden case's segmenter feeds (through the engine's own text graph) and its simulated logits."""
    eng = Engine.load(folder, backend="onnxruntime", allow_unsafe=True, self_check=False)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    out = []
    for c in read_golden(folder / "golden.npz", meta["self_check"]["cases"]):
        out.append(({"image": c["image"], **eng.text_feeds(c["input_ids"], c["attention_mask"])}, c["logits"]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", required=True, help="the FP32 engine folder (the reference row)")
    ap.add_argument("--engine", action="append", required=True, help="a quantized engine folder; repeat")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    cpu = cpu_int8().describe()
    print(f"CPU: {cpu}")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(a.fp32)
        golden0 = _golden_feeds(Path(a.engine[0]))
        rows = [{"name": "FP32 (onnxruntime)", "run": _ort(fp32 / "segmenter.onnx", a.threads),
                 "feeds": golden0[0][0], "errors": None}]
        for folder in map(Path, a.engine):
            golden = _golden_feeds(folder)
            u8u8 = Path(tmp) / f"{folder.name}_u8u8.onnx"
            n = to_u8u8(folder / "segmenter.onnx", u8u8)
            for form, path in (("U8S8", folder / "segmenter.onnx"), (f"U8U8 ({n} layers)", u8u8)):
                for rt, make in (("onnxruntime", _ort), ("openvino", _ov)):
                    run = make(path, a.threads)
                    errs = [compare(run(f), want, "f32") for f, want in golden]
                    rows.append({"name": f"{folder.name} {form} ({rt})", "run": run, "feeds": golden[0][0],
                                 "errors": {"relative_mean_error": max(e["relative_mean_error"] for e in errs),
                                            "mask_pixels_differing": max(e["mask_pixels_differing"] for e in errs)}})
        for r in rows:
            for _ in range(10):
                r["run"](r["feeds"])
            r["ms"] = []
        for _ in tqdm(range(a.runs // 5), desc="variants", unit="round"):
            for r in rows:  # interleaved, a block of 5 after a short settle, as ptq4ris bench does
                t_end = time.perf_counter() + 0.06
                while time.perf_counter() < t_end:
                    r["run"](r["feeds"])
                for _ in range(5):
                    t = time.perf_counter()
                    r["run"](r["feeds"])
                    r["ms"].append((time.perf_counter() - t) * 1000)
    ref = float(np.median(rows[0]["ms"]))
    lines = [f"CPU: {cpu}\n", "| segmenter | p50 (ms) | x FP32 ONNX Runtime | golden: relative mean error | "
             "golden: mask pixels differing |", "|---|---|---|---|---|"]
    out = []
    for r in rows:
        p50 = float(np.median(r["ms"]))
        e = r["errors"]
        lines.append(f"| {r['name']} | {p50:.2f} | {ref / p50:.2f}x | "
                     + (f"{100 * e['relative_mean_error']:.2f} % | {100 * e['mask_pixels_differing']:.3f} % |" if e
                        else "– | – |"))
        out.append({"name": r["name"], "p50_ms": p50, "x_fp32_ort": ref / p50, "errors": e})
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps({"cpu": cpu, "rows": out}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
