"""``ptq4ris bench``: engines side by side in one process, interleaved in short blocks, batch 1.

Per engine and runtime: p50/p90/p99 of the segmenter graph alone (preprocessed image + cached word
features) and of the whole ``segment()`` call on a camera-sized frame (resize, normalise, graph,
upsample, threshold); the process's resident memory added by loading and running it; size on disk;
ratios to the first row; load time, first (OpenVINO compiles) and again (it imports its compile cache);
and an op-type time profile from the runtime's own profiler.
"""
from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .artifact import SEG_GRAPH
from .cpu import cpu_int8
from .engine import Engine, runtime_label


def _rss_mb() -> float:
    """Resident memory of live data: what the process kept after freeing (``tune_for_frames``) is returned first."""
    from ..tuning import release_freed_memory
    release_freed_memory()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def size_on_disk_mb(folder) -> float:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file()) / 1e6


def _frame(width=640, height=480):
    from ..data import SceneGenerator
    s = SceneGenerator(width, height).sample("test", 9_500)
    return s.image, s.text


class TorchEager:
    """PyTorch FP32 eager behind the engine's interface, as the baseline a user would otherwise run."""

    backend = "pytorch"

    def __init__(self, model_name: str, threads: int):
        import torch

        from ..models import load_model
        from ..segment import Segmenter
        torch.set_num_threads(threads)
        self.torch, self.name = torch, model_name
        self.seg = Segmenter(load_model(model_name))
        self.text_features = self.seg.text_features  # (words, mask): PyTorch runs the model as trained

    def preprocess(self, image):
        from ..frames import resize_rgb
        return self.seg.pre.images(resize_rgb(image, self.seg.model.cfg.image_size)[None])

    def feeds(self, image, text):
        words, mask = self.text_features(text)
        return {"image": self.preprocess(image), "words": words, "word_mask": mask}

    def _seg(self, feeds):
        with self.torch.no_grad():
            return self.seg.model.segment_features(feeds["image"], feeds["words"], feeds["word_mask"])

    def segment(self, image, text):
        return self.seg.segment(image, text)

    def describe(self):
        return f"{self.name} FP32 on PyTorch eager"


def op_profile(folder, backend: str, feeds: dict, runs: int = 30, threads: int = 2, precision: str = "f32") -> dict:
    """{op type: share of the segmenter's time}, from ONNX Runtime's profiler or OpenVINO's counters."""
    times = defaultdict(float)
    path = str(Path(folder) / SEG_GRAPH)
    if backend == "onnxruntime":
        import onnxruntime as ort
        with tempfile.TemporaryDirectory() as tmp:
            so = ort.SessionOptions()
            so.enable_profiling, so.profile_file_prefix = True, str(Path(tmp) / "prof")
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            for _ in range(runs):
                sess.run(None, feeds)
            events = json.loads(Path(sess.end_profiling()).read_text(encoding="utf-8"))
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                times[e["args"].get("op_name", "?")] += e["dur"]
    else:
        import openvino as ov
        compiled = ov.Core().compile_model(path, "CPU", {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads,
                                                         "INFERENCE_PRECISION_HINT": precision})
        req = compiled.create_infer_request()
        for _ in range(runs):
            req.infer(feeds)
            for p in req.get_profiling_info():
                if p.status == p.Status.EXECUTED:
                    times[f"{p.node_type} ({p.exec_type})"] += p.real_time.total_seconds() * 1e6
    total = sum(times.values()) or 1.0
    return dict(sorted(((k, v / total) for k, v in times.items()), key=lambda kv: -kv[1]))


def _load_again(folder, backend, threads, cache, allow_unsafe) -> float:
    """A second load: OpenVINO imports what the first compiled into ``cache``; ONNX Runtime loads as before."""
    t = time.perf_counter()
    eng = Engine.load(folder, backend=backend, threads=threads, cache_dir=cache, allow_unsafe=allow_unsafe)
    seconds = time.perf_counter() - t
    del eng
    gc.collect()
    return seconds


def _set_up(folder, backend, threads, cache, image, text, warmup, allow_unsafe=False) -> dict:
    """Load one engine (timed, and timed again from the compile cache), warm it up, and note what it added
    to the process's memory."""
    before = _rss_mb()
    t = time.perf_counter()
    if backend == "pytorch":
        from ..models.store import DEFAULT_WEIGHTS
        eng = TorchEager(folder, threads)
        folder = DEFAULT_WEIGHTS.parent if folder == "default" else Path(folder).parent
    else:
        eng = Engine.load(folder, backend=backend, threads=threads, cache_dir=cache, allow_unsafe=allow_unsafe)
    load_s = time.perf_counter() - t
    feeds = eng.feeds(image, text)
    for _ in range(warmup):
        eng._seg(feeds)
        eng.segment(image, text)
    row = {"engine": str(folder), "backend": eng.backend, "precision": getattr(eng, "precision", "f32"),
           "describe": eng.describe(), "size_mb": size_on_disk_mb(folder), "load_s": load_s, "feeds": feeds,
           "eng": eng, "seg_ms": [], "segment_ms": [], "rss_added_mb": _rss_mb() - before,  # after its warm-up
           **({"target": "float", "why": "PyTorch eager", "self_check": "–"} if backend == "pytorch" else
              {k: v for k, v in eng.report().items() if k in ("target", "why", "self_check")})}
    row["load_cached_s"] = None if backend == "pytorch" else _load_again(folder, backend, threads, cache, allow_unsafe)
    return row


