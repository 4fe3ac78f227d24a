"""The two resizes of every camera frame: the runtime's NumPy ones (ptq4ris_core/resample.py) against OpenCV's.

    .venv/bin/python benchmarks/frame_resizes.py [--repeat 200] [--json out.json]

1. The frame shrunk to the model's input: ``frames.resize_rgb`` (area average: Pillow's reduce for whole runs,
   NumPy taps for the rest) against ``cv2.resize(INTER_AREA)``; largest difference in grey levels, on a
   smooth frame and on noise.
2. The mask and its score from the model's logits: ``frames.mask_from_logits`` (only the outline interpolated)
   against what the runtime did with OpenCV until 2026-12 (both maps enlarged whole by ``cv2.resize``, the
   threshold, the mean probability over the mask), for a round object, a frame-filling one and a blobby
   margin (many outlines); masks compared pixel for pixel.
Medians of interleaved single calls in milliseconds, one thread each (OpenCV set to one, as the node had it).
Needs the full install (OpenCV is not in the runtime).
"""
import argparse
import json
import time

import cv2
import numpy as np
from PIL import Image

from ptq4ris_core.frames import mask_from_logits, resize_rgb

SIZES = [(480, 640), (720, 1280), (480, 848), (1080, 1920)]


def opencv_mask(logits, height, width, threshold=0.5):
    """The runtime's post-processing as it was with OpenCV."""
    d_model = np.ascontiguousarray(logits[0, 1] - logits[0, 0], dtype=np.float32)
    d = cv2.resize(d_model, (width, height), interpolation=cv2.INTER_LINEAR)
    prob = cv2.resize(1 / (1 + np.exp(-d_model)), (width, height), interpolation=cv2.INTER_LINEAR)
    mask = (d > np.float32(np.log(threshold / (1 - threshold)))).view(np.uint8)
    n = np.count_nonzero(mask)
    score = float(np.dot(prob.ravel(), mask.ravel().astype(np.float32)) / n) if n else 0.0
    return mask * np.uint8(255), score


def margins() -> dict:
    yy, xx = np.mgrid[:128, :128]
    round_object = (3 - np.hypot(yy - 60, xx - 70) / 10).astype(np.float32)
    filling = np.full((128, 128), -2.0, np.float32)
    filling[5:120, 3:125] = 2.0
    coarse = np.random.default_rng(0).normal(0, 3, (16, 16)).astype(np.float32)
    blobs = np.asarray(Image.fromarray(coarse, mode="F").resize((128, 128), Image.BILINEAR))
    return {"round object": round_object, "frame-filling": filling, "blobs": blobs}


def interleaved_ms(fns: dict, repeat: int) -> dict:
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(repeat):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: round(float(np.median(v)) * 1e3, 3) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--json")
    a = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 255, (60, 80, 3), np.uint8), (5, 5), 0)
    out = {"shrink_frame": {}, "mask": {}}
    for h, w in SIZES:
        frame = np.ascontiguousarray(cv2.resize(smooth, (w, h), interpolation=cv2.INTER_CUBIC))
        noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ms = interleaved_ms({"numpy": lambda: resize_rgb(frame, 128),
                             "opencv": lambda: cv2.resize(frame, (128, 128), interpolation=cv2.INTER_AREA)}, a.repeat)
        diff = max(int(np.abs(resize_rgb(x, 128).astype(int)
                              - cv2.resize(x, (128, 128), interpolation=cv2.INTER_AREA)).max()) for x in (frame, noise))
        out["shrink_frame"][f"{w}x{h}"] = {**ms, "max_diff_grey_levels": diff}
        for name, m in margins().items():
            logits = np.stack([np.zeros_like(m), m])[None]
            ms = interleaved_ms({"numpy": lambda: mask_from_logits(logits, h, w),
                                 "opencv": lambda: opencv_mask(logits, h, w)}, a.repeat)
            (mn, sn), (mc, sc) = mask_from_logits(logits, h, w), opencv_mask(logits, h, w)
            out["mask"].setdefault(f"{w}x{h}", {})[name] = {
                **ms, "pixels_differing": int((mn != mc).sum()), "score_difference": abs(sn - sc)}
    text = json.dumps(out, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
