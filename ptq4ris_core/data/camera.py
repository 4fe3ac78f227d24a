"""What a camera does to a scene before the model sees it, for training with ``variety=True``.

A robot's frames come in many sizes and aspect ratios (640x480, 1280x720, portrait crops) and are
stretched to the model's square input; objects appear larger or smaller; light is uneven; colours
shift with white balance; sensors add noise; motion and focus blur; streams are JPEG-compressed.
The training generator renders each varied scene in a frame of its own size and passes it through
these steps, then brings image and mask to the model's size as inference does.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageFilter
from scipy.ndimage import binary_erosion

from ..frames import resize_rgb

# Frame aspect ratios (width / height): square, 4:3, 16:9, and the portrait 3:4.
ASPECTS = (1.0, 1.0, 4 / 3, 4 / 3, 16 / 9, 3 / 4)
LONG_SIDE = (1.0, 2.5)  # the frame's long side, in model sides
SCENE_SCALE = (0.7, 1.15)  # all object radii together, so small and large keep their ratio
SHADE = (0.85, 1.08)  # an object's colour brightness against its named colour
OUTLINE_P, BLUR_P, JPEG_P = 0.35, 0.35, 0.4


def frame_size(rng: np.random.Generator, width: int, height: int) -> tuple[int, int]:
    """A camera frame size for a model that takes ``width`` x ``height``."""
    aspect = ASPECTS[int(rng.integers(len(ASPECTS)))]
    long_side = rng.uniform(*LONG_SIDE) * max(width, height)
    if aspect >= 1:
        return int(round(long_side)), int(round(long_side / aspect))
    return int(round(long_side * aspect)), int(round(long_side))


def shade(rng: np.random.Generator, base) -> tuple:
    """A shade of a named colour: brighter or darker overall, with a little hue jitter."""
    rgb = np.array(base, float) * rng.uniform(*SHADE) + rng.normal(0, 14, 3)
    return tuple(int(c) for c in np.clip(rgb, 0, 255))


def paint(rng: np.random.Generator, image: np.ndarray, colours: list, visible: list[np.ndarray]) -> np.ndarray:
    """Objects painted over the background: each with a soft shading ramp, sometimes all with dark
    outlines drawn on their own border pixels (the masks stay the drawn shapes)."""
    image = image.astype(np.float32)
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    outline = rng.random() < OUTLINE_P
    thick = max(1, int(round(min(h, w) / 100 * rng.uniform(0.6, 1.6))))
    ink = np.clip(rng.uniform(5, 60) + rng.normal(0, 6, 3), 0, 255)
    for rgb, m in zip(colours, visible):
        if not m.any():
            continue
        theta = rng.uniform(0, 2 * np.pi)
        ramp = ((xx[m] - xx[m].mean()) * np.cos(theta) + (yy[m] - yy[m].mean()) * np.sin(theta)) / max(h, w)
        image[m] = np.array(rgb, np.float32) * (1 + rng.uniform(0, 0.8) * ramp)[:, None]
        if outline:
            image[m & ~binary_erosion(m, iterations=thick)] = ink
    return image


def expose(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Lighting, exposure, white balance, sensor noise, blur and JPEG on a float (H, W, 3) image."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - w / 2) * np.cos(theta) + (yy - h / 2) * np.sin(theta)) / max(h, w)
    image = image * (1 + rng.uniform(0, 0.4) * ramp)[..., None]
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.8, 1.15) + mean * rng.uniform(0.85, 1.15)
    image = image * rng.uniform(0.94, 1.06, 3)
    image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.85, 1.15)
    image = image + rng.normal(0, rng.uniform(0, 6), image.shape)
    out = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))
    if rng.random() < BLUR_P:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * max(1.0, min(h, w) / 160)))
    if rng.random() < JPEG_P:
        import io
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=int(rng.integers(30, 91)))
        out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(out, np.uint8)


def to_model_size(image: np.ndarray, mask: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask stretched to the model's input as inference stretches a frame (``resize_rgb``);
    a model pixel belongs to the mask when at least half of the frame area under it does."""
    if width != height:
        raise ValueError(f"camera variety needs a square model input, not {width}x{height}")
    share = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return resize_rgb(image, width), share >= 0.5
