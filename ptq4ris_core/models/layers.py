"""Small building blocks shared by the encoders.

Attention matmuls and Softmax are modules (not inline ``@`` / ``torch.softmax``) so that
the quantization wrappers can find and wrap them by type, as PTQ4RIS needs.
"""
from __future__ import annotations

import torch
from torch import nn


class MatMul(nn.Module):
    """``a @ b`` as a module: a slot for quantizing both operands."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


class Attention(nn.Module):
    """Multi-head scaled dot-product attention core (no projections).

    ``q`` (B, h, N, d), ``k``/``v`` (B, h, M, d), ``bias`` broadcastable to (B, h, N, M).
    """

    def __init__(self, head_dim: int):
        super().__init__()
        self.scale = head_dim ** -0.5
        self.qk = MatMul()
        self.softmax = nn.Softmax(dim=-1)
        self.pv = MatMul()

    def forward(self, q, k, v, bias=None):
        scores = self.qk(q * self.scale, k.transpose(-2, -1))
        if bias is not None:
            scores = scores + bias
        return self.pv(self.softmax(scores), v)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Mlp(nn.Module):
    """Linear → GELU → Linear; ``act`` is its own module so post-GELU inputs can be quantized."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def coord_grid(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """(h*w, 2) normalised (x, y) in [-1, 1]: absolute position for spatial words."""
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype)
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(h * w, 2)
