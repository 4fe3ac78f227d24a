"""Referring expressions of four kinds, each checked to pick out exactly one object.

Kinds: ``attribute`` (the small red circle), ``position`` (the triangle on the left),
``relation`` (the square left of the blue star), ``superlative`` (the leftmost circle).
Every builder returns ``None`` when the scene cannot support an unambiguous
expression of its kind; the generator then tries another target or scene.
"""
from __future__ import annotations

import itertools

import numpy as np

from .shapes import SceneObject

KINDS = ("attribute", "position", "relation", "superlative")
ATTRS = ("size", "colour", "shape")

SHAPE_WORDS = {"circle": ["circle", "circle", "disc"], "square": ["square"],
               "triangle": ["triangle"], "star": ["star"], "ring": ["ring", "ring", "donut"],
               "cross": ["cross", "cross", "plus sign"], "hexagon": ["hexagon"]}
SIZE_WORDS = {"small": ["small", "small", "little"], "large": ["large", "large", "big"]}
GENERIC_NOUNS = ["object", "shape", "one", "thing"]
PREFIXES = ["", "", "", "", "", "pick up ", "grab ", "find ", "segment ", "show me ", "point at "]

# Margins as a share of the image side, so that no expression hinges on a pixel.
EXTREME_GAP = 0.08
HALF_GAP = 0.2
RELATION_GAP = 0.06


def matches(obj: SceneObject, desc: dict) -> bool:
    return all(getattr(obj, k) == v for k, v in desc.items())


def noun_phrase(desc: dict, rng: np.random.Generator) -> str:
    words = []
    if "size" in desc:
        words.append(rng.choice(SIZE_WORDS[desc["size"]]))
    if "colour" in desc:
        words.append(desc["colour"])
    if "shape" in desc:
        words.append(rng.choice(SHAPE_WORDS[desc["shape"]]))
    else:
        nouns = GENERIC_NOUNS if words else GENERIC_NOUNS[:2]  # never a bare "the one"
        words.append(rng.choice(nouns))
    return " ".join(words)


def _descriptions(obj: SceneObject, include_empty: bool) -> list[dict]:
    """Every subset of the object's attributes, as a description dict."""
    out = []
    for r in range(0 if include_empty else 1, len(ATTRS) + 1):
        for keys in itertools.combinations(ATTRS, r):
            out.append({k: getattr(obj, k) for k in keys})
    return out


def _pick(rng, options):
    return options[rng.integers(len(options))] if options else None


def attribute_options(objs, t) -> list[dict]:
    """Descriptions that fit the target alone."""
    return [d for d in _descriptions(objs[t], False) if sum(matches(o, d) for o in objs) == 1]


def attribute(objs, t, rng, side):
    unique = attribute_options(objs, t)
    if not unique:
        return None
    smallest = min(len(d) for d in unique)
    # Mostly the shortest unique description, sometimes an over-specified one.
    pool = [d for d in unique if len(d) == smallest] if rng.random() < 0.7 else unique
    desc = _pick(rng, pool)
    np_ = noun_phrase(desc, rng)
    if "colour" in desc and rng.random() < 0.25:
        rest = {k: v for k, v in desc.items() if k != "colour"}
        return f"the {noun_phrase(rest, rng)} that is {desc['colour']}"
    return f"the {np_}"


_POSITION = {
    "left": ("x", -1, ["the {np} on the left", "the {np} on the left side", "the {np} at the left",
                       "on the left, the {np}"]),
    "right": ("x", 1, ["the {np} on the right", "the {np} on the right side", "the {np} at the right",
                        "on the right, the {np}"]),
    "top": ("y", -1, ["the {np} at the top", "the {np} near the top", "the upper {np}",
                      "at the top, the {np}"]),
    "bottom": ("y", 1, ["the {np} at the bottom", "the {np} near the bottom", "the lower {np}",
                        "at the bottom, the {np}"]),
}


def _coord(o: SceneObject, axis: str, side: tuple[int, int]) -> float:
    return o.cx / side[0] if axis == "x" else o.cy / side[1]


def position_options(objs, t, side) -> list[tuple[dict, str]]:
    """(description, side word) pairs where naming the image half tells the target from its look-alikes."""
    options = []
    for desc in _descriptions(objs[t], True):
        group = [i for i, o in enumerate(objs) if matches(o, desc)]
        if len(group) < 2:
            continue  # position must be needed to tell them apart
        for word, (axis, sign, _) in _POSITION.items():
            ct = sign * (_coord(objs[t], axis, side) - 0.5)
            others = [sign * (_coord(objs[i], axis, side) - 0.5) for i in group if i != t]
            # Target in the named half, every other candidate in the other half, well apart.
            if ct > 0 and all(c < 0 and ct - c > HALF_GAP for c in others):
                options.append((desc, word))
    return options