def _block(call, settle_s: float, n: int) -> list[float]:
    """``n`` timed calls (ms) after ``settle_s`` of untimed ones: the runtime that ran before may still have
    worker threads spinning on these two cores (ONNX Runtime's spin for about 30 ms after its last call and
    halve the next runtime's speed meanwhile; measured in docs/RESULTS.md), which is a cost of timing two
    runtimes in one process, not of either engine."""
    t_end = time.perf_counter() + settle_s
    call()
    while time.perf_counter() < t_end:
        call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1000)
    return out


def bench(engines: list[str], backends: list[str], runs: int = 100, warmup: int = 10, threads: int = 2,
          profile: bool = True, progress: bool = True, torch_model: str | None = None, block: int = 5,
          settle_ms: float = 60.0, allow_unsafe: bool = False) -> dict:
    """``torch_model``: also time that model in PyTorch eager (last row). Each engine runs ``block`` timed
    calls in a row, after ``settle_ms`` of untimed ones (``_block``). ``allow_unsafe``: time engines that
    ``Engine.load`` would refuse on this CPU (their masks may be wrong: speed only)."""
    image, text = _frame()
    jobs = [(folder, backend) for folder in engines for backend in backends]
    if torch_model:
        jobs.append((torch_model, "pytorch"))
    with tempfile.TemporaryDirectory(prefix="ptq4ris-bench-cache-") as cache:  # empty: first loads compile
        rows = [_set_up(folder, backend, threads, cache, image, text, warmup, allow_unsafe) for folder, backend in jobs]
    # Interleaved: the engines take turns, round after round, so the machine's noise falls on every engine alike.
    rounds = -(-runs // block)
    for _ in tqdm(range(rounds), desc="bench", unit="round", disable=not progress, dynamic_ncols=True):
        for r in rows:
            r["seg_ms"] += _block(lambda r=r: r["eng"]._seg(r["feeds"]), settle_ms / 1000, block)
            r["segment_ms"] += _block(lambda r=r: r["eng"].segment(image, text), settle_ms / 1000, block)
    out = []
    for r in rows:
        res = {k: r[k] for k in ("engine", "backend", "precision", "describe", "size_mb", "load_s", "load_cached_s",
                                 "rss_added_mb", "target", "why", "self_check")}
        for key in ("seg_ms", "segment_ms"):
            v = np.array(r[key])
            res[key] = {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
                        "p99": float(np.percentile(v, 99)), "mean": float(v.mean())}
        if profile and r["backend"] != "pytorch":
            res["op_profile"] = op_profile(r["engine"], r["backend"], r["feeds"], threads=threads,
                                           precision=r["precision"])
        out.append(res)
    first = out[0]
    for res in out:
        res["speedup_vs_first"] = {k: first[k]["p50"] / res[k]["p50"] for k in ("seg_ms", "segment_ms")}
        res["smaller_than_first"] = first["size_mb"] / res["size_mb"]
    return {"cpu": cpu_int8().describe(), "runs": rounds * block, "block": block, "settle_ms": settle_ms, "warmup": warmup, "threads": threads,
            "frame": list(image.shape), "rows": out}


def _seconds(s) -> str:
    return "–" if s is None else f"{s:.2f}"


def markdown(result: dict, top_ops: int = 6) -> str:
    lines = [f"CPU: {result['cpu']}\n",
             "| engine | runtime | target | size (MB) | load (s), first / again | segmenter p50 / p90 / p99 (ms) | "
             "segment() p50 / p90 / p99 (ms) | speed-up (segmenter, segment()) | smaller | RSS added (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    def names(r):
        return Path(r["engine"]).name, runtime_label(r["backend"], r.get("precision", "f32"))
    for r in result["rows"]:
        s, g = r["seg_ms"], r["segment_ms"]
        lines.append(f"| {' | '.join(names(r))} | {r['target']} | {r['size_mb']:.1f} | {r['load_s']:.2f} / {_seconds(r.get('load_cached_s'))} | "
                     f"{s['p50']:.2f} / {s['p90']:.2f} / {s['p99']:.2f} | {g['p50']:.2f} / {g['p90']:.2f} / {g['p99']:.2f} | "
                     f"{r['speedup_vs_first']['seg_ms']:.2f}x, {r['speedup_vs_first']['segment_ms']:.2f}x | "
                     f"{r['smaller_than_first']:.2f}x | {r['rss_added_mb']:.0f} |")
    for r in result["rows"]:
        if r["backend"] != "pytorch":
            lines.append(f"\n{' on '.join(names(r))}: {r['why']}; self-check {r['self_check']}")
    for r in result["rows"]:
        if r.get("op_profile"):
            ops = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(r["op_profile"].items())[:top_ops])
            lines.append(f"\n{' on '.join(names(r))}, where the segmenter's time goes: {ops}")
    return "\n".join(lines)
