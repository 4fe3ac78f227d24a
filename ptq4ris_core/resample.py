"""The two resizes of every camera frame, in NumPy: the frame shrunk to the model's input (the area average),
and the mask enlarged from the model's output to the frame (bilinear, thresholded).

They follow OpenCV's ``INTER_AREA`` and ``INTER_LINEAR`` (half-pixel centres, edge taps clamped), which the
runtime used before, so that the robot's install needs no OpenCV (170 MB of its 460, docs/RESULTS.md issue 22).

The mask's enlargement never builds the enlarged map: a frame pixel's bilinear value is a mix of the four
model pixels around it, so when all four are on one side of the threshold the pixel is too. Only pixels whose
four taps disagree (the object's outline) are interpolated; the rest are copied by whole rows, and the score's
sum over them is taken at the model's resolution (a tap's weight summed over the pixels that share it).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

DENSE_SHARE = 0.3  # outline pixels, as a share of the frame, above which the whole map is enlarged (cheaper there)


# --- one axis ------------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def linear_taps(n_in: int, n_out: int):
    """OpenCV's bilinear taps along one axis: for each output index, the input indices (i0, i1) and the
    weight f of i1 (the value is (1 − f)·x[i0] + f·x[i1]); centres at half pixels, clamped at the edges."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(src).astype(np.intp)
    f = src - i0
    f[src < 0] = 0.0
    i0 = np.clip(i0, 0, n_in - 1)
    f[i0 >= n_in - 1] = 0.0
    return i0, np.minimum(i0 + 1, n_in - 1), f.astype(np.float32)


def _linear_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    i0, i1, f = linear_taps(x.shape[axis], n_out)
    shape = [1] * x.ndim
    shape[axis] = -1
    f = f.reshape(shape)
    a, b = np.take(x, i0, axis=axis), np.take(x, i1, axis=axis)
    return a + f * (b - a)


@lru_cache(maxsize=32)
def area_taps(n_in: int, n_out: int):
    """The area filter along one axis as a few taps per output index: (index, weight) pairs, one row per tap,
    each output's weights the share of each input pixel its span [k·n/m, (k+1)·n/m) covers, over the span."""
    scale = n_in / n_out
    lo = np.arange(n_out) * scale
    first = np.floor(lo).astype(np.intp)
    taps = int(np.ceil(scale)) + 1
    index = np.minimum(first[None, :] + np.arange(taps)[:, None], n_in - 1)
    left = first[None, :] + np.arange(taps)[:, None]  # each tap's pixel [left, left + 1) within [lo, lo + scale)
    covered = np.clip(np.minimum(left + 1, lo + scale) - np.maximum(left, lo), 0, None)
    covered[left >= n_in] = 0
    return index, (covered / scale).astype(np.float32)


def _area_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    if x.shape[axis] == n_out:
        return x
    index, weight = area_taps(x.shape[axis], n_out)
    shape = [1] * x.ndim
    shape[axis] = -1
    out = np.take(x, index[0], axis=axis) * weight[0].reshape(shape)
    for i, w in zip(index[1:], weight[1:]):
        if w.any():
            out += np.take(x, i, axis=axis) * w.reshape(shape)
    return out


# --- camera frames -------------------------------------------------------------------------------

