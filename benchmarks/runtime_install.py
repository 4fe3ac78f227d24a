"""The robot's runtime install, measured: disk, import + engine load, and memory after 1000 frames.

    .venv/bin/python benchmarks/runtime_install.py --engine ENGINE [--venv /tmp/ptq4ris-runtime] [--json out.json]

Builds a fresh venv with ``pip install ".[runtime]"`` (the base install plus ONNX Runtime and rosbags; no
torch), then, inside it: the venv's size on disk; the wall time of ``from ptq4ris_core.engine import Engine``
plus ``Engine.load`` (median of 5 fresh processes); and the process's resident memory after 1000
``segment()`` calls on 640x480 frames. The ROS node's own memory on the runtime is measured by
``benchmarks/node_throughput.py --runtime-only`` (ROS itself comes from the robot's system, not this venv).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys, time
t = time.perf_counter()
from ptq4ris_core.engine import Engine
engine = Engine.load(sys.argv[1], backend="onnxruntime")
load_s = time.perf_counter() - t
import numpy as np
rss = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]) / 1000
image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
after_load = rss()
if sys.argv[2] != "0":
    for i in range(int(sys.argv[2])):
        engine.segment(image, "the red circle on the left" if i % 100 < 50 else "the small blue star")
print("PROBE", load_s, after_load, rss(), "torch" in sys.modules and sys.modules["torch"] is not None)
"""


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, help="an engine folder (e.g. the demo's engines/default_w8a8)")
    ap.add_argument("--venv", default="/tmp/ptq4ris-runtime", help="where to build the runtime venv (replaced)")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--json")
    a = ap.parse_args()
    venv = Path(a.venv)
    if venv.exists():
        subprocess.run(["rm", "-rf", str(venv)], check=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"{ROOT}[runtime]"], check=True)
    install_s = time.perf_counter() - t
    packages = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                              check=True).stdout.split()
    engine = str(Path(a.engine).resolve())
    loads = []
    for _ in range(5):
        out = subprocess.run([str(py), "-c", PROBE, engine, "0"], capture_output=True, text=True, cwd="/",
                             check=True).stdout
        loads.append(float(out.split("PROBE")[1].split()[0]))
    out = subprocess.run([str(py), "-c", PROBE, engine, str(a.frames)], capture_output=True, text=True, cwd="/",
                         check=True).stdout.split("PROBE")[1].split()
    res = {"venv_mb": round(du_mb(venv), 1), "install_s": round(install_s, 1),
           "import_and_load_s_median": round(statistics.median(loads), 3), "import_and_load_s": loads,
           "rss_mb_after_load": float(out[1]), f"rss_mb_after_{a.frames}_frames": float(out[2]),
           "torch_imported": out[3] == "True", "has_torch_installed": any(p.startswith("torch==") for p in packages),
           "packages": packages, "engine": a.engine}
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
