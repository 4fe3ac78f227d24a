"""Referring-segmentation metrics as LAVT and PTQ4RIS report them (see METHODS.md).

Per sample IoU (an empty union is 1 only when both masks are empty), mIoU = mean IoU,
oIoU = total intersection / total union, prec@X = share of samples with IoU > X.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

PREC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def iou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, int, int]:
    """(IoU, intersection, union) of two boolean masks of the same shape."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    inter = int(np.logical_and(pred, gt).sum())
    union = int(np.logical_or(pred, gt).sum())
    return (inter / union if union else 1.0), inter, union


@dataclass
class RISScores:
    """Accumulates per-sample results; ``summary()`` gives the field's metrics, overall and by kind."""

    ious: list = field(default_factory=list)
    inters: list = field(default_factory=list)
    unions: list = field(default_factory=list)
    kinds: list = field(default_factory=list)

    def add(self, pred, gt, kind: str = "all") -> float:
        v, i, u = iou(pred, gt)
        self.ious.append(v)
        self.inters.append(i)
        self.unions.append(u)
        self.kinds.append(kind)
        return v

    @staticmethod
    def _summarize(ious, inters, unions) -> dict:
        ious = np.asarray(ious, float)
        if len(ious) == 0:
            return {"n": 0}
        total_u = float(np.sum(unions))
        out = {"n": int(len(ious)), "mIoU": float(ious.mean()),
               "oIoU": float(np.sum(inters) / total_u) if total_u else 1.0}
        for t in PREC_THRESHOLDS:
            out[f"prec@{t}"] = float((ious > t).mean())
        return out

    def summary(self) -> dict:
        out = self._summarize(self.ious, self.inters, self.unions)
        by = defaultdict(list)
        for j, k in enumerate(self.kinds):
            by[k].append(j)
        if len(by) > 1 or (by and "all" not in by):
            out["by_kind"] = {k: self._summarize([self.ious[j] for j in js], [self.inters[j] for j in js],
                                                 [self.unions[j] for j in js]) for k, js in sorted(by.items())}
        return out


def format_summary(s: dict) -> str:
    """A small Markdown table of a summary: overall first, then one row per expression kind."""
    cols = ["n", "mIoU", "oIoU"] + [f"prec@{t}" for t in PREC_THRESHOLDS]
    rows = [("all", s)] + list(s.get("by_kind", {}).items())
    lines = ["| split | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows:
        cells = [str(r["n"])] + [f"{100 * r[c]:.2f}" for c in cols[1:]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
