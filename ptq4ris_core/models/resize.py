"""Carrying a trained model to another input size, as Swin fine-tunes at a new resolution.

Every weight of the network is independent of the input size except the attention windows' relative
position bias tables, whose size follows the window. A window must tile each stage's token map, so a new
size may need another window (192 px: 48, 24, 12 and 6 tokens a side take a window of 6, not 8). The
tables are resampled bicubically so that a bias belongs to the same distance *in the scene*: at twice the
input, an offset of 4 tokens reads the old bias of 2 (offsets past the old table take its border). The rest
is copied as it is.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ..errors import InputError
from .ris import RISConfig, RISModel, window_fits


def window_for(image_size: int, stages: int, preferred: int = 8) -> int:
    """The largest window up to ``preferred`` that tiles every stage at this input size."""
    if image_size % (4 << (stages - 1)) or image_size <= 0:
        raise InputError(f"input size {image_size} px: it must be a multiple of {4 << (stages - 1)} "
                         f"(a 4-pixel patch, then {stages - 1} halvings), e.g. 128, 192 or 256")
    return next(w for w in range(preferred, 0, -1) if window_fits(image_size, stages, w))


def resized_config(cfg: RISConfig, image_size: int) -> RISConfig:
    return replace(cfg, image_size=image_size, window=window_for(image_size, len(cfg.depths), cfg.window))


def rescale_bias_table(table: torch.Tensor, new_window: int, scale: float) -> torch.Tensor:
    """A ((2w-1)^2, heads) relative position bias table for windows of ``new_window``, whose offset d reads the
    old table at d * ``scale`` (``scale``: old input size / new input size)."""
    old_side, heads = round(table.shape[0] ** 0.5), table.shape[1]
    if old_side == 1:
        return table.repeat((2 * new_window - 1) ** 2, 1)
    grid = table.T.reshape(1, heads, old_side, old_side)
    offsets = (torch.arange(-(new_window - 1), new_window, dtype=table.dtype) * scale / ((old_side - 1) / 2)).clamp(-1, 1)
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")  # table rows: (dy, dx), dy first
    where = torch.stack([xs, ys], -1)[None]  # grid_sample takes (x, y) in [-1, 1] (align_corners: the end cells)
    out = F.grid_sample(grid, where, mode="bicubic", padding_mode="border", align_corners=True)
    return out.reshape(heads, -1).T


def carry_weights(source: RISModel, target: RISModel) -> dict:
    """``source``'s state dict for ``target``, a model built for another input size (and window)."""
    shapes = {k: v.shape for k, v in target.state_dict().items()}
    scale = source.cfg.image_size / target.cfg.image_size
    out = {}
    for k, v in source.state_dict().items():
        want = shapes[k]
        if k.endswith("relative_position_bias_table") and (v.shape != want or scale != 1):
            v = rescale_bias_table(v, round((want[0] ** 0.5 + 1) / 2), scale)
        if v.shape != want:
            raise InputError(f"{k}: shape {tuple(v.shape)} cannot be carried to {tuple(want)}")
        out[k] = v.contiguous()
    return out
