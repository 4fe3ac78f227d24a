"""One run, one table: FP first, then every (method, bits) cell calibrated and evaluated on the
same test scenes, with the calibration time. Markdown for people, JSON for machines."""
from __future__ import annotations

import json
from pathlib import Path

from .calib.calibrate import CalibrationSet, calibrate
from .config import parse_bits
from .evaluate import evaluate_model
from .methods import get_method
from .presets import parse_option

COLUMNS = ("mIoU", "oIoU", "prec@0.5", "prec@0.9")


def method_table(fp_model, methods: list[str], bits: list[str], limit: int = 1000, calib_n: int = 32,
                 seed: int = 0, progress: bool = True, out: Path | None = None, on_cell=None) -> dict:
    rows = [{"method": "FP32", "bits": "-", **_scores(evaluate_model(fp_model, "test", limit, progress=progress)),
             "calib_s": None}]
    for b in bits:
        w, a = parse_bits(b)
        for name in methods:
            spec = name.split(":")  # "ptq4ris:rorq=element,drq=false" for ablations
            options = dict(parse_option(kv) for kv in spec[1].split(",")) if len(spec) > 1 else {}
            model, report = calibrate(fp_model, get_method(spec[0], **options), w, a,
                                      CalibrationSet(calib_n, seed), progress=progress)
            rows.append({"method": name, "bits": b.upper(),
                         **_scores(evaluate_model(model, "test", limit, progress=progress)),
                         "calib_s": report["seconds"]})
            if on_cell:
                on_cell(rows[-1])
            if out:
                write(rows, out, limit, calib_n)
    return {"rows": rows, "limit": limit, "calib_n": calib_n}


def _scores(summary: dict) -> dict:
    return {c: summary[c] for c in COLUMNS} | {"by_kind": {k: v["mIoU"] for k, v in summary.get("by_kind", {}).items()}}


def markdown(rows: list[dict]) -> str:
    fp = rows[0]["mIoU"]
    lines = ["| method | bits | mIoU | drop | oIoU | prec@0.5 | prec@0.9 | calib (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        drop = "–" if r["method"] == "FP32" else f"{100 * (r['mIoU'] - fp):+.2f}"
        calib = "–" if r["calib_s"] is None else f"{r['calib_s']:.0f}"
        lines.append(f"| {r['method']} | {r['bits']} | {100 * r['mIoU']:.2f} | {drop} | {100 * r['oIoU']:.2f} | "
                     f"{100 * r['prec@0.5']:.2f} | {100 * r['prec@0.9']:.2f} | {calib} |")
    return "\n".join(lines)


def write(rows, out: Path, limit, calib_n):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(rows) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "limit": limit, "calib_n": calib_n}, indent=1) + "\n")
