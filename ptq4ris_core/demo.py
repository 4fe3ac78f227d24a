"""``make demo``: the main job on the default model, end to end, with what it costs.

Now: evaluate the FP32 model on test scenes, segment a few scenes of another size to PNG,
and time PyTorch FP32 at batch 1. (Quantization, the engine and the ROS 2 replay join here
as they land.)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from .data import SceneGenerator
from .evaluate import evaluate_model
from .metrics import format_summary, iou
from .models import load_model
from .plots import mask_grid
from .segment import Segmenter


def main(argv=None):
    ap = argparse.ArgumentParser(description="The PTQ4RIS-ROS demo on the default model.")
    ap.add_argument("--out", default="demo_out", help="folder for the pictures and JSON (default demo_out)")
    ap.add_argument("--limit", type=int, default=300, help="test scenes to score (default 300)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    print("== 1. The default FP32 model on generated test scenes")
    model = load_model("default")
    summary = evaluate_model(model, "test", a.limit)
    print(format_summary(summary))

    print("\n== 2. One-shot segmentation of scenes at 320x240 (any size works)")
    seg = Segmenter(model)
    gen = SceneGenerator(320, 240)
    items = []
    for i in range(6):
        s = gen.sample("test", 9_000 + i)  # past the scored scenes
        mask, score = seg.segment(s.image, s.text)
        v = iou(mask > 0, s.mask)[0]
        items.append({"image": s.image, "pred": mask, "gt": s.mask, "text": s.text, "iou": v})
        print(f"  {s.kind:12s} IoU {v:.2f} score {score:.2f}  \"{s.text}\"")
    print(f"  masks over images: {mask_grid(items, out / 'segment_examples.png')}")

    print("\n== 3. PyTorch FP32 latency, batch 1, 2 threads (segment() on a 640x480 frame, command cached)")
    frame = SceneGenerator(640, 480).sample("test", 9_500)
    seg.segment(frame.image, frame.text)
    times = []
    for _ in range(30):
        t = time.perf_counter()
        seg.segment(frame.image, frame.text)
        times.append((time.perf_counter() - t) * 1000)
    print(f"  p50 {np.median(times):.1f} ms, p90 {np.percentile(times, 90):.1f} ms over {len(times)} runs")


if __name__ == "__main__":
    main()
