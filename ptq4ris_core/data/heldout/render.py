"""The held-out scene style's renderer: a look that training never sees (issue 19).

Written apart from ``scenes.py`` and ``backgrounds.py`` on purpose: only the shape
geometry (``SceneObject.rasterize``) and the vocabulary are shared. Scenes hold 3-5
objects that never overlap (so every mask is the whole shape), drawn in shaded
colours, sometimes with dark outlines, over flat, radial-gradient or blocky-noise
backgrounds, under a lighting gradient, then optionally blurred and JPEG re-encoded.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter
from scipy.ndimage import binary_erosion

from ..shapes import COLOURS, SceneObject

SHAPES = ("circle", "square", "triangle", "star")
COLOUR_NAMES = tuple(COLOURS)
SIZES = ("small", "large")
# Radius as a share of the shorter image side. The classes are far apart (ratio >= 1.5),
# so "small"/"large" and "biggest"/"smallest" never hinge on a pixel.
RADIUS = {"small": (0.065, 0.085), "large": (0.13, 0.16)}
BOUND = 1.21  # every outline in shapes.OUTLINES used here lies within this many radii of the centre
BACKGROUNDS = ("flat", "gradient", "noise")
N_OBJECTS = (3, 5)


def _gap(side: int) -> float:
    """Free pixels kept between two objects' bounding circles (outlines and blur never join them)."""
    return max(2.0, 0.03 * side)


def place_objects(rng: np.random.Generator, width: int, height: int) -> tuple[list[SceneObject], list[np.ndarray]]:
    """3-5 objects, fully inside the image, bounding circles apart; each with its (non-empty) mask."""
    side = min(width, height)
    for _ in range(100):
        n = int(rng.integers(N_OBJECTS[0], N_OBJECTS[1] + 1))
        objs, masks = [], []
        for _ in range(n):
            shape = SHAPES[rng.integers(len(SHAPES))]
            colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
            # Half the time reuse an earlier object's shape or colour, so distractors are common.
            if objs and rng.random() < 0.5:
                other = objs[rng.integers(len(objs))]
                if rng.random() < 0.5:
                    shape = other.shape
                else:
                    colour = other.colour
            size = SIZES[rng.integers(2)]
            obj = _place_one(rng, width, height, side, shape, colour, size, objs)
            if obj is None and size == "large":
                obj = _place_one(rng, width, height, side, shape, colour, "small", objs)
            if obj is None:
                break
            mask = obj.rasterize(width, height)
            if not mask.any():
                break
            objs.append(obj)
            masks.append(mask)
        if len(objs) == n:
            return objs, masks
    raise RuntimeError(f"cannot place {N_OBJECTS[0]} non-overlapping objects in {width}x{height}")


def _place_one(rng, width, height, side, shape, colour, size, objs):
    r = float(rng.uniform(*RADIUS[size])) * side
    reach = r * BOUND
    if 2 * reach >= min(width, height):
        return None
    for _ in range(60):
        cx, cy = rng.uniform(reach, width - reach), rng.uniform(reach, height - reach)
        if all(np.hypot(cx - o.cx, cy - o.cy) > reach + o.radius * BOUND + _gap(side) for o in objs):
            base = np.array(COLOURS[colour], float)
            # A shade of the named colour: darker or lighter overall, a little hue jitter.
            rgb = np.clip(base * rng.uniform(0.85, 1.08) + rng.normal(0, 8, 3), 0, 255)
            return SceneObject(shape, colour, size, float(cx), float(cy), r, float(rng.uniform(0, 2 * np.pi)),
                               tuple(int(c) for c in rgb))
    return None


def _tone(rng) -> np.ndarray:
    """A low-saturation colour with a brightness between the darkest and lightest object colours."""
    return np.clip(rng.uniform(75, 185) + rng.normal(0, 14, 3), 0, 255)


def background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, str]:
    name = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if name == "flat":
        img = np.empty((height, width, 3), np.float32)
        img[:] = _tone(rng)
    elif name == "gradient":  # radial, from a random centre
        inner, outer = _tone(rng), _tone(rng)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        d = np.hypot(xx - cx, yy - cy)
        d /= max(float(d.max()), 1e-6)
        img = inner * (1 - d[..., None]) + outer * d[..., None]
    else:  # blocky value noise: a coarse random grid, upsampled smoothly
        cells = int(rng.integers(3, 12))
        gw, gh = max(2, round(cells * width / max(width, height))), max(2, round(cells * height / max(width, height)))
        grid = rng.normal(0, 1, (gh, gw)).astype(np.float32)
        up = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32)
        img = _tone(rng) + rng.uniform(12, 28) * up[..., None] + rng.normal(0, 4, (height, width, 3))
    return img.astype(np.float32), name


def render(rng: np.random.Generator, objs: list[SceneObject], masks: list[np.ndarray],
           width: int, height: int) -> tuple[np.ndarray, str]:
    """The scene as (H, W, 3) uint8 RGB and its background's name."""
    img, name = background(rng, width, height)
    side = min(width, height)
    outlined = rng.random() < 0.5
    thick = max(1, int(round(side / 110)))
    ink = rng.uniform(10, 45)
    for obj, m in zip(objs, masks):
        img[m] = obj.rgb
        if outlined:  # drawn on the shape's own border pixels, so the mask stays the drawn shape
            edge = m & ~binary_erosion(m, iterations=thick)
            img[edge] = ink
    # Lighting: a linear brightness ramp across the whole image.
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = ((xx - width / 2) * np.cos(theta) + (yy - height / 2) * np.sin(theta)) / max(width, height)
    img *= (1 + rng.uniform(0.1, 0.3) * ramp)[..., None]
    img += rng.normal(0, rng.uniform(0, 4), img.shape)
    out = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8))
    if rng.random() < 0.35:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.1)) * max(1.0, side / 200)))
    if rng.random() < 0.4:
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=int(rng.integers(35, 86)))
        out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.array(out, dtype=np.uint8), name