def position(objs, t, rng, side):
    choice = _pick(rng, position_options(objs, t, side))
    if choice is None:
        return None
    desc, word = choice
    return _pick(rng, _POSITION[word][2]).format(np=noun_phrase(desc, rng))


_EXTREMES = {
    "x-": ["the leftmost {np}", "the {np} furthest to the left", "the {np} farthest left"],
    "x+": ["the rightmost {np}", "the {np} furthest to the right", "the {np} farthest right"],
    "y-": ["the topmost {np}", "the highest {np}", "the {np} closest to the top"],
    "y+": ["the bottommost {np}", "the lowest {np}", "the {np} closest to the bottom"],
    "r+": ["the largest {np}", "the biggest {np}"],
    "r-": ["the smallest {np}", "the tiniest {np}"],
}


def superlative_options(objs, t, side) -> list[tuple[dict, str]]:
    """(description, extreme key) pairs where the target is the clear extreme of its look-alikes."""
    options = []
    for desc in _descriptions(objs[t], True):
        group = [i for i, o in enumerate(objs) if matches(o, desc)]
        if len(group) < 2:
            continue
        for key in _EXTREMES:
            axis, sign = key[0], 1 if key[1] == "+" else -1
            if axis == "r":
                if "size" in desc:
                    continue  # "the largest large circle" says nothing
                rt = objs[t].radius
                others = [objs[i].radius for i in group if i != t]
                ok = all(rt > 1.25 * r for r in others) if sign > 0 else all(rt * 1.25 < r for r in others)
            else:
                val = {i: sign * _coord(objs[i], axis, side) for i in group}
                ok = all(val[t] - v > EXTREME_GAP for i, v in val.items() if i != t)
            if ok:
                options.append((desc, key))
    return options


def superlative(objs, t, rng, side):
    choice = _pick(rng, superlative_options(objs, t, side))
    if choice is None:
        return None
    desc, key = choice
    return _pick(rng, _EXTREMES[key]).format(np=noun_phrase(desc, rng))


_RELATIONS = {
    "left of": ("x", -1, ["the {t} left of the {a}", "the {t} to the left of the {a}",
                          "the {t} that is left of the {a}"]),
    "right of": ("x", 1, ["the {t} right of the {a}", "the {t} to the right of the {a}",
                          "the {t} that is right of the {a}"]),
    "above": ("y", -1, ["the {t} above the {a}", "the {t} over the {a}", "the {t} that is above the {a}"]),
    "below": ("y", 1, ["the {t} below the {a}", "the {t} under the {a}", "the {t} beneath the {a}"]),
}


def relation_options(objs, t, side) -> list[tuple[dict, list[dict], str]]:
    """(description, anchor descriptions, relation word) triples where the relation to a uniquely
    described anchor tells the target from its look-alikes."""
    options = []
    for a, anchor in enumerate(objs):
        if a == t:
            continue
        anchor_descs = [d for d in _descriptions(anchor, False)
                        if sum(matches(o, d) for o in objs) == 1]
        if not anchor_descs:
            continue
        for desc in _descriptions(objs[t], True):
            group = [i for i, o in enumerate(objs) if i != a and matches(o, desc)]
            if len(group) < 2:
                continue  # the relation must be needed
            for word, (axis, sign, _) in _RELATIONS.items():
                rel = {i: sign * (_coord(objs[i], axis, side) - _coord(anchor, axis, side)) for i in group}
                if rel[t] > RELATION_GAP and all(v < -RELATION_GAP for i, v in rel.items() if i != t):
                    options.append((desc, anchor_descs, word))
    return options


def relation(objs, t, rng, side):
    choice = _pick(rng, relation_options(objs, t, side))
    if choice is None:
        return None
    desc, anchor_descs, word = choice
    a_desc = min(anchor_descs, key=len) if rng.random() < 0.7 else _pick(rng, anchor_descs)
    return _pick(rng, _RELATIONS[word][2]).format(t=noun_phrase(desc, rng), a=noun_phrase(a_desc, rng))


BUILDERS = {"attribute": attribute, "position": position, "relation": relation, "superlative": superlative}


def build_expression(kind: str, objs: list[SceneObject], target: int, rng: np.random.Generator,
                     side: tuple[int, int]) -> str | None:
    text = BUILDERS[kind](objs, target, rng, side)
    if text is None:
        return None
    prefix = _pick(rng, PREFIXES)
    # A verb prefix reads naturally only before "the ...", not before "on the left, ...".
    if prefix and text.startswith("the "):
        return prefix + text
    return text
