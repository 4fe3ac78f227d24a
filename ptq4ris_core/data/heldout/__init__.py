"""Held-out referring scenes: a scene style and phrasing that training never sees (issue 19).

``SceneGenerator(...).sample("heldout", i)`` comes here. The renderer (``render``) and
the grammar (``phrases``) are written apart from the training generator, so that a
model's score on this split measures how it copes with scenes it was not drawn from:
other backgrounds, shading, outlines, blur and JPEG noise, other sentence forms. The
sample is the same ``Sample`` as the other splits', with the same four kinds.
"""
from __future__ import annotations

import numpy as np

from .phrases import KINDS, phrase
from .render import place_objects, render


def sample_heldout(rng: np.random.Generator, width: int, height: int, kind: str, name: str = "heldout"):
    """One held-out scene whose expression, of ``kind``, picks out exactly one object."""
    from ..scenes import Sample  # scenes.py imports this package lazily; no cycle at import time
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    for _ in range(200):
        objs, masks = place_objects(rng, width, height)
        for t in rng.permutation(len(objs)):
            text = phrase(kind, objs, int(t), rng, width, height)
            if text is not None:
                image, bg = render(rng, objs, masks, width, height)
                return Sample(image, masks[t], text, kind, objs, int(t), bg)
    raise RuntimeError(f"could not build a {kind} expression for {name}")


__all__ = ["KINDS", "sample_heldout"]
