"""Training the default RIS model on generated scenes: resumable, logged, with a progress bar.

Batch ``s`` always holds train scenes ``[s*B, (s+1)*B)``, so a resumed run sees exactly the
data it would have seen; the optimizer and schedule state are checkpointed with the step.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data import SPLIT_SIZES
from .data.torch_dataset import SceneDataset, collate
from .errors import InputError
from .evaluate import evaluate_model
from .models import Preprocessor, RISConfig, build_model, load_model, save_model
from .models.resize import carry_weights


def ris_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """2-class cross-entropy (as LAVT) plus a soft Dice term that rewards whole-object overlap."""
    target = mask.long()
    ce = F.cross_entropy(logits, target)
    p = logits.float().softmax(1)[:, 1]
    m = mask.float()
    dice = 1 - (2 * (p * m).sum((1, 2)) + 1) / (p.sum((1, 2)) + m.sum((1, 2)) + 1)
    return ce + dice.mean()


def _remap_optimizer_state(state: dict, names: list[str], current_keys: set) -> dict:
    """Optimizer state indexed for the current parameters, by name.

    A checkpoint from an older layout may hold parameters the model no longer has (the first
    default run's unused last-stage gate): their entries are dropped, the others re-indexed.
    """
    if state.get("opt_names") == names:  # written by this version: the optimizer's own order
        return state["opt"]
    saved = [k for k in state["model"] if k in names or k not in current_keys]  # the saved run's parameters, in order
    if saved == names:
        return state["opt"]
    opt = state["opt"]
    old_index = {n: i for i, n in enumerate(saved)}
    new_state = {j: opt["state"][old_index[n]] for j, n in enumerate(names) if old_index.get(n) in opt["state"]}
    groups = [{**opt["param_groups"][0], "params": list(range(len(names)))}]
    return {"state": new_state, "param_groups": groups}


# Three scenes in four varied, one in the evaluation splits' own style, so the model learns the wider
# world without unlearning the style its published figures are measured on.
VARIETY = 0.75


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it, bf16 autocast is
    emulated: on an AVX2 Zen 3 a training step took 31 s against 2.0 s in fp32 (docs/RESULTS.md)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def lr_at(step: int, total: int, base: float, warmup: int, done: float | None = None) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine to 1 % of ``base``: over the steps, or over
    ``done`` (the share of a time budget spent) when the run is bounded by time."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup) if done is None else done
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def pick_device(device: str = "auto") -> torch.device:
    """'auto': the GPU when PyTorch sees one (training is hours on two CPU cores, minutes on a GPU)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: this PyTorch sees no CUDA GPU (torch {torch.__version__}); "
                         f"use --device cpu")
    return torch.device(device)


