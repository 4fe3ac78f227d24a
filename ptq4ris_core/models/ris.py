"""The default RIS model: Swin-style vision encoder + MiniLM text encoder + LAVT fusion + conv decoder."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .decoder import Decoder
from .fusion import LanguageFusion
from .swin import PatchEmbed, PatchMerging, SwinStage, to_map
from .text_encoder import TextEncoder, load_tokenizer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class RISConfig:
    image_size: int = 128
    embed_dim: int = 48
    depths: tuple = (2, 2, 4, 2)
    heads: tuple = (2, 4, 8, 16)
    window: int = 8
    decoder_width: int = 64
    stem_width: int = 24
    max_tokens: int = 32
    text_dim: int = 384
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    freeze_text: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "RISConfig":
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)


def stage_sizes(image_size: int, stages: int) -> list[int]:
    """Tokens a side in each stage: a 4-pixel patch embedding, then each merge halves the map."""
    return [image_size // 4 >> i for i in range(stages)]


def window_fits(image_size: int, stages: int, window: int) -> bool:
    """Whether ``window`` (clamped to small maps, as ``SwinStage`` does) tiles every stage's map."""
    return all(r > 0 and r % min(window, r) == 0 for r in stage_sizes(image_size, stages))


class RISModel(nn.Module):
    """``forward(image, ids, mask) -> logits`` (B, 2, H, W); ``image`` normalised (B, 3, H, W)."""

    def __init__(self, cfg: RISConfig, text_encoder: TextEncoder | None = None):
        super().__init__()
        sizes = stage_sizes(cfg.image_size, len(cfg.depths))
        if not window_fits(cfg.image_size, len(cfg.depths), cfg.window):
            raise ValueError(f"window {cfg.window} does not tile the token maps {sizes} of a {cfg.image_size} px "
                             f"input; build the config with models.resize.resized_config")
        self.cfg = cfg
        self.text_encoder = text_encoder or TextEncoder()
        dims = tuple(cfg.embed_dim * 2 ** i for i in range(len(cfg.depths)))
        self.patch_embed = PatchEmbed(dims[0])
        self.stages, self.fusions, self.merges = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, (d, depth, heads, res) in enumerate(zip(dims, cfg.depths, cfg.heads, sizes)):
            self.stages.append(SwinStage(d, depth, heads, cfg.window, res))
            self.fusions.append(LanguageFusion(d, cfg.text_dim, heads, gate=i < len(dims) - 1))
            if i < len(dims) - 1:
                self.merges.append(PatchMerging(d))
        self.decoder = Decoder(dims, cfg.decoder_width, cfg.stem_width)

    def quant_layout(self) -> dict:
        """What the quantization library needs to know about this model, as data.

        ``domains``: module-name patterns of each part (methods treat text and vision differently);
        ``float``: overrides that keep tensors in float (the image into the patch embedding, and the
        final 1x1 classifier, as PTQ4RIS does); ``blocks``: the units block reconstruction fits (each
        ``*`` one name part): BERT layers, Swin blocks, patch mergings, fusion stages, decoder stages.
        """
        return {"domains": {"text": ["text_encoder.*"], "vision": ["patch_embed.*", "stages.*", "merges.*"],
                            "fusion": ["fusions.*"], "decoder": ["decoder.*"]},
                "blocks": ["text_encoder.encoder.layer.*", "stages.*.blocks.*", "merges.*", "fusions.*",
                           "decoder.top", "decoder.fuse.*", "decoder.stem", "decoder.refine"],
                "float": [("patch_embed.proj", {"a_bits": None}),
                          ("decoder.classifier", {"w_bits": None, "a_bits": None})]}

    def encode_text(self, ids, mask):
        if self.cfg.freeze_text:
            with torch.no_grad():
                return self.text_encoder(ids, mask)
        return self.text_encoder(ids, mask)

    def segment_features(self, image, words, word_mask):
        """Image + word features → mask logits (the part that runs every frame)."""
        x, h, w = self.patch_embed(image)
        feats = []
        for i, (stage, fusion) in enumerate(zip(self.stages, self.fusions)):
            x = stage(x, h, w)
            fused, x = fusion(x, h, w, words, word_mask)
            feats.append(to_map(fused, h, w))
            if i < len(self.merges):
                x = self.merges[i](x, h, w)
                h, w = h // 2, w // 2
        return self.decoder(image, feats)

    def forward(self, image, ids, mask):
        return self.segment_features(image, self.encode_text(ids, mask), mask)


class Preprocessor:
    """Turns RGB uint8 images and sentences into model inputs, as every entry point must."""

    def __init__(self, cfg: RISConfig):
        self.cfg = cfg
        self.tokenizer = load_tokenizer()
        self.mean = np.array(cfg.mean, np.float32) * 255
        self.std = np.array(cfg.std, np.float32) * 255

    def images(self, batch: np.ndarray) -> torch.Tensor:
        """(B, S, S, 3) uint8 at the model's size → normalised (B, 3, S, S) float."""
        x = (batch.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.cfg.max_tokens, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]
