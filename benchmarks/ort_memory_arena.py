"""ONNX Runtime's CPU memory arena and memory-pattern planning against the process's memory and speed.

    .venv/bin/python benchmarks/ort_memory_arena.py --engine engines/default_w8a8 --frames 300 [--json out.json]

Each setting runs in a fresh process (alternating, ``--rounds`` times): ``Engine.load`` with the
ONNX Runtime sessions' options as given, then ``segment()`` on 640x480 frames; reported: resident memory
after load and after the frames, and the median ``segment()`` time over the second half of the frames.
"""
import argparse
import json
import statistics
import subprocess
import sys

PROBE = """
import sys, time
import onnxruntime as ort
arena, pattern = sys.argv[3] == "1", sys.argv[4] == "1"
_Options = ort.SessionOptions
def options():
    so = _Options()
    so.enable_cpu_mem_arena, so.enable_mem_pattern = arena, pattern
    return so
ort.SessionOptions = options
from ptq4ris_core.engine import Engine
import numpy as np
engine = Engine.load(sys.argv[1], backend="onnxruntime")
rss = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]) / 1000
image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
after_load, times = rss(), []
for i in range(int(sys.argv[2])):
    t = time.perf_counter()
    engine.segment(image, "the red circle on the left" if i % 100 < 50 else "the small blue star")
    times.append(time.perf_counter() - t)
print("PROBE", after_load, rss(), 1000 * sorted(times[len(times) // 2:])[len(times) // 4])
"""

SETTINGS = {"arena on, pattern on (ORT's default)": ("1", "1"), "arena off, pattern on": ("0", "1"),
            "arena off, pattern off": ("0", "0")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    got = {k: [] for k in SETTINGS}
    for _ in range(a.rounds):
        for name, (arena, pattern) in SETTINGS.items():
            out = subprocess.run([sys.executable, "-c", PROBE, a.engine, str(a.frames), arena, pattern],
                                 capture_output=True, text=True, check=True).stdout
            got[name].append([float(v) for v in out.split("PROBE")[1].split()])
    rows = {name: {"rss_after_load_mb": statistics.median(r[0] for r in runs),
                   "rss_after_frames_mb": statistics.median(r[1] for r in runs),
                   "segment_ms_median": statistics.median(r[2] for r in runs), "runs": runs}
            for name, runs in got.items()}
    for name, r in rows.items():
        print(f"{name:40s} RSS {r['rss_after_load_mb']:.0f} MB after load, {r['rss_after_frames_mb']:.0f} MB after "
              f"{a.frames} frames; segment() {r['segment_ms_median']:.2f} ms")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"engine": a.engine, "frames": a.frames, "rounds": a.rounds, "settings": rows}, f, indent=1)


if __name__ == "__main__":
    main()
