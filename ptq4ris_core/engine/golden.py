"""The engine's self-check: a few golden cases stored at export and run at every load.

At export, each case's inputs (a resized test scene and a command's token ids) and the logits that the
deploy simulation computes for them go into ``golden.npz``, which meta.json hashes like every other file.
``Engine.load`` runs them through both graphs on the CPU and runtime at hand and refuses an engine whose
logits diverge beyond the tolerance the parity tests use. No flag table can replace this: it catches int16
saturation, a runtime version that computes differently, and kernels we have never met.
No torch here: the runtime imports this; the export writes the file (``export.py``).
"""
from __future__ import annotations

import time

import numpy as np

GOLDEN_FILE = "golden.npz"
# The parity tests' tolerance on mask logits (f32 float parts): the mean and the largest absolute error.
# QLinearConv requantizes in integer arithmetic, so a rare element may land one output step away.
F32_MEAN_ERROR, F32_MAX_ERROR = 1e-3, 0.1
# bf16/f16 float parts round every float op: only the masks are compared, pixel by pixel.
REDUCED_MASK_DISAGREEMENT = 0.01


def write_golden(path, cases: list[dict]) -> list[str]:
    """Save ``cases`` ({text, image, input_ids, attention_mask, logits} of arrays); returns their texts."""
    arrays = {f"{i}/{k}": np.asarray(v) for i, c in enumerate(cases) for k, v in c.items() if k != "text"}
    np.savez(path, **arrays)
    return [c["text"] for c in cases]


def read_golden(path, texts: list[str]) -> list[dict]:
    with np.load(path, allow_pickle=False) as z:
        return [{"text": t, **{k: z[f"{i}/{k}"] for k in ("image", "input_ids", "attention_mask", "logits")}}
                for i, t in enumerate(texts)]


def compare(got: np.ndarray, want: np.ndarray, precision: str) -> dict:
    """How far one case's logits are from the simulation's, and whether that is within tolerance."""
    err = np.abs(got.astype(np.float64) - want)
    differ = float((got.argmax(1) != want.argmax(1)).mean())
    if precision == "f32":
        ok = bool(err.mean() < F32_MEAN_ERROR and err.max() < F32_MAX_ERROR)
        limit = f"mean < {F32_MEAN_ERROR:g} and max < {F32_MAX_ERROR:g}"
    else:
        ok = differ <= REDUCED_MASK_DISAGREEMENT
        limit = f"mask pixels differing <= {REDUCED_MASK_DISAGREEMENT:.0%} ({precision} float parts)"
    return {"mean_abs_error": float(err.mean()), "max_abs_error": float(err.max()),
            "mask_pixels_differing": differ, "ok": ok, "tolerance": limit}


def run_self_check(cases: list[dict], encode, segment, precision: str) -> dict:
    """Run every case: ``encode(ids, mask) -> segmenter feeds``, ``segment(feeds) -> logits``."""
    t = time.perf_counter()
    results = []
    for c in cases:
        feeds = {"image": c["image"], **encode(c["input_ids"], c["attention_mask"])}
        results.append({"text": c["text"], **compare(segment(feeds), c["logits"], precision)})
    return {"passed": all(r["ok"] for r in results), "cases": results,
            "ms": round(1000 * (time.perf_counter() - t), 1)}


def failure_message(folder, check: dict, runtime: str, cpu_line: str) -> str:
    bad = next(r for r in check["cases"] if not r["ok"])
    return (f"{folder}: the engine's self-check failed on {runtime}: golden case {bad['text']!r} gives logits "
            f"{bad['mean_abs_error']:.4g} (mean) / {bad['max_abs_error']:.4g} (max) from what the deploy simulation "
            f"computed at export ({bad['mask_pixels_differing']:.1%} of mask pixels differ; tolerance "
            f"{bad['tolerance']}). This CPU: {cpu_line}. The masks would be wrong here. If the engine stores full "
            f"8-bit weights, re-export it with '--target portable'; otherwise try the other backend, or report "
            f"the runtime's version (allow_unsafe=True loads it anyway, for experiments)")
