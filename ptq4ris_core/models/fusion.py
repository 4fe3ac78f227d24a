"""LAVT's language fusion: pixel-word attention (PWAM) and the language gate (LG).

Each pixel attends over the words; the attended language feature multiplies the pixel's
visual feature; a tanh gate decides how much of that goes back into the encoder. Pixel
coordinates join the queries so that words such as "left" and "top" can be matched.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import Attention, coord_grid, merge_heads, split_heads


class PixelWordAttention(nn.Module):
    def __init__(self, dim: int, text_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.vis_project = nn.Linear(dim + 2, dim)
        self.vis_act = nn.GELU()
        self.query = nn.Linear(dim + 2, dim)
        self.key = nn.Linear(text_dim, dim)
        self.value = nn.Linear(text_dim, dim)
        self.attn = Attention(dim // heads)
        self.lang_out = nn.Linear(dim, dim)
        self.mm_project = nn.Linear(dim, dim)
        self.mm_act = nn.GELU()

    def forward(self, x, h, w, words, word_mask):
        coords = coord_grid(h, w, x.device, x.dtype).expand(x.shape[0], -1, -1)
        xc = torch.cat([x, coords], -1)
        vis = self.vis_act(self.vis_project(xc))
        q = split_heads(self.query(xc), self.heads)
        k, v = split_heads(self.key(words), self.heads), split_heads(self.value(words), self.heads)
        bias = (1.0 - word_mask[:, None, None, :].to(x.dtype)) * -1e4
        lang = self.lang_out(merge_heads(self.attn(q, k, v, bias)))
        return self.mm_act(self.mm_project(vis * lang))


class LanguageGate(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(dim, dim)
        self.tanh = nn.Tanh()

    def forward(self, fused):
        return self.tanh(self.fc2(self.act(self.fc1(fused))))


class LanguageFusion(nn.Module):
    """PWAM + LG. Returns (fused features for the decoder, gated residual update for the encoder).

    The last stage feeds only the decoder, so it has no gate (LAVT keeps one whose output is
    never used; a parameter without a gradient has no place in a model we quantize).
    """

    def __init__(self, dim, text_dim, heads, gate: bool = True):
        super().__init__()
        self.pwam = PixelWordAttention(dim, text_dim, heads)
        self.gate = LanguageGate(dim) if gate else None

    def forward(self, x, h, w, words, word_mask):
        fused = self.pwam(x, h, w, words, word_mask)
        if self.gate is None:
            return fused, x
        return fused, x + self.gate(fused) * fused
