"""Where a low-bit setting loses: calibrate once per part of the network with that part raised to
8 bits (W8A8) and the rest at the setting under study; the mIoU each part wins back is its share.

    python -m ptq4ris_core.experiments.sensitivity --method 'ptq4ris:drq=false,rorq=element' \
        --bits W4A4 --out docs/results/sensitivity_w4a4
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# The default model's parts, as module-name patterns (a custom model names its own).
PARTS = {
    "text encoder": ["text_encoder.*"],
    "vision encoder": ["patch_embed*", "stages.*", "merges.*"],
    "fusion": ["fusions.*"],
    "decoder": ["decoder.*"],
}


def sensitivity(fp_model, method: str, bits: str, parts: dict = PARTS, limit: int = 1000, calib_n: int = 32,
                seed: int = 0, progress: bool = True, out: Path | None = None) -> list[dict]:
    from ..calib.calibrate import CalibrationSet, calibrate
    from ..config import parse_bits
    from ..evaluate import evaluate_model
    from ..methods import get_method
    from ..presets import parse_method_spec

    name, options = parse_method_spec(method)
    w, a = parse_bits(bits)
    keep_float = [tuple(o) for o in fp_model.quant_layout().get("float", [])]  # stays float in every run
    runs = [("none (all at " + bits.upper() + ")", [])] + [
        (part, [(p, {"w_bits": 8, "a_bits": 8}) for p in patterns] + keep_float) for part, patterns in parts.items()]
    rows = []
    for part, overrides in runs:
        model, report = calibrate(fp_model, get_method(name, **options), w, a, CalibrationSet(calib_n, seed),
                                  overrides=overrides, progress=progress)
        scores = evaluate_model(model, "test", limit, progress=progress)
        rows.append({"at W8A8": part, "mIoU": round(100 * scores["mIoU"], 2),
                     "oIoU": round(100 * scores["oIoU"], 2), "calib_s": round(report["seconds"])})
        if out:
            _write(rows, out, method, bits, limit)
    return rows


def _write(rows, out: Path, method, bits, limit):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"method": method, "bits": bits, "limit": limit, "rows": rows},
                                                   indent=1), encoding="utf-8")
    base = rows[0]["mIoU"]
    lines = [f"{method} at {bits}, one part raised to W8A8 ({limit} test scenes)", "",
             "| part at W8A8 | mIoU | won back | oIoU | calib (s) |", "|---|---|---|---|---|"]
    lines += [f"| {r['at W8A8']} | {r['mIoU']:.2f} | {r['mIoU'] - base:+.2f} | {r['oIoU']:.2f} | {r['calib_s']} |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--method", default="ptq4ris", help="a method with options, e.g. 'ptq4ris:drq=false'")
    ap.add_argument("--bits", default="W4A4")
    ap.add_argument("--limit", type=int, default=1000, help="test scenes per run")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--out", type=Path, help="path stem for the Markdown and JSON")
    ap.add_argument("--part", action="append", metavar="NAME=PATTERN[,PATTERN]",
                    help="a part to raise, by module-name patterns, e.g. 'keys=fusions.*.pwam.key'; repeat it "
                         "(default: text encoder, vision encoder, fusion, decoder)")
    args = ap.parse_args(argv)
    parts = PARTS
    if args.part:
        try:
            parts = {name: patterns.split(",") for name, patterns in (p.split("=", 1) for p in args.part)}
        except ValueError:
            ap.error("--part takes NAME=PATTERN[,PATTERN], e.g. 'keys=fusions.*.pwam.key'")
    from ..models import load_model
    for r in sensitivity(load_model(args.model), args.method, args.bits, parts, limit=args.limit,
                         calib_n=args.calib, out=args.out):
        print(r)


if __name__ == "__main__":
    main()
