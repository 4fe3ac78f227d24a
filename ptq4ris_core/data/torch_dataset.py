"""Map-style torch dataset over generated scenes: index i of a split is always the same scene."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .scenes import SceneGenerator


class SceneDataset(Dataset):
    def __init__(self, split: str, length: int, size: int = 128, seed: int = 0, offset: int = 0,
                 variety: float = 0.0):
        self.split, self.length, self.offset = split, length, offset
        self.gen = SceneGenerator(size, seed=seed, variety=variety)
        self.gen.rng_for(split, 0)  # validates the split name now, not in a worker

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        s = self.gen.sample(self.split, self.offset + i)
        return {"image": torch.from_numpy(s.image), "mask": torch.from_numpy(np.array(s.mask, dtype=bool)), "text": s.text, "kind": s.kind}


def collate(items):
    return {"image": np.stack([it["image"].numpy() for it in items]),
            "mask": torch.stack([it["mask"] for it in items]),
            "text": [it["text"] for it in items], "kind": [it["kind"] for it in items]}
