"""A bag evaluation's report: per-frame records in, JSON + Markdown + PNG plots out.

Shared by the offline evaluation and the live replay, so both score frames the same way.
"""
from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..metrics import RISScores, format_summary


def percentiles(values) -> dict:
    v = np.asarray(values, float)
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


@dataclass
class BagReport:
    """Accumulates frames; keeps the ``keep_worst`` lowest-IoU frames' pictures for the report."""

    keep_worst: int = 9
    scores: RISScores = field(default_factory=RISScores)
    latencies: dict = field(default_factory=dict)  # name → list of ms
    frames: list = field(default_factory=list)  # per-frame JSON records
    _worst: list = field(default_factory=list)  # heap of (-iou, index, item)

    def add(self, index: int, stamp_ns: int, command: str, pred, gt=None, image=None, **latency_ms):
        rec = {"index": index, "stamp_ns": stamp_ns, "command": command}
        for k, v in latency_ms.items():
            self.latencies.setdefault(k, []).append(v)
            rec[k] = round(v, 3)
        if gt is not None:
            v = self.scores.add(pred > 0, gt)
            rec["iou"] = round(v, 5)
            if image is not None and self.keep_worst:
                item = (-v, index, {"image": image, "pred": pred, "gt": gt, "text": command, "iou": v})
                if len(self._worst) < self.keep_worst:
                    heapq.heappush(self._worst, item)
                elif -v > self._worst[0][0]:
                    heapq.heapreplace(self._worst, item)
        self.frames.append(rec)

    def summary(self, **extra) -> dict:
        s = {"frames_scored": len(self.scores.ious), "frames": len(self.frames),
             "accuracy": self.scores.summary() if self.scores.ious else None,
             "latency_ms": {k: percentiles(v) for k, v in self.latencies.items()}}
        s.update(extra)
        return s

    def write(self, out, summary: dict, title: str) -> Path:
        """report.json (summary + frames), report.md, iou_hist.png, latency.png, worst_frames.png."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps({"summary": summary, "frames": self.frames}, indent=1), encoding="utf-8")
        try:
            pics = self._plots(out)
        except ModuleNotFoundError:  # a runtime-only install (no matplotlib): the numbers without pictures
            pics = None
        lines = [f"# {title}", ""]
        lines += [f"- {k}: {v}" for k, v in summary.items() if k not in ("accuracy", "latency_ms", "skipped")]
        if summary.get("skipped"):
            lines += ["", "Skipped frames:", ""] + [f"- {r}: {c}" for r, c in summary["skipped"].items()]
        if summary.get("accuracy"):
            lines += ["", "## Accuracy", "", format_summary(summary["accuracy"])]
        lines += ["", "## Latency (ms)", "", "| what | n | mean | p50 | p90 | p99 | max |", "|---|---|---|---|---|---|---|"]
        for k, p in summary["latency_ms"].items():
            if p["n"]:
                lines.append(f"| {k} | {p['n']} | " + " | ".join(f"{p[c]:.2f}" for c in ("mean", "p50", "p90", "p99", "max")) + " |")
        lines += ["", "## Pictures", ""] + ([f"![{p.stem}]({p.name})" for p in pics] if pics is not None else
                                            ["(not drawn: matplotlib is not installed; pip install matplotlib)"])
        (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return out

    def _plots(self, out: Path) -> list[Path]:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from ..plots import mask_grid
        pics = []
        if self.scores.ious:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.hist(self.scores.ious, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
            ax.set_xlabel("IoU per frame")
            ax.set_ylabel("frames")
            ax.set_title(f"IoU: mIoU {np.mean(self.scores.ious):.3f} over {len(self.scores.ious)} frames")
            fig.tight_layout()
            fig.savefig(out / "iou_hist.png", dpi=90)
            plt.close(fig)
            pics.append(out / "iou_hist.png")
        if any(self.latencies.values()):
            fig, ax = plt.subplots(figsize=(6, 3.5))
            for k, v in self.latencies.items():
                if v:
                    ax.hist(v, bins=40, alpha=0.6, label=f"{k} (p50 {np.median(v):.1f} ms)")
            ax.set_xlabel("ms")
            ax.set_ylabel("frames")
            ax.legend(fontsize=8)
            ax.set_title("latency distribution")
            fig.tight_layout()
            fig.savefig(out / "latency.png", dpi=90)
            plt.close(fig)
            pics.append(out / "latency.png")
        if self._worst:
            items = [it for _, _, it in sorted(self._worst, key=lambda t: -t[0])]
            pics.append(mask_grid(items, out / "worst_frames.png"))
        return pics
