"""Referring scenes: a rendered image, one expression, the exact mask of its referent.

A sample is a pure function of (seed, split, index): the same triple always gives
the same scene, and different splits draw from disjoint random streams.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import camera
from .backgrounds import make_background
from .expressions import KINDS, build_expression
from .paraphrase import paraphrase
from .shapes import COLOURS, SHAPES, SIZE_RADIUS, SIZES, SceneObject

SPLITS = {"train": 0, "val": 1, "test": 2, "heldout": 3}
# How many scenes each split holds. Any index below is a fixed scene; the default model was
# trained on train[0:352000]; calibration draws from the whole train split. "heldout" is drawn by
# its own renderer and grammar (data/heldout/), a style that training never sees.
SPLIT_SIZES = {"train": 1_000_000, "val": 10_000, "test": 10_000, "heldout": 10_000}
MIN_VISIBLE = 0.6  # each object keeps at least this share of its area after occlusion
COPY_ATTR_P = 0.45  # chance that a new object copies an earlier one's shape or colour


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) bool, visible pixels of the referent
    text: str
    kind: str
    objects: list = field(default_factory=list)
    target: int = 0
    background: str = ""
    frame: tuple = ()  # (width, height) the objects were drawn in, when not the image's own (variety)


class SceneGenerator:
    """Draws referring scenes of a fixed size; see ``sample``.

    With ``variety`` (training the default model: the share of scenes so drawn) a scene is drawn in a camera frame of its
    own size and aspect, with scaled objects, overlap or none, shaded and outlined objects, the
    camera's light, noise, blur and JPEG (``camera.py``), and said in the wide grammar
    (``paraphrase.py``); the image and mask are then stretched to the model's size. Without it (every
    evaluation split) scenes are exactly as they always were for a given (seed, split, index).
    """

    def __init__(self, width: int = 128, height: int | None = None, seed: int = 0, variety: float = 0.0):
        self.width, self.height, self.seed, self.variety = width, height or width, seed, variety

    def rng_for(self, split: str, index: int) -> np.random.Generator:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
        return np.random.default_rng(np.random.SeedSequence([self.seed, SPLITS[split], index]))

    def sample(self, split: str, index: int, kind: str | None = None) -> Sample:
        """Sample ``index`` of ``split``. Kinds rotate with the index so every split is balanced."""
        rng = self.rng_for(split, index)
        if not 0 <= index < SPLIT_SIZES[split]:
            raise IndexError(f"{split} holds scenes 0..{SPLIT_SIZES[split] - 1}, not {index}")
        kind = kind or KINDS[index % len(KINDS)]
        if split == "heldout":
            from .heldout import sample_heldout
            return sample_heldout(rng, self.width, self.height, kind, f"{split}[{index}]")
        if self.variety and (self.variety >= 1 or rng.random() < self.variety):
            return self._varied(rng, kind, f"{split}[{index}]")
        for _ in range(200):
            objs, full = self._objects(rng, self.width, self.height)
            visible = _visible_masks(full)
            for t in rng.permutation(len(objs)):
                text = build_expression(kind, objs, int(t), rng, (self.width, self.height))
                if text is not None:
                    image, bg = self._render(rng, objs, visible)
                    return Sample(image, visible[t], text, kind, objs, int(t), bg)
        raise RuntimeError(f"could not build a {kind} expression for {split}[{index}]")

    def _varied(self, rng, kind: str, name: str) -> Sample:
        width, height = camera.frame_size(rng, self.width, self.height)
        scale = rng.uniform(*camera.SCENE_SCALE)
        min_visible = 1.0 if rng.random() < 0.4 else MIN_VISIBLE  # 40 % of scenes keep objects apart
        for _ in range(200):
            objs, full = self._objects(rng, width, height, scale, min_visible, max_objects=7)
            visible = _visible_masks(full)
            for t in rng.permutation(len(objs)):
                text = paraphrase(kind, objs, int(t), rng, (width, height))
                if text is not None:
                    image, bg = make_background(rng, width, height)
                    image = camera.paint(rng, image, [o.rgb for o in objs], visible)
                    image, mask = camera.to_model_size(camera.expose(rng, image), visible[t], self.width, self.height)
                    return Sample(image, mask, text, kind, objs, int(t), bg, (width, height))
        raise RuntimeError(f"could not build a {kind} expression for {name}")

    def _objects(self, rng, width, height, scale=None, min_visible=MIN_VISIBLE, max_objects=6):
        """2..max_objects objects, each keeping ``min_visible`` of itself; ``scale`` (varied scenes
        only) multiplies every radius and asks for shaded colours."""
        side = min(width, height)
        n = int(rng.integers(2, max_objects + 1))
        objs, full = [], []
        for _ in range(n):
            shape = SHAPES[rng.integers(len(SHAPES))]
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            if objs and rng.random() < COPY_ATTR_P:
                shape = objs[rng.integers(len(objs))].shape
            if objs and rng.random() < COPY_ATTR_P:
                colour = objs[rng.integers(len(objs))].colour
            size = SIZES[rng.integers(2)]
            for _ in range(20):  # placements; give up on this object if none keeps the others visible
                r = rng.uniform(*SIZE_RADIUS[size]) * side * (scale or 1.0)
                x, y, angle = rng.uniform(r, width - r), rng.uniform(r, height - r), rng.uniform(0, 2 * np.pi)
                rgb = (tuple(int(c) for c in np.clip(np.array(COLOURS[colour]) + rng.normal(0, 12, 3), 0, 255))
                       if scale is None else camera.shade(rng, COLOURS[colour]))
                obj = SceneObject(shape, colour, size, x, y, r, angle, rgb)
                m = obj.rasterize(width, height)
                if all((f & ~m).sum() >= min_visible * f.sum() for f in _visible_masks(full)) and m.sum() > 0:
                    objs.append(obj)
                    full.append(m)
                    break
        if len(objs) < 2:
            return self._objects(rng, width, height, scale, min_visible, max_objects)
        return objs, full

    def _render(self, rng, objs, visible):
        image, bg = make_background(rng, self.width, self.height)
        image = image.copy()
        for obj, m in zip(objs, visible):
            image[m] = obj.rgb
        return image, bg


def _visible_masks(full: list[np.ndarray]) -> list[np.ndarray]:
    """Later objects are drawn on top: each mask loses what later ones cover."""
    out, cover = [None] * len(full), None
    for i in range(len(full) - 1, -1, -1):
        out[i] = full[i] if cover is None else full[i] & ~cover
        cover = full[i] if cover is None else cover | full[i]
    return out
