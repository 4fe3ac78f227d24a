"""A hierarchical Swin-style vision encoder: shifted-window attention, GELU MLPs, patch merging.

Tokens are kept as (B, H*W, C) with the spatial size passed alongside, as in Swin.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Attention, Mlp, merge_heads, split_heads


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn = Attention(dim // heads)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, x, mask=None):
        bw, n, c = x.shape  # (B*windows, window*window, C)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)[None]
        if mask is not None:  # (windows, n, n), shared across the batch
            nw = mask.shape[0]
            bias = (bias + mask[:, None]).repeat(bw // nw, 1, 1, 1)
        return self.proj(merge_heads(self.attn(q, k, v, bias)))


def window_partition(x, h, w, ws):
    b, _, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(x, h, w, ws):
    c = x.shape[-1]
    b = x.shape[0] // ((h // ws) * (w // ws))
    x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * w, c)


def shift_mask(h, w, ws, shift):
    """Attention mask for the shifted windows that wrap around the border (Swin's trick)."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img.view(1, h * w, 1), h, w, ws).squeeze(-1)
    diff = win[:, None, :] - win[:, :, None]
    return diff.ne(0).float() * -100.0


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, window, shift, mlp_ratio=4.0):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, h, w):
        b, n, c = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y.view(b, h, w, c), (-self.shift, -self.shift), (1, 2)).view(b, n, c)
            mask = shift_mask(h, w, self.window, self.shift).to(x.device, x.dtype)
        else:
            mask = None
        y = window_reverse(self.attn(window_partition(y, h, w, self.window), mask), h, w, self.window)
        if self.shift:
            y = torch.roll(y.view(b, h, w, c), (self.shift, self.shift), (1, 2)).view(b, n, c)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens → one token of twice the width."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x, h, w):
        b, _, c = x.shape
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, (h // 2) * (w // 2), 4 * c)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim, patch=4):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, img):
        x = self.proj(img)
        b, c, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class SwinStage(nn.Module):
    """``depth`` blocks alternating plain and shifted windows. Window clamps to the map size."""

    def __init__(self, dim, depth, heads, window, resolution):
        super().__init__()
        ws = min(window, resolution)
        shift = ws // 2 if resolution > ws else 0
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, ws, shift if i % 2 else 0) for i in range(depth))

    def forward(self, x, h, w):
        for blk in self.blocks:
            x = blk(x, h, w)
        return x


def to_map(x, h, w):
    """(B, H*W, C) tokens → (B, C, H, W) feature map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def resize_like(x, ref):
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
