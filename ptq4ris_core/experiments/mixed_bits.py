"""Bits per layer along the network, for each mixed-precision method and budget, over the layers'
importance scores (Mix-QSAM's KL importance, LRP relevance). Only the allocation runs here (the layer
study is measured on the first run and cached); ``ptq4ris table --methods mixq-kl,mixq-lrp`` scores them.

    python -m ptq4ris_core.experiments.mixed_bits --budgets 4,6 --out docs/results/mixed/bits
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PART_COLOURS = {"text": "#8c6bb1", "vision": "#2b8cbe", "fusion": "#e6550d", "decoder": "#31a354"}


def allocations(model, methods, budgets, options, progress=True) -> dict:
    """{(method, budget): plan report} and the study they share."""
    from ..methods import get_method
    out, study = {}, None
    for name in methods:
        for b in budgets:
            plan = get_method(name, **options).plan_bits(model, b, b, progress)
            out[(name, b)] = plan["report"]
            study = study or json.loads(Path(plan["report"]["study"]).read_text(encoding="utf-8"))
    return out, study


def picture(plans: dict, study: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = study["layers"]
    x = np.arange(len(layers))
    fig, axes = plt.subplots(1 + len(plans), 1, figsize=(max(10, len(layers) * 0.09), 2.2 * (1 + len(plans))),
                             sharex=True, squeeze=False)
    ax = axes[0, 0]
    colours = [PART_COLOURS.get(l["domain"], "grey") for l in layers]
    kl, lrp = np.asarray(study["kl_importance"]), np.asarray(study["lrp_relevance"])
    top = lambda v: v / v.max() if v.max() > 0 else v  # noqa: E731
    ax.bar(x - 0.2, top(kl), 0.4, color=colours, label="KL importance (Mix-QSAM)")
    ax.bar(x + 0.2, top(lrp), 0.4, color=colours, alpha=0.45, hatch="//", label="LRP relevance")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1.5)
    ax.set_ylabel("importance / max")
    ax.legend(loc="lower left", fontsize=7)
    for part, c in PART_COLOURS.items():
        idx = [i for i, l in enumerate(layers) if l["domain"] == part]
        if idx:
            ax.text(np.mean(idx), 1.1, part, ha="center", color=c, fontsize=8)
    for ax, ((name, budget), rep) in zip(axes[1:, 0], plans.items()):
        bits = [rep["bits"][l["name"]] for l in layers]
        w = [b[0] if b[0] is not None else np.nan for b in bits]
        a = [b[1] if b[1] is not None else np.nan for b in bits]
        ax.step(x, w, where="mid", label="weights", color="black")
        ax.step(x, a, where="mid", label="inputs", color="tab:red", alpha=0.7)
        ax.set_ylim(1.5, 8.5)
        ax.set_yticks([2, 3, 4, 6, 8])
        ax.set_ylabel("bits")
        ratio = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        ax.set_title(f"{name}, budget W{budget}A{budget}: size {ratio(rep['size_vs_uniform'])}, bit-ops "
                     f"{ratio(rep['bops_vs_uniform'])} of uniform; mean weight bits {rep['avg_weight_bits']:.2f}",
                     fontsize=9)
        ax.legend(loc="lower right", fontsize=7)
    axes[-1, 0].set_xlabel("layer (execution order)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--methods", default="mixq-kl,mixq-lrp")
    ap.add_argument("--budgets", default="4,6", help="average bits, e.g. 4,6 (the budget of uniform W4A4, W6A6)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="method option for every method, e.g. study=docs/results/mixed/study.json")
    ap.add_argument("--out", type=Path, required=True, help="path stem for the PNG and JSON")
    a = ap.parse_args(argv)
    from ..models import load_model
    from ..presets import parse_option
    plans, study = allocations(load_model(a.model), a.methods.split(","), [int(b) for b in a.budgets.split(",")],
                               dict(parse_option(o) for o in a.option))
    picture(plans, study, a.out.with_suffix(".png"))
    summary = {f"{m}@{b}": {k: v for k, v in rep.items() if k != "bits"} | {"bits": rep["bits"]}
               for (m, b), rep in plans.items()}
    a.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    for key, rep in summary.items():
        print(f"{key}: mean weight bits {rep['avg_weight_bits']:.2f}, size {rep['size_vs_uniform']}x, "
              f"bit-ops {rep['bops_vs_uniform']}x of uniform, solved in {rep['solve_seconds']} s")


if __name__ == "__main__":
    main()