def train(out: Path, cfg: RISConfig, steps: int, batch: int = 32, lr: float = 1e-3, weight_decay: float = 0.05,
          warmup: int = 500, val_every: int = 1000, val_n: int = 256, seed: int = 0, bf16: bool | None = None,
          workers: int = 1, command: str = "", init: str | None = None, text_lr: float | None = None,
          data_offset: int = 0, variety: float = VARIETY, device: str = "auto",
          minutes: float | None = None) -> Path:
    """``init``: start from these weights (a model name or path) instead of from scratch. ``text_lr``:
    fine-tune the MiniLM text encoder with this peak learning rate (same schedule); frozen when None.
    ``data_offset``: the first train scene of step 0, so that a continued run sees scenes its
    ``init`` weights never saw. ``variety``: the share of scenes drawn with camera frames, scene variety and
    the wide grammar (``SceneGenerator(variety=...)``); the rest in the evaluation splits' style. ``bf16``:
    autocast to bf16; None: on a GPU, and where the CPU computes it natively (``native_bf16``). ``minutes``: a
    time budget; the learning rate's cosine then follows the time spent, and the run stops (validated and
    saved) when it is spent or at ``steps``, whichever comes first."""
    if not 0 <= data_offset <= SPLIT_SIZES["train"] - steps * batch:
        raise InputError(f"{steps} steps of {batch} scenes from scene {data_offset} need more than the train "
                         f"split's {SPLIT_SIZES['train']} scenes; lower --data-offset or --steps")
    if minutes is not None and minutes <= 0:
        raise InputError(f"--minutes {minutes}: give a positive time budget")
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    bf16 = (dev.type == "cuda" or native_bf16()) if bf16 is None else bf16
    print(f"training on {dev} in {'bf16 autocast' if bf16 else 'fp32'}", file=sys.stderr)
    torch.manual_seed(seed)
    if text_lr is not None:
        cfg = replace(cfg, freeze_text=False)
    model = build_model(cfg).to(dev)  # before the optimizer: its state lives where the parameters do
    pre = Preprocessor(cfg)
    is_text = lambda n: n.startswith("text_encoder.")  # noqa: E731
    for n, p in model.named_parameters():
        p.requires_grad_(not (cfg.freeze_text and is_text(n)))
    # Optimizer order: the rest first, then the text encoder (its own group and peak learning rate)
    named = sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda np_: is_text(np_[0]))
    names = [n for n, _ in named]
    params = [p for _, p in named]
    groups = [{"params": [p for n, p in named if not is_text(n)], "peak": lr}]
    if text_lr is not None:
        groups.append({"params": [p for n, p in named if is_text(n)], "peak": text_lr})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    ckpt, log_path = out / "checkpoint.pt", out / "log.jsonl"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location="cpu")
        model.load_state_dict({k: v for k, v in state["model"].items() if k in model.state_dict()}, strict=False)
        opt.load_state_dict(_remap_optimizer_state(state, names, set(model.state_dict())))
        start = state["step"]
        print(f"resuming from step {start}", file=sys.stderr)
    elif init is not None:
        model.load_state_dict(carry_weights(load_model(init), model))  # cfg may set another input size
        print(f"starting from the weights of {init}", file=sys.stderr)
    data = SceneDataset("train", (steps - start) * batch, cfg.image_size, seed=seed, offset=data_offset + start * batch,
                        variety=variety)
    loader = DataLoader(data, batch_size=batch, num_workers=workers, collate_fn=collate, persistent_workers=workers > 0,
                        pin_memory=dev.type == "cuda")
    model.train()
    bar = tqdm(loader, total=steps - start, initial=0, desc="train", unit="step", dynamic_ncols=True)
    t0, ema = time.time(), None
    step = start
    budget = None if minutes is None else 60.0 * minutes
    for b in bar:
        done = None if budget is None else (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, g.get("peak", lr), warmup, done)
        ids, m = (t.to(dev, non_blocking=True) for t in pre.texts(b["text"]))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(pre.images(b["image"]).to(dev, non_blocking=True), ids, m)
        loss = ris_loss(logits.float(), b["mask"].to(dev, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        with log_path.open("a") as f:
            if step % 50 == 0:
                f.write(json.dumps({"step": step, "loss": round(ema, 4), "lr": opt.param_groups[0]["lr"],
                                    "elapsed_s": round(time.time() - t0, 1)}) + "\n")
        out_of_time = budget is not None and time.time() - t0 >= budget
        if step % val_every == 0 or step == steps or out_of_time:
            model.eval()
            val = evaluate_model(model, "val", val_n, batch=64, bf16=bf16, progress=False)
            model.train()
            with log_path.open("a") as f:
                f.write(json.dumps({"step": step, "val_mIoU": val["mIoU"], "val_oIoU": val["oIoU"],
                                    "val_by_kind": {k: v["mIoU"] for k, v in val.get("by_kind", {}).items()}}) + "\n")
            bar.write(f"step {step}: val mIoU {val['mIoU']:.4f} oIoU {val['oIoU']:.4f} "
                      + " ".join(f"{k}={v['mIoU']:.3f}" for k, v in val.get("by_kind", {}).items()))
            torch.save({"model": {k: v for k, v in model.state_dict().items() if not (cfg.freeze_text and is_text(k))},
                        "opt": opt.state_dict(), "opt_names": names, "step": step}, ckpt)
            save_model(model, out / "model.safetensors",
                       {"command": command, "step": step, "total_steps": steps, "batch": batch, "lr": lr,
                        "text_lr": text_lr, "init": init, "data_offset": data_offset, "variety": variety,
                        "seed": seed, "device": str(dev), "bf16": bf16, "minutes": minutes,
                        "val": {"n": val_n, "mIoU": val["mIoU"], "oIoU": val["oIoU"]}})
        if out_of_time:
            bar.write(f"time budget of {minutes} min spent at step {step}")
            break
    return out / "model.safetensors"
