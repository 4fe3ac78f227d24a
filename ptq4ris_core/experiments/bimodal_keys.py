"""Which attentions of a model have bimodal post-Key activations (BIG, PTQ4SAM), with their histograms
before and after the sign fold.

    python -m ptq4ris_core.experiments.bimodal_keys --scenes 32 --out docs/results/bimodal_keys
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenes", type=int, default=32, help="calibration scenes (train split) the keys come from")
    ap.add_argument("--out", required=True, help="folder for report.json and keys.png")
    a = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..calib.big import capture_keys, integrate_bimodal, key_projections
    from ..data import SceneGenerator
    from ..models import Preprocessor, load_model

    model = load_model(a.model).eval()
    gen, pre = SceneGenerator(model.cfg.image_size), Preprocessor(model.cfg)
    samples = [gen.sample("train", i) for i in range(a.scenes)]
    batch = (pre.images(np.stack([s.image for s in samples])), *pre.texts([s.text for s in samples]))
    run = lambda: model(*batch)  # noqa: E731
    with torch.no_grad():
        before = capture_keys(model, key_projections(model), run)
        report = integrate_bimodal(model, run)
        after = capture_keys(model, key_projections(model), run)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"model": a.model, "scenes": a.scenes, "attentions": report}, indent=2))
    cols = 4
    rows = -(-len(before) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, before):
        ax.hist(before[name].flatten().numpy(), bins=120, alpha=0.6, label="before", density=True)
        if report[name]["flipped"]:
            ax.hist(after[name].flatten().numpy(), bins=120, alpha=0.6, label="after BIG", density=True)
        ax.set_title(f"{name} ({report[name]['peaks']} peak{'s' if report[name]['peaks'] != 1 else ''})", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(before):]:
        ax.axis("off")
    fig.suptitle("post-Key activations, pooled over channels", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "keys.png", dpi=110)
    n = sum(r["bimodal"] for r in report.values())
    print(f"{n} of {len(report)} attentions bimodal; report and histograms in {out}")


if __name__ == "__main__":
    main()
