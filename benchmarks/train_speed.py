"""Training throughput of the default model's design choices, side by side in one run.

    .venv/bin/python benchmarks/train_speed.py [--steps 6] [--batch 32]

Variants: bf16 autocast vs fp32, and the MiniLM text encoder frozen vs fine-tuned (all of it).
Images per second of full optimizer steps on generated train scenes, after one warm-up step. Which
precision ``ptq4ris train`` picks on this CPU (``native_bf16``) is printed with them.
"""
import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from ptq4ris_core.data import SceneGenerator
from ptq4ris_core.models import Preprocessor, RISConfig, build_model
from ptq4ris_core.train import ris_loss


def speed(cfg, bf16, steps, batch):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    for n, p in model.named_parameters():
        p.requires_grad_(not (cfg.freeze_text and n.startswith("text_encoder.")))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)
    pre = Preprocessor(cfg)
    gen = SceneGenerator(cfg.image_size)
    samples = [gen.sample("train", i) for i in range(batch)]
    img = pre.images(np.stack([s.image for s in samples]))
    ids, m = pre.texts([s.text for s in samples])
    target = torch.from_numpy(np.stack([s.mask for s in samples]))
    times = []
    for k in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(img, ids, m)
        loss = ris_loss(logits.float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k:
            times.append(time.perf_counter() - t)
    return batch / float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(2)
    base = RISConfig()
    variants = {"bf16, text frozen": (base, True), "fp32, text frozen": (base, False),
                "bf16, text fine-tuned": (replace(base, freeze_text=False), True)}
    res = {name: round(speed(cfg, bf16, a.steps, a.batch), 1) for name, (cfg, bf16) in variants.items()}
    trainable = {name: sum(p.numel() for n, p in build_model(cfg).named_parameters()
                           if not (cfg.freeze_text and n.startswith("text_encoder."))) for name, (cfg, _) in variants.items()}
    from ptq4ris_core.train import native_bf16
    print(json.dumps({"images_per_s": res, "trainable_params": trainable, "batch": a.batch,
                      "native_bf16": native_bf16(), "train_picks": "bf16" if native_bf16() else "fp32"}, indent=2))


if __name__ == "__main__":
    main()
