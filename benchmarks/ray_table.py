"""A method table on Ray against the same table in one process, and a table on a simulated cluster that loses
a worker mid-run.

    .venv/bin/python benchmarks/ray_table.py overhead --limit 200 --json out.json
    .venv/bin/python benchmarks/ray_table.py chaos --nodes 8 --cells 32 --json out.json

overhead: the same 4 cells (rtn and repqvit at W8A8 and W4A8 on the default model) in one process, then on a
local Ray of 2 workers with one thread each, each into a fresh folder; wall times side by side and whether
the rows are equal. chaos: ``ray.cluster_utils.Cluster`` with ``--nodes`` nodes of one CPU each on this machine,
a table of ``--cells`` cells (RTN at several bit settings and calibration seeds, on a small model so that
the run takes minutes), and one worker process killed (SIGKILL) while it runs a cell; it reports the cells
that came back and the retries.
"""
import argparse
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path


def overhead(a):
    import torch
    from ptq4ris_core.models import load_model
    from ptq4ris_core.table import method_table
    root = Path(tempfile.mkdtemp(prefix="ray_table_"))
    kw = dict(limit=a.limit, calib_n=a.calib, progress=False, base="default")
    methods, bits = ["rtn", "repqvit"], ["W8A8", "W4A8"]
    t = time.time()
    here = method_table(load_model("default"), methods, bits, save_dir=root / "here", **kw)
    t_here = time.time() - t
    t = time.time()
    there = method_table(load_model("default"), methods, bits, save_dir=root / "there", ray="local", workers=2,
                         threads=1, **kw)
    t_there = time.time() - t
    strip = lambda rows: [{k: v for k, v in r.items() if k != "calib_s"} for r in rows]  # noqa: E731
    return {"cells": len(here["rows"]) - 1, "limit": a.limit, "calib": a.calib, "torch_threads_here": torch.get_num_threads(),
            "seconds_one_process": round(t_here, 1), "seconds_ray_2x1": round(t_there, 1),
            "ratio": round(t_there / t_here, 3), "rows_equal": strip(here["rows"]) == strip(there["rows"]),
            "mIoU": {f"{r['method']} {r['bits']}": [round(r["mIoU"], 6), round(s["mIoU"], 6)]
                     for r, s in zip(here["rows"], there["rows"])}}


def chaos(a):
    import ray
    import torch
    from ray.cluster_utils import Cluster
    from ptq4ris_core.models import RISConfig, RISModel, load_model, save_model
    from ptq4ris_core.models.text_encoder import TextEncoder
    from ptq4ris_core.table import method_table
    root = Path(tempfile.mkdtemp(prefix="ray_chaos_"))
    torch.manual_seed(0)
    cfg = RISConfig(image_size=64, embed_dim=16, depths=(1, 2, 1, 1), heads=(1, 2, 2, 4), window=4, decoder_width=16,
                    stem_width=8)
    base = save_model(RISModel(cfg, TextEncoder.pretrained()).eval(), root / "small.safetensors", dtype=torch.float32)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(a.nodes - 1):
        cluster.add_node(num_cpus=1)
    repo = str(Path(__file__).resolve().parents[1])
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}})
    bits = ["W8A8", "W6A6", "W4A8", "W4A4"]
    methods = ["rtn", "ptq4vit", "repqvit", "repqvit:clip=true", "ptq4ris", "ptq4ris:rorq=element",
               "ptq4ris:rorq=none", "ptq4ris:drq=false"][:max(1, a.cells // len(bits))]
    killed = {}

    def kill_one_running_worker():
        import psutil
        time.sleep(a.kill_after)
        while not killed:  # a worker names itself ray::<task> while it runs one
            for p in psutil.process_iter(["pid", "cmdline"]):
                if (p.info["cmdline"] or [""])[0].startswith("ray::run_one"):
                    try:
                        os.kill(p.info["pid"], signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    killed.update(pid=p.info["pid"], at_s=round(time.time() - t, 1))
                    return
            time.sleep(0.5)

    t = time.time()
    threading.Thread(target=kill_one_running_worker, daemon=True).start()
    res = method_table(load_model(base), methods, bits, limit=a.limit, calib_n=2, progress=True, base=str(base),
                       save_dir=root / "cells", ray=cluster.address, threads=1)
    seconds = time.time() - t
    ray.shutdown()
    cluster.shutdown()
    return {"nodes": a.nodes, "cells": len(methods) * len(bits), "rows": len(res["rows"]) - 1,
            "missing": res["missing"], "killed_worker": killed, "seconds": round(seconds, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["overhead", "chaos"])
    ap.add_argument("--limit", type=int, default=200, help="test scenes per cell")
    ap.add_argument("--calib", type=int, default=8, help="calibration pairs per cell (overhead)")
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--cells", type=int, default=32)
    ap.add_argument("--kill-after", type=float, default=20.0, help="seconds into the chaos run")
    ap.add_argument("--json")
    a = ap.parse_args()
    res = overhead(a) if a.what == "overhead" else chaos(a)
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
