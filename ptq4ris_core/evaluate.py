"""Batched evaluation of a RIS model on a split of generated scenes, scored by expression kind."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data.torch_dataset import SceneDataset, collate
from .metrics import RISScores
from .models import Preprocessor


@torch.no_grad()
def predict_masks(model, pre: Preprocessor, images, texts, bf16: bool = False) -> torch.Tensor:
    """(B, S, S, 3) uint8 at the model's size + sentences → (B, S, S) bool masks."""
    dev = next(model.parameters()).device
    ids, m = (t.to(dev) for t in pre.texts(texts))
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(pre.images(images).to(dev), ids, m)
    return logits.float().argmax(1).bool().cpu()


def evaluate_model(model, split: str = "test", limit: int = 1000, batch: int = 32, seed: int = 0,
                   bf16: bool = False, progress: bool = True, pre: Preprocessor | None = None,
                   scores: RISScores | None = None) -> dict:
    """Scores on the first ``limit`` scenes of ``split`` (the same scenes every time)."""
    pre = pre or Preprocessor(model.cfg)
    data = SceneDataset(split, limit, model.cfg.image_size, seed=seed)
    scores = scores if scores is not None else RISScores()
    was_training = model.training
    model.eval()
    for b in tqdm(DataLoader(data, batch_size=batch, collate_fn=collate), desc=f"eval {split}",
                  unit="batch", disable=not progress, dynamic_ncols=True):
        pred = predict_masks(model, pre, b["image"], b["text"], bf16)
        for p, g, k in zip(pred.numpy(), b["mask"].numpy(), b["kind"]):
            scores.add(p, g, k)
    model.train(was_training)
    return scores.summary()


def evaluate_engine(engine, split: str = "test", limit: int = 1000, seed: int = 0, progress: bool = True) -> dict:
    """The same scenes and scoring as ``evaluate_model``, run through an engine one scene at a time."""
    from .data import SceneGenerator
    gen = SceneGenerator(engine.size, seed=seed)
    scores = RISScores()
    for i in tqdm(range(limit), desc=f"eval {split} ({engine.backend})", unit="scene", disable=not progress,
                  dynamic_ncols=True):
        s = gen.sample(split, i)
        logits = engine.logits(s.image, s.text)
        scores.add(logits[0].argmax(0).astype(bool), s.mask, s.kind)
    return scores.summary()