def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) uint8 → (height, width, C) uint8: the area average when both sides shrink, bilinear
    otherwise (an image smaller than the model's input)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if h >= height and w >= width:
        # a side that is a whole multiple: Pillow's reduce averages its runs, in C (640 → 128 in a camera frame)
        kw, kh = (w // width if w % width == 0 else 1), (h // height if h % height == 0 else 1)
        if kw > 1 or kh > 1:
            image = np.asarray(Image.fromarray(image).reduce((kw, kh)))
        out = _area_axis(_area_axis(image, height, 0), width, 1)  # rows first: their taps are whole rows
    else:
        out = _linear_axis(_linear_axis(image.astype(np.float32), width, 1), height, 0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_float(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float32 map (no antialiasing), as OpenCV's ``INTER_LINEAR``."""
    if x.shape == (height, width):
        return x
    return _linear_axis(_linear_axis(x, width, 1), height, 0).astype(np.float32, copy=False)


# --- the mask, enlarged --------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _runs(n_in: int, n_out: int):
    """Output indices grouped by their tap pair (consecutive in the output): per run its taps (i0, i1), first
    index, length, and the summed weights of i0 and i1 over it; and each output index's run."""
    i0, i1, f = linear_taps(n_in, n_out)
    new = np.ones(n_out, bool)
    new[1:] = (i0[1:] != i0[:-1]) | (i1[1:] != i1[:-1])
    start = np.flatnonzero(new)
    run_of = np.cumsum(new) - 1
    length = np.diff(np.append(start, n_out))
    w1 = np.add.reduceat(f, start)
    return i0[start], i1[start], start, length, length - w1, w1, run_of


@lru_cache(maxsize=32)
def _within(n_in: int, n_out: int) -> np.ndarray:
    """The weight f of each run's output indices, one row per run, padded with zeros to the longest run."""
    _, _, f = linear_taps(n_in, n_out)
    *_, start, length, _, _, _ = _runs(n_in, n_out)
    out = np.zeros((len(start), int(length.max())), np.float32)
    for k, (a, n) in enumerate(zip(start, length)):
        out[k, :n] = f[a:a + n]
    return out


def enlarged_mask(margin: np.ndarray, prob: np.ndarray, height: int, width: int, cut: float):
    """The bilinear enlargement of ``margin`` (S×S) to height×width, thresholded (> ``cut``), and the sum of
    the enlarged ``prob`` over the mask: (mask as bool, that sum, the mask's pixel count).

    Equal to enlarging both maps whole and thresholding (the tests compare with OpenCV), for the cost of
    the outline's pixels only."""
    ry0, ry1, ystart, ylen, wy0, wy1, yrun = _runs(margin.shape[0], height)
    rx0, rx1, xstart, xlen, wx0, wx1, xrun = _runs(margin.shape[1], width)
    above = margin > cut
    rows_all, rows_any = above[ry0] & above[ry1], above[ry0] | above[ry1]
    inside = rows_all[:, rx0] & rows_all[:, rx1]  # a run-cell whose four taps are all in the mask
    outline = (rows_any[:, rx0] | rows_any[:, rx1]) & ~inside
    mask = np.take(np.take(inside, xrun, axis=1), yrun, axis=0)  # whole rows copied: nothing interpolated
    # the probability summed over each inside cell, at the model's resolution: Σ_y Σ_x (bilinear p) =
    # Σ over the four taps of (the tap's weight summed over the cell's rows) × (over its columns) × p
    p00, p01, p10, p11 = (np.take(np.take(prob, r, axis=0), c, axis=1) for r in (ry0, ry1) for c in (rx0, rx1))
    cell_sums = (wy0[:, None] * (wx0 * p00 + wx1 * p01) + wy1[:, None] * (wx0 * p10 + wx1 * p11))
    total = float(cell_sums[inside].sum())
    count = int((ylen[:, None] * xlen[None, :])[inside].sum())
    cy, cx = np.nonzero(outline)
    if int((ylen[cy] * xlen[cx]).sum()) > DENSE_SHARE * height * width:
        # an outline over much of the frame (a speckled margin): enlarging both maps whole is cheaper
        d = resize_float(margin, height, width)
        mask = d > cut
        return mask, float(resize_float(prob, height, width)[mask].sum(dtype=np.float64)), int(mask.sum())
    if len(cy):
        # a run-cell's pixels share its four taps: each cell is a small block of bilinear weights (padded
        # to the longest run), computed by broadcasting, no gather per pixel
        fy, fx = _within(margin.shape[0], height), _within(margin.shape[1], width)
        wy, wx = fy[cy][:, :, None], fx[cx][:, None, :]  # (cells, rows, 1), (cells, 1, cols)

        def bilinear(m):
            t00, t01, t10, t11 = (m[r, c][:, None, None] for r in (ry0[cy], ry1[cy]) for c in (rx0[cx], rx1[cx]))
            top = t00 + wx * (t01 - t00)
            return top + wy * (t10 + wx * (t11 - t10) - top)
        values = bilinear(margin)
        real = (np.arange(wy.shape[1])[None, :, None] < ylen[cy][:, None, None]) & \
               (np.arange(wx.shape[2])[None, None, :] < xlen[cx][:, None, None])
        on = (values > cut) & real
        flat = (ystart[cy] * width + xstart[cx])[:, None, None] + \
               (np.arange(wy.shape[1]) * width)[None, :, None] + np.arange(wx.shape[2])[None, None, :]
        mask.ravel()[flat[real]] = on[real]
        total += float(bilinear(prob)[on].sum(dtype=np.float64))
        count += int(on.sum())
    return mask, total, count
