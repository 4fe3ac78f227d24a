"""One-shot referring segmentation with a PyTorch model: any RGB image, one sentence, one mask.

``Segmenter.segment(image, text) -> (mask, score)`` is the same call that the quantized engine
offers, so callers (CLI, ROS node, bag evaluation) do not care which one they hold.
"""
from __future__ import annotations

import numpy as np
import torch

from .frames import TextCache, check_image, mask_from_logits, resize_rgb
from .models import Preprocessor, RISModel


class Segmenter:
    """PyTorch inference with the same call as the engine."""

    def __init__(self, model: RISModel):
        self.model = model.eval()
        self.pre = Preprocessor(model.cfg)
        self.text_features = TextCache(lambda text: len(self.pre.tokenizer(text)["input_ids"]), model.cfg.max_tokens,
                                       self._encode)

    @torch.no_grad()
    def _encode(self, text: str):
        ids, m = self.pre.texts([text])
        return self.model.text_encoder(ids, m), m

    @property
    def text_encodes(self) -> int:
        return self.text_features.encodes

    @torch.no_grad()
    def segment(self, image: np.ndarray, text: str, threshold: float = 0.5) -> tuple[np.ndarray, float]:
        image = check_image(image)
        words, m = self.text_features(text)
        x = self.pre.images(resize_rgb(image, self.model.cfg.image_size)[None])
        logits = self.model.segment_features(x, words, m).numpy()
        return mask_from_logits(logits, image.shape[0], image.shape[1], threshold)
