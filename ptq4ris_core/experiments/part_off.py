"""Where a calibrated model's drop lives: its quantizers switched off one part at a time, without
recalibrating, each run scored on the same scenes. Cheaper than ``sensitivity`` (one calibration, one
evaluation per part) and it reads any split, so it shows which part loses on a scene style the
calibration never drew from. Later layers were calibrated on the quantized outputs of earlier ones, so a
part's figure is what its quantizers cost in this calibration, not a recalibrated optimum.

    python -m ptq4ris_core.experiments.part_off --quantized runs/w8a8 --split heldout --out docs/results/x

Finer parts by name: ``--part "text weights=text_encoder.*.weight_quantizer"`` (repeatable; glob patterns
over the quantizers' module names, several joined by commas), instead of the four parts of the network.
"""
from __future__ import annotations

import argparse
import json
from fnmatch import fnmatchcase
from pathlib import Path

from .sensitivity import PARTS


def part_quantizers(model, patterns) -> list:
    """The quantizers inside modules whose names match one of ``patterns``."""
    from ..quant.base import Quantizer
    return [m for name, m in model.named_modules()
            if isinstance(m, Quantizer) and any(fnmatchcase(name, p) for p in patterns)]


def set_part_quantizers(model, patterns, enabled: bool) -> int:
    """Switch every quantizer inside modules matching ``patterns`` on or off; returns how many."""
    found = part_quantizers(model, patterns)
    for q in found:
        q.enabled = enabled
    return len(found)


def part_off(folder, split: str = "test", limit: int = 1000, parts: dict = PARTS, target: str = "portable",
             progress: bool = True) -> dict:
    """``target``: the weights as an engine of that export target stores them (``ptq4ris eval``'s default too)."""
    from ..calib.saved import load_quantized
    from ..engine.targets import weights_for_target
    from ..evaluate import evaluate_model
    from ..models import load_model
    model, meta = load_quantized(folder)
    for part, patterns in parts.items():  # before any scoring: a typo costs seconds, not a run
        if not part_quantizers(model, patterns):
            raise ValueError(f"part {part!r}: no quantizer's name matches {', '.join(patterns)} (names look like "
                             f"'fusions.0.pwam.key.weight_quantizer')")
    score = lambda m: evaluate_model(m, split, limit, progress=progress)  # noqa: E731
    rows = [{"float": "FP32 model", **_short(score(load_model(meta["base"]["name"])))}]
    with weights_for_target(model, target) as target:
        rows.append({"float": "nothing (as calibrated)", **_short(score(model))})
        for part, patterns in parts.items():
            n = set_part_quantizers(model, patterns, False)
            rows.append({"float": part, "quantizers_off": n, **_short(score(model))})
            set_part_quantizers(model, patterns, True)
    return {"quantized": str(folder), "bits": meta["bits"], "method": meta["method"], "target": target,
            "split": split, "limit": limit, "rows": rows}


def _short(scores: dict) -> dict:
    row = {"mIoU": round(100 * scores["mIoU"], 2), "oIoU": round(100 * scores["oIoU"], 2)}
    row.update({k: round(100 * v["mIoU"], 2) for k, v in scores.get("by_kind", {}).items()})
    return row


def markdown(res: dict) -> str:
    kinds = [k for k in res["rows"][0] if k not in ("float", "mIoU", "oIoU", "quantizers_off")]
    quant = res["rows"][1]["mIoU"]
    lines = [f"{res['method']} {res['bits']} ({res['quantized']}, weights as target {res['target']} stores them), one "
             f"part's quantizers off, {res['limit']} {res['split']} scenes", "",
             "| in float | mIoU | won back | oIoU | " + " | ".join(kinds) + " |",
             "|---" * (4 + len(kinds)) + "|"]
    for r in res["rows"]:
        lines.append(f"| {r['float']} | {r['mIoU']:.2f} | {r['mIoU'] - quant:+.2f} | {r['oIoU']:.2f} | "
                     + " | ".join(f"{r[k]:.2f}" for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def parse_part(text: str, ap) -> tuple[str, list[str]]:
    name, sep, globs = text.partition("=")
    patterns = [g.strip() for g in globs.split(",") if g.strip()]
    if not sep or not name.strip() or not patterns:
        ap.error(f"--part {text!r}: give NAME=GLOB[,GLOB...], e.g. --part 'fusion weights=fusions.*.weight_quantizer'")
    return name.strip(), patterns


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quantized", required=True, help="a folder written by 'ptq4ris calibrate'")
    ap.add_argument("--split", default="test", help="test, val or heldout (default test)")
    ap.add_argument("--limit", type=int, default=1000, help="scenes per run (default 1000)")
    from ..engine.cpu import TARGETS
    ap.add_argument("--target", choices=TARGETS, default="portable",
                    help="simulate the weights as an engine of this export target stores them (default portable)")
    ap.add_argument("--part", action="append", default=[], metavar="NAME=GLOB[,GLOB...]",
                    help="a part of your own: the quantizers whose module names match one of the globs "
                    "(repeatable; default: text encoder, vision encoder, fusion, decoder)")
    ap.add_argument("--out", type=Path, help="path stem for the Markdown and JSON")
    args = ap.parse_args(argv)
    parts = dict(parse_part(p, ap) for p in args.part) or PARTS
    res = part_off(args.quantized, args.split, args.limit, parts=parts, target=args.target)
    text = markdown(res)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
