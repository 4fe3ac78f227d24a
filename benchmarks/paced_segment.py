"""segment() back to back against segment() paced like a camera, under several runtime settings.

    .venv/bin/python benchmarks/paced_segment.py --engine runs/eng/w8a8 [--hz 30] [--runs 150] [--json out.json]

A node serving a 30 Hz camera calls the engine every 33 ms; between calls the runtime's threads sleep and
the caches cool. This shows how much that costs on this machine, and whether a runtime setting avoids it.
Two more rows ask where the cost is: the wait between frames spent busy instead of asleep (one core kept
running), and a tiny OpenVINO call made just before each frame, or 2 ms ahead of it (the runtime's threads
woken first). The "1 thread" rows show what a single engine thread loses back to back and keeps under the
camera's pace.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

# (runtime, row name, OpenVINO properties, threads: None = --threads)
SETTINGS = [("openvino", "default", {}, None), ("openvino", "PERFORMANCE_HINT=LATENCY", {"PERFORMANCE_HINT": "LATENCY"}, None),
            ("openvino", "ENABLE_CPU_PINNING", {"ENABLE_CPU_PINNING": True}, None), ("openvino", "1 thread", {}, 1),
            ("onnxruntime", "default", None, None), ("onnxruntime", "1 thread", None, 1)]


def segment_p50(eng, image, text, n: int, hz: float | None = None, busy: bool = False, before=None,
                before_ms: list | None = None, ahead_ms: float = 0.0) -> float:
    """segment() p50 in ms over n calls: back to back, or paced at hz like a camera (``busy``: spin until
    the frame is due instead of sleeping; ``before``: called before each frame, ``ahead_ms`` before it is due
    (0: just before it), timed into ``before_ms``)."""
    def timed_before():
        t = time.perf_counter()
        before()
        before_ms.append((time.perf_counter() - t) * 1000)

    times, t0 = [], time.perf_counter()
    for i in range(n):
        if hz:
            due = t0 + i / hz
            if before and ahead_ms:
                time.sleep(max(0.0, due - ahead_ms / 1000 - time.perf_counter()))
                timed_before()
            if busy:
                while time.perf_counter() < due:
                    pass  # the point of this row: a core kept running until the frame is due
            else:
                time.sleep(max(0.0, due - time.perf_counter()))
        if before and not ahead_ms:
            timed_before()
        t = time.perf_counter()
        eng.segment(image, text)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def _wake_call(threads: int):
    """A tiny OpenVINO graph on the same threads: running it wakes the runtime's workers."""
    import openvino as ov
    import openvino.opset13 as ops
    p = ops.parameter([1, 64, 64, 64], np.float32)
    req = ov.Core().compile_model(ov.Model([ops.relu(p)], [p]), "CPU", {"INFERENCE_NUM_THREADS": threads}).create_infer_request()
    x = np.ones((1, 64, 64, 64), np.float32)
    return lambda: req.infer({0: x})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--hz", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    from ptq4ris_core.tuning import tune_for_frames
    tune_for_frames()  # as the node and the CLI do
    from ptq4ris_core.data import SceneGenerator
    from ptq4ris_core.engine import Engine
    s = SceneGenerator(640, 480).sample("test", 9_500)

    rows = []
    for backend, name, config, threads in SETTINGS:
        kw = {"openvino_config": config} if backend == "openvino" else {}
        eng = Engine.load(a.engine, backend=backend, threads=threads or a.threads, **kw)
        segment_p50(eng, s.image, s.text, 20)
        b2b, paced = segment_p50(eng, s.image, s.text, a.runs), segment_p50(eng, s.image, s.text, a.runs, a.hz)
        rows.append({"backend": backend, "setting": name, "threads": threads or a.threads, "back_to_back_p50_ms": b2b,
                     "paced_p50_ms": paced})
        print(f"{backend:12s} {name:26s} back to back {b2b:6.2f} ms   paced at {a.hz:g} Hz {paced:6.2f} ms", flush=True)
        if backend == "openvino" and name == "default":
            wake = _wake_call(a.threads)
            for variant, kw in (("paced, busy between frames", {"busy": True}),
                                ("paced, threads woken first", {"before": wake}),
                                ("paced, threads woken 2 ms ahead", {"before": wake, "ahead_ms": 2.0})):
                wake_ms = []
                kw = {**kw, "before_ms": wake_ms} if "before" in kw else kw
                p50 = segment_p50(eng, s.image, s.text, a.runs, a.hz, **kw)
                rows.append({"backend": backend, "setting": variant, "back_to_back_p50_ms": b2b, "paced_p50_ms": p50,
                             **({"wake_call_p50_ms": float(np.median(wake_ms))} if wake_ms else {})})
                print(f"{backend:12s} {variant:26s} paced at {a.hz:g} Hz {p50:6.2f} ms"
                      + (f" (the wake call: {np.median(wake_ms):.2f} ms)" if wake_ms else ""), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"engine": a.engine, "hz": a.hz, "runs": a.runs, "rows": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
