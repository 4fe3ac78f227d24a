"""How far block reconstruction brings each block below rounding to nearest, per learning rate of the
rounding variables: one layer-wise calibration of a preset, then the same reconstruction from it at each
rate. Reports each block's error with learned rounding over its error with rounding to nearest (on the
calibration data; below 1 is better, a block above 1 keeps rounding to nearest).

    python -m ptq4ris_core.experiments.reconstruction_lr --bits W4A8 --calib 16 --iters 200 \\
        --lrs 0.001,0.01,0.03 --blocks text,vision --out docs/results/recon/lr_study
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--bits", default="W4A8", help="the preset calibration/BITS.yaml is calibrated once")
    ap.add_argument("--calib", type=int, default=16, help="calibration pairs (train split)")
    ap.add_argument("--iters", type=int, default=200, help="reconstruction steps per block")
    ap.add_argument("--lrs", default="0.001,0.01,0.03", help="learning rates of the rounding variables to compare")
    ap.add_argument("--blocks", default="text,vision", help="parts whose blocks are fitted (or 'all')")
    ap.add_argument("--out", required=True, help="folder for report.json and ratios.png")
    a = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..calib.calibrate import CalibrationSet, calibrate
    from ..calib.reconstruct import ReconSettings, parse_domains, reconstruct
    from ..config import parse_bits
    from ..methods import get_method
    from ..models import Preprocessor, load_model
    from ..presets import cell_method

    fp = load_model(a.model)
    name, options = cell_method("ptq4ris@preset", a.bits)
    w, act = parse_bits(a.bits)
    calib = CalibrationSet(a.calib)
    q, _ = calibrate(fp, get_method(name, **options), w, act, calib)
    batches = CalibrationSet(a.calib).build(fp.cfg, Preprocessor(fp.cfg))
    layout = q.quant_layout()
    runs = {}
    for lr in (float(x) for x in a.lrs.split(",")):
        model = copy.deepcopy(q)
        torch.manual_seed(0)
        report = reconstruct(model, batches, lambda m, b: m(*b),
                             ReconSettings(iters=a.iters, lr=lr, domains=parse_domains(a.blocks)),
                             layout["blocks"], layout["domains"])
        runs[str(lr)] = {"seconds": report["seconds"], "ratio": {
            n: (b["error_learned"] / b["error_nearest"] if b.get("error_learned") is not None else None)
            for n, b in report["blocks"].items()}}
        print(lr, json.dumps(runs[str(lr)]["ratio"]), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"bits": a.bits, "calib": a.calib, "iters": a.iters,
                                                 "options": options, "runs": runs}, indent=1) + "\n")
    fig, ax = plt.subplots(figsize=(11, 4))
    names = list(next(iter(runs.values()))["ratio"])
    for lr, r in runs.items():
        ax.plot(range(len(names)), [r["ratio"][n] if r["ratio"][n] is not None else float("nan") for n in names],
                marker="o", label=f"lr {lr}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
    ax.set_ylabel("block error: learned / nearest")
    ax.set_title(f"{a.bits} preset, {a.calib} pairs, {a.iters} steps per block")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ratios.png", dpi=110)


if __name__ == "__main__":
    main()
