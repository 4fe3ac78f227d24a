"""PyTorch FP32 latency of the default model at batch 1 on this machine.

    .venv/bin/python benchmarks/torch_latency.py [--runs 200] [--threads 2]

Reports the median and p90 of the segmenter alone (image + cached word features → logits)
and of the whole segment() call on a 640x480 frame (resize, normalise, model, upsample).
"""
import argparse
import json
import platform
import time

import numpy as np
import torch

from ptq4ris_core.data import SceneGenerator
from ptq4ris_core.models import Preprocessor, load_model
from ptq4ris_core.segment import Segmenter


def timed(fn, runs, warmup=10):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": float(np.median(out)), "p90_ms": float(np.percentile(out, 90)), "runs": runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model("default")
    seg = Segmenter(model)
    pre = Preprocessor(model.cfg)
    s = SceneGenerator(model.cfg.image_size).sample("test", 0)
    x = pre.images(s.image[None])
    words, m = seg.text_features(s.text)
    frame = SceneGenerator(640, 480).sample("test", 1)
    with torch.no_grad():
        res = {"segmenter": timed(lambda: model.segment_features(x, words, m), a.runs),
               "segment_640x480": timed(lambda: seg.segment(frame.image, frame.text), a.runs),
               "threads": a.threads, "torch": torch.__version__, "cpu": platform.processor() or platform.machine()}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
