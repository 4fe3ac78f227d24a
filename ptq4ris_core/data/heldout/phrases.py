"""The held-out scene style's phrasing: a grammar training never sees (issue 19).

Written apart from ``expressions.py``: its own sentence forms, synonyms and word
orders, with and without articles ("red circle", "the circle that is red", "find the
red circle", "box to the left of the blue star", "the star on the left side", "the
biggest shape", "leftmost star", "the disk furthest to the right"). The four kinds are
the training ones, so scores stay comparable by kind. Every builder checks, on the
objects' attributes and positions with margins, that its phrase picks out the target
alone, and returns ``None`` when the scene cannot support one.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from ..shapes import SceneObject

KINDS = ("attribute", "position", "relation", "superlative")
ATTRIBUTES = ("size", "colour", "shape")

SHAPE_NOUNS = {"circle": ("circle", "disk"), "square": ("square", "box"), "triangle": ("triangle",),
               "star": ("star",)}
COLOUR_WORDS = {"red": ("red",), "green": ("green",), "blue": ("blue",), "yellow": ("yellow",),
                "orange": ("orange",), "purple": ("purple", "violet"), "white": ("white",), "black": ("black",)}
SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
GENERIC_NOUNS = ("object", "shape", "item", "thing")
VERBS = ("find ", "show me ", "select ", "highlight ", "where is ", "look at ")

# Position words: after the noun phrase, or before the noun (always with "the").
SIDE_AFTER = {"left": ("on the left side", "on the left", "in the left half"),
              "right": ("on the right side", "on the right", "in the right half"),
              "top": ("at the top", "in the upper half", "near the top"),
              "bottom": ("at the bottom", "in the lower half", "near the bottom")}
SIDE_BEFORE = {"left": ("left", "left-hand"), "right": ("right", "right-hand"),
               "top": ("top", "upper"), "bottom": ("bottom", "lower")}
SIDE_AXIS = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}

RELATION_WORDS = {"left": ("to the left of", "left of", "on the left of"),
                  "right": ("to the right of", "right of", "on the right of"),
                  "above": ("above", "over", "higher than"),
                  "below": ("below", "under", "lower than")}
RELATION_AXIS = {"left": (0, -1), "right": (0, 1), "above": (1, -1), "below": (1, 1)}

EXTREME_BEFORE = {("x", -1): ("leftmost",), ("x", 1): ("rightmost",), ("y", -1): ("topmost", "highest"),
                  ("y", 1): ("bottommost", "lowest"), ("r", 1): ("biggest", "largest"),
                  ("r", -1): ("smallest", "tiniest")}
EXTREME_AFTER = {("x", -1): ("furthest to the left", "farthest left"),
                 ("x", 1): ("furthest to the right", "farthest right"),
                 ("y", -1): ("closest to the top", "nearest the top"),
                 ("y", 1): ("closest to the bottom", "nearest the bottom")}

# Margins, as shares of the image's width or height (radius ratio for size).
SIDE_MARGIN = 0.03  # the target this far into its half, every other candidate this far into the other
SIDE_SPREAD = 0.18  # and this far from the target
EXTREME_MARGIN = 0.1
SIZE_RATIO = 1.3
RELATION_MARGIN = 0.07


def _choose(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _norm(obj: SceneObject, axis: int, width: int, height: int) -> float:
    return obj.cx / width if axis == 0 else obj.cy / height


def _fits(obj: SceneObject, desc: dict) -> bool:
    return all(getattr(obj, key) == value for key, value in desc.items())


def _members(objs, desc, skip=None) -> list[int]:
    return [i for i, o in enumerate(objs) if i != skip and _fits(o, desc)]


def _subsets(obj: SceneObject, empty: bool) -> list[dict]:
    return [{key: getattr(obj, key) for key in keys}
            for n in range(0 if empty else 1, len(ATTRIBUTES) + 1) for keys in combinations(ATTRIBUTES, n)]


def noun_phrase(desc: dict, rng: np.random.Generator) -> str:
    """Adjectives and a noun; size and colour sometimes swap places."""
    adjectives = []
    if "size" in desc:
        adjectives.append(_choose(rng, SIZE_WORDS[desc["size"]]))
    if "colour" in desc:
        adjectives.append(_choose(rng, COLOUR_WORDS[desc["colour"]]))
    if len(adjectives) == 2 and rng.random() < 0.25:
        adjectives.reverse()
    if "shape" in desc:
        noun = _choose(rng, SHAPE_NOUNS[desc["shape"]])
    else:
        noun = _choose(rng, GENERIC_NOUNS + (("one",) if adjectives else ()))
    return " ".join(adjectives + [noun])


def _article(rng) -> str:
    return "the " if rng.random() < 0.7 else ""


def attribute(objs, t, rng, width, height) -> str | None:
    unique = [d for d in _subsets(objs[t], False) if len(_members(objs, d)) == 1]
    if not unique:
        return None
    shortest = min(map(len, unique))
    desc = _choose(rng, [d for d in unique if len(d) == shortest] if rng.random() < 0.65 else unique)
    art = _article(rng)
    trailing = [k for k in ("colour", "size") if k in desc]
    if trailing and rng.random() < 0.35:  # "the circle that is red", "box which is small"
        key = _choose(rng, trailing)
        rest = {k: v for k, v in desc.items() if k != key}
        words = COLOUR_WORDS if key == "colour" else SIZE_WORDS
        link = _choose(rng, ("that is", "which is"))
        return f"{art}{noun_phrase(rest, rng)} {link} {_choose(rng, words[desc[key]])}"
    return art + noun_phrase(desc, rng)


def position(objs, t, rng, width, height) -> str | None:
    options = []
    for desc in _subsets(objs[t], True):
        group = _members(objs, desc)
        if len(group) < 2:
            continue  # the position must be what tells the target apart
        for side, (axis, sign) in SIDE_AXIS.items():
            into = {i: sign * (_norm(objs[i], axis, width, height) - 0.5) for i in group}
            if into[t] > SIDE_MARGIN and all(v < -SIDE_MARGIN and into[t] - v > SIDE_SPREAD
                                             for i, v in into.items() if i != t):
                options.append((desc, side))
    if not options:
        return None
    desc, side = _choose(rng, options)
    if rng.random() < 0.3:
        return f"the {_choose(rng, SIDE_BEFORE[side])} {noun_phrase(desc, rng)}"
    return f"{_article(rng)}{noun_phrase(desc, rng)} {_choose(rng, SIDE_AFTER[side])}"


def relation(objs, t, rng, width, height) -> str | None:
    options = []
    for a in range(len(objs)):
        if a == t:
            continue
        anchor_descs = [d for d in _subsets(objs[a], False) if len(_members(objs, d)) == 1]
        if not anchor_descs:
            continue
        for desc in _subsets(objs[t], True):
            group = _members(objs, desc, skip=a)
            if len(group) < 2:
                continue  # the relation must be what tells the target apart
            for rel, (axis, sign) in RELATION_AXIS.items():
                anchor = _norm(objs[a], axis, width, height)
                off = {i: sign * (_norm(objs[i], axis, width, height) - anchor) for i in group}
                if off[t] > RELATION_MARGIN and all(v < -RELATION_MARGIN for i, v in off.items() if i != t):
                    options.append((desc, a, anchor_descs, rel))
    if not options:
        return None
    desc, a, anchor_descs, rel = _choose(rng, options)
    a_desc = min(anchor_descs, key=len) if rng.random() < 0.6 else _choose(rng, anchor_descs)
    art = _article(rng)
    link = _choose(rng, ("", "", "that is ", "which is "))
    return (f"{art}{noun_phrase(desc, rng)} {link}{_choose(rng, RELATION_WORDS[rel])} "
            f"{art}{noun_phrase(a_desc, rng)}")


def superlative(objs, t, rng, width, height) -> str | None:
    options = []
    for desc in _subsets(objs[t], True):
        group = _members(objs, desc)
        if len(group) < 2:
            continue
        others = [i for i in group if i != t]
        for key in EXTREME_BEFORE:
            quantity, sign = key
            if quantity == "r":
                if "size" in desc:
                    continue  # "the biggest large box" says nothing more
                ok = all((objs[t].radius > SIZE_RATIO * objs[i].radius) if sign > 0
                         else (objs[t].radius * SIZE_RATIO < objs[i].radius) for i in others)
            else:
                axis = 0 if quantity == "x" else 1
                v = sign * _norm(objs[t], axis, width, height)
                ok = all(v - sign * _norm(objs[i], axis, width, height) > EXTREME_MARGIN for i in others)
            if ok:
                options.append((desc, key))
    if not options:
        return None
    desc, key = _choose(rng, options)
    art = _article(rng)
    if key in EXTREME_AFTER and rng.random() < 0.4:
        link = _choose(rng, ("", "that is "))
        return f"{art}{noun_phrase(desc, rng)} {link}{_choose(rng, EXTREME_AFTER[key])}"
    return f"{art}{_choose(rng, EXTREME_BEFORE[key])} {noun_phrase(desc, rng)}"


BUILDERS = {"attribute": attribute, "position": position, "relation": relation, "superlative": superlative}


def phrase(kind: str, objs: list[SceneObject], t: int, rng: np.random.Generator,
           width: int, height: int) -> str | None:
    """A ``kind`` expression for ``objs[t]`` that no other object fits, or ``None``."""
    text = BUILDERS[kind](objs, t, rng, width, height)
    if text is not None and text.startswith("the ") and rng.random() < 0.3:
        text = _choose(rng, VERBS) + text
    return text
