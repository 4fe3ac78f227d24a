"""Scene backgrounds: flat, gradient, smooth noise, and photo textures.

Photo textures are crops of the images bundled inside scikit-image (no download).
Their contrast is reduced so that the coloured objects stay the salient things.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

KINDS = ("flat", "gradient", "noise", "photo")

# Bundled with scikit-image's wheel; none needs pooch or a network.
PHOTO_NAMES = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass",
               "gravel", "horse", "moon", "page", "rocket", "text", "hubble_deep_field")


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    import skimage.data as sk
    out = []
    for name in PHOTO_NAMES:
        img = np.asarray(getattr(sk, name)())
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3].astype(np.uint8)))
    return tuple(out)


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A desaturated mid-tone colour, so no object colour disappears into it."""
    grey = rng.uniform(70, 190)
    return np.clip(grey + rng.normal(0, 18, 3), 0, 255)


def make_background(rng: np.random.Generator, width: int, height: int,
                    kind: str | None = None) -> tuple[np.ndarray, str]:
    kind = kind or KINDS[rng.integers(len(KINDS))]
    if kind == "flat":
        img = np.broadcast_to(_muted(rng), (height, width, 3)).astype(np.float32)
    elif kind == "gradient":
        a, b = _muted(rng), _muted(rng)
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = (xx / width - 0.5) * np.cos(theta) + (yy / height - 0.5) * np.sin(theta)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = a * (1 - t[..., None]) + b * t[..., None]
    elif kind == "noise":
        base = _muted(rng)
        noise = gaussian_filter(rng.normal(0, 1, (height, width)), rng.uniform(1, 6))
        noise = noise / max(float(noise.std()), 1e-6)
        img = base + rng.uniform(10, 30) * noise[..., None]
    elif kind == "photo":
        photos = _photos()
        src = photos[rng.integers(len(photos))]
        h, w = src.shape[:2]
        side = int(rng.uniform(0.3, 1.0) * min(h, w))
        y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(src[y0:y0 + side, x0:x0 + side]).resize((width, height), Image.BILINEAR)
        crop = np.asarray(crop, np.float32)
        mean = crop.mean(axis=(0, 1), keepdims=True)
        img = mean * 0.5 + 64 + (crop - mean) * rng.uniform(0.35, 0.6)
    else:
        raise ValueError(f"unknown background kind {kind!r}; choose from {KINDS}")
    return np.clip(img, 0, 255).astype(np.uint8), kind
