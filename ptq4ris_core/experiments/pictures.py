"""Pictures for docs/: activation histograms with the chosen quantizer's levels drawn over them,
and the per-layer quantization error of each method.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..calib.calibrate import CalibrationSet
from ..calib.capture import capture_inputs
from ..models import Preprocessor
from ..nn import QuantModule
from ..quant.quantizers import DualRegionGeluQuantizer, DualRegionSoftmaxQuantizer, ElementGroupQuantizer


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _first(model, infos_pred):
    for name, mod in model.named_modules():
        if isinstance(mod, QuantModule):
            for slot, q in mod.quantizers().items():
                if infos_pred(name, slot, q):
                    return name, mod, slot, q
    raise LookupError("no such quantizer in the model")


def _levels(q, x):
    """The dequantized values the quantizer can produce on data like ``x`` (unique outputs)."""
    with torch.no_grad():
        grid = torch.linspace(float(x.min()), float(x.max()), 20001)
        was = q.enabled
        q.enabled = True
        v = q.quantize(grid).unique()
        q.enabled = was
    return v.numpy()


def histograms(qmodel, batches, run, out: Path) -> Path:
    """Three panels: a post-Softmax (DRQ), a post-GELU (DRQ), a BERT Linear input (RORQ groups)."""
    plt = _plt()
    picks = [
        ("post-Softmax (vision, DRQ)", lambda n, s, q: isinstance(q, DualRegionSoftmaxQuantizer), 0),
        ("post-GELU (vision, DRQ)", lambda n, s, q: isinstance(q, DualRegionGeluQuantizer), 0),
        ("BERT Linear input (RORQ)", lambda n, s, q: n.startswith("text_encoder") and n.endswith("intermediate.dense")
         and s == "input_quantizer", 0),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for ax, (title, pred, operand) in zip(axes, picks):
        try:
            name, mod, slot, q = _first(qmodel, pred)
        except LookupError:
            ax.set_title(f"{title}: not in this model")
            continue
        x = capture_inputs(mod, batches, run)[operand]
        if hasattr(mod, "transform_input"):
            x = mod.transform_input(x)
        v = x.flatten().numpy()
        v = v[np.random.default_rng(0).choice(len(v), min(len(v), 400_000), replace=False)]
        log = isinstance(q, DualRegionSoftmaxQuantizer)
        bins = np.logspace(-8, 0, 200) if log else 200
        ax.hist(np.clip(v, 1e-8, None) if log else v, bins=bins, color="#4477aa", alpha=0.8)
        ax.set_yscale("log")
        if log:
            ax.set_xscale("log")
        for lv in _levels(q, x):
            if not log or lv > 0:
                ax.axvline(lv, color="#cc3311", lw=0.4, alpha=0.6)
        extra = ""
        if isinstance(q, DualRegionSoftmaxQuantizer):
            ax.axvline(float(q.split), color="black", ls="--", lw=1.2)
            extra = f"split s = 2^{int(round(np.log2(float(q.split))))}"
        elif isinstance(q, DualRegionGeluQuantizer):
            ax.axvline(0, color="black", ls="--", lw=1.2)
            extra = f"Δ+ = {float(q.delta_pos):.3g}"
        elif isinstance(q, ElementGroupQuantizer):
            extra = f"{q.thresholds.numel()} magnitude groups"
        elif getattr(mod, "in_div", None) is not None:
            extra = f"channel groups folded: r ∈ {sorted(set(np.round(mod.in_div.numpy(), 2).tolist()))[:4]}"
        ax.set_title(f"{title}\n{name} [{q.kind}, {q.bits} bit] {extra}", fontsize=8)
        ax.set_xlabel("value (red: quantization levels)")
    return _save(plt, fig, out)


@torch.no_grad()
def layer_errors(qmodel, batch) -> list[tuple[str, float]]:
    """Relative output error ‖O_q − O‖² / ‖O‖² of each quantized layer in network order; the float
    reference is the same (BN-folded, reparameterized) model with every quantizer switched off."""
    mods = {n: m for n, m in qmodel.named_modules() if isinstance(m, QuantModule) and m.quantizers()}
    quants = [q for m in mods.values() for q in m.quantizers().values()]
    outs: dict[str, list] = {n: [] for n in mods}
    hooks = [m.register_forward_hook(lambda _m, _a, o, n=n: outs[n].append(o.float())) for n, m in mods.items()]
    try:
        for enabled in (False, True):
            for q in quants:
                q.enabled = enabled
            qmodel(*batch)
    finally:
        for h in hooks:
            h.remove()
        for q in quants:
            q.enabled = True
    return [(n, float(((o[1] - o[0]) ** 2).sum() / ((o[0] ** 2).sum() + 1e-12))) for n, o in outs.items()]


def per_layer_error(qmodels: dict, batch, out: Path) -> Path:
    """One line per method: each layer's relative error inside its fully quantized model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(14, 4.5))
    for label, qm in qmodels.items():
        errs = layer_errors(qm, batch)
        ax.semilogy([e for _, e in errs], label=label, lw=1)
    ax.set_xlabel("quantized layer, in network order (text encoder, then vision and fusion, then decoder)")
    ax.set_ylabel("relative output error")
    ax.legend()
    ax.set_title("Per-layer quantization error")
    return _save(plt, fig, out)


def calib_batches(cfg, n=8):
    return CalibrationSet(n=n, seed=123).build(cfg, Preprocessor(cfg))


def main(argv=None):
    """Draw both pictures from the calibrated cells that ``ptq4ris table --save DIR`` kept."""
    import argparse

    from ..calib.saved import load_quantized
    ap = argparse.ArgumentParser(description="Activation histograms with quantizer levels, and per-layer error "
                                 "of each method, from the cells saved by 'ptq4ris table --save DIR'.")
    ap.add_argument("--cells", required=True, help="the folder given to 'ptq4ris table --save'")
    ap.add_argument("--bits", default="W4A8")
    ap.add_argument("--methods", default="rtn,ptq4vit,repqvit,ptq4ris")
    ap.add_argument("--out", default="docs/pictures")
    a = ap.parse_args(argv)
    models = {}
    for m in a.methods.split(","):
        folder = Path(a.cells) / f"{m}_{a.bits}"
        if folder.exists():
            models[m] = load_quantized(folder)[0].eval()
    if "ptq4ris" not in models:
        raise SystemExit(f"no ptq4ris_{a.bits} cell in {a.cells}; run 'ptq4ris table --save {a.cells}' first")
    q = models["ptq4ris"]
    batches = calib_batches(q.cfg)
    run = lambda b: q(*b)  # noqa: E731
    with torch.no_grad():
        print(histograms(q, batches[:1], run, Path(a.out) / f"histograms_ptq4ris_{a.bits}.png"))
        print(per_layer_error(models, batches[0], Path(a.out) / f"per_layer_error_{a.bits}.png"))


if __name__ == "__main__":
    main()
