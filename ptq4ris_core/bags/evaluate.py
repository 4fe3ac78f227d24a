"""``ptq4ris bag eval``: score an engine on a bag offline, frame by frame, deterministically."""
from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from .read import BagFrames
from .report import BagReport


def evaluate_bag(bag, engine, out=None, image_topic=None, command_topic=None, gt_topic=None, command=None,
                 threshold: float = 0.5, progress: bool = True) -> dict:
    """Run ``engine.segment`` on every usable frame; the summary (and a report folder when ``out``)."""
    report = BagReport()
    t_start = time.perf_counter()
    with BagFrames(bag, image_topic=image_topic, command_topic=command_topic, gt_topic=gt_topic,
                   command=command) as frames:
        for f in tqdm(frames, total=frames.n_images, desc="bag eval", unit="frame", disable=not progress,
                      dynamic_ncols=True):
            t = time.perf_counter()
            mask, _ = engine.segment(f.image, f.command, threshold=threshold)
            report.add(f.index, f.stamp_ns, f.command, mask, f.gt, f.image,
                       segment=(time.perf_counter() - t) * 1000)
        summary = report.summary(
            bag=str(bag), engine=getattr(engine, "describe", lambda: type(engine).__name__)(),
            image_topic=frames.image_topic, command_topic=frames.command_topic or f"--command {command!r}",
            gt_topic=frames.gt_topic, image_messages=frames.n_images, skipped=dict(frames.skipped),
            frames_without_ground_truth=frames.gt_missing, text_encodes=getattr(engine, "text_encodes", None),
            wall_s=round(time.perf_counter() - t_start, 2))
    if out is not None:
        report.write(Path(out), summary, f"Bag evaluation: {Path(bag).name}")
        summary["report"] = str(out)
    return summary
