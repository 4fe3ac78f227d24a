"""What taking OpenCV out of the runtime would cost: the two resizes of every frame, OpenCV against Pillow/NumPy.

    .venv/bin/python benchmarks/resize_without_opencv.py [--repeat 100]

1. The camera frame shrunk to the model's input: ``frames.resize_rgb`` (OpenCV's area filter) against
   Pillow's box filter (the same area average), on a smooth synthetic frame; max/mean difference in grey levels.
2. The mask's foreground margin (128x128 float32) enlarged to the frame: OpenCV's bilinear against Pillow's
   ("F" mode) and a separable NumPy bilinear with the same half-pixel centres; max difference.
Medians in milliseconds; one thread each (OpenCV set to one, as the node runs it).
"""
import argparse
import json
import time
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image

from ptq4ris_core.frames import resize_rgb

SIZES = [(480, 640), (720, 1280), (1080, 1920)]


def median_ms(f, repeat):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e3, 3)


@lru_cache(maxsize=16)
def _axis(n_in, n_out):
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)


def numpy_bilinear(x, h, w):
    y0, y1, fy = _axis(x.shape[0], h)
    x0, x1, fx = _axis(x.shape[1], w)
    cols = x[:, x0]
    cols += fx * (x[:, x1] - cols)
    top, bottom = cols[y0], cols[y1]
    np.subtract(bottom, top, out=bottom)
    bottom *= fy[:, None]
    top += bottom
    return top


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=100)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 255, (60, 80, 3), np.uint8), (5, 5), 0)
    margin = rng.standard_normal((128, 128)).astype(np.float32)
    out = {"shrink_frame": {}, "enlarge_mask": {}}
    for h, w in SIZES:
        frame = np.ascontiguousarray(cv2.resize(smooth, (w, h), interpolation=cv2.INTER_CUBIC))
        ref = resize_rgb(frame, 128).astype(int)
        pil = np.asarray(Image.fromarray(frame).resize((128, 128), Image.BOX)).astype(int)
        out["shrink_frame"][f"{w}x{h}"] = {
            "opencv_ms": median_ms(lambda: resize_rgb(frame, 128), a.repeat),
            "pillow_box_ms": median_ms(lambda: Image.fromarray(frame).resize((128, 128), Image.BOX), a.repeat),
            "max_diff": int(np.abs(ref - pil).max()), "mean_diff": round(float(np.abs(ref - pil).mean()), 3)}
        cv = cv2.resize(margin, (w, h), interpolation=cv2.INTER_LINEAR)
        pf = np.asarray(Image.fromarray(margin, mode="F").resize((w, h), Image.BILINEAR))
        out["enlarge_mask"][f"{w}x{h}"] = {
            "opencv_ms": median_ms(lambda: cv2.resize(margin, (w, h), interpolation=cv2.INTER_LINEAR), a.repeat),
            "pillow_ms": median_ms(lambda: Image.fromarray(margin, mode="F").resize((w, h), Image.BILINEAR), a.repeat),
            "numpy_ms": median_ms(lambda: numpy_bilinear(margin, h, w), a.repeat),
            "max_diff_pillow": float(np.abs(cv - pf).max()),
            "max_diff_numpy": float(np.abs(cv - numpy_bilinear(margin, h, w)).max())}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
