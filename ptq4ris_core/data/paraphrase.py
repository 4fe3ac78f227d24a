"""A wider phrasing grammar for training: the same facts as ``expressions.py``, said many ways.

``expressions.py`` decides what can be said of a target (which descriptions, sides, anchors and
extremes pick it out alone); this module only says it. Sentences come with or without articles,
with synonyms for shapes, sizes and colours, adjectives in either order, attributes after the noun
("the circle that is red", "box in blue"), the position before or after the noun ("the left
star", "star in the left half"), relations and extremes in several forms, a verb or request in
front and sometimes closing punctuation. Used when a generator is built with ``variety=True``
(the default model's training), never by the test split, whose sentences stay as published.
"""
from __future__ import annotations

import numpy as np

from .expressions import (attribute_options, position_options, relation_options,
                          superlative_options)

SHAPES = {"circle": ("circle", "circle", "disc", "disk", "round shape"),
          "square": ("square", "square", "box", "block"),
          "triangle": ("triangle",), "star": ("star", "star", "five-pointed star"),
          "ring": ("ring", "ring", "donut", "hoop"), "cross": ("cross", "cross", "plus sign", "plus"),
          "hexagon": ("hexagon",)}
SIZES = {"small": ("small", "small", "little", "tiny"), "large": ("large", "large", "big", "huge")}
COLOURS = {"purple": ("purple", "purple", "violet")}
NOUNS = ("object", "shape", "thing", "item", "figure")
REQUESTS = ("pick up", "grab", "find", "segment", "show me", "point at", "select", "highlight", "locate",
            "where is", "look at", "give me", "take", "get", "please pick up", "can you find", "i want",
            "go to", "touch", "mark")

SIDE_AFTER = {"left": ("on the left", "on the left side", "at the left", "in the left half",
                       "on the left-hand side", "to the left"),
              "right": ("on the right", "on the right side", "at the right", "in the right half",
                        "on the right-hand side", "to the right"),
              "top": ("at the top", "near the top", "in the top half", "in the upper half", "up top",
                      "at the top of the picture"),
              "bottom": ("at the bottom", "near the bottom", "in the bottom half", "in the lower half",
                         "down at the bottom", "at the bottom of the picture")}
SIDE_BEFORE = {"left": ("left", "left-hand"), "right": ("right", "right-hand"),
               "top": ("top", "upper"), "bottom": ("bottom", "lower")}
RELATIONS = {"left of": ("left of", "to the left of", "on the left of", "on the left side of"),
             "right of": ("right of", "to the right of", "on the right of", "on the right side of"),
             "above": ("above", "over", "higher than", "higher up than"),
             "below": ("below", "under", "beneath", "underneath", "lower than")}
EXTREME_BEFORE = {"x-": ("leftmost", "left-most"), "x+": ("rightmost", "right-most"),
                  "y-": ("topmost", "highest", "uppermost"), "y+": ("bottommost", "lowest"),
                  "r+": ("largest", "biggest"), "r-": ("smallest", "tiniest")}
EXTREME_AFTER = {"x-": ("furthest to the left", "farthest left", "most to the left"),
                 "x+": ("furthest to the right", "farthest right", "most to the right"),
                 "y-": ("closest to the top", "nearest the top", "nearest to the top"),
                 "y+": ("closest to the bottom", "nearest the bottom", "nearest to the bottom"),
                 "r+": ("that is biggest", "that is largest"), "r-": ("that is smallest",)}


def _one(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _the(rng) -> str:
    return "the " if rng.random() < 0.75 else ""


def noun_phrase(desc: dict, rng: np.random.Generator, trailing: bool = True) -> str:
    """Adjectives and a noun; with ``trailing``, one attribute may follow the noun instead."""
    desc = dict(desc)
    after = ""
    movable = [k for k in ("colour", "size") if k in desc]
    if trailing and movable and rng.random() < 0.25:
        key = _one(rng, movable)
        word = _adjective(key, desc.pop(key), rng)
        after = " " + (_one(rng, ("that is ", "which is ", "that's ")) + word if key == "size"
                       else _one(rng, ("that is ", "which is ", "in ", "coloured ")) + word)
    adjectives = [_adjective(k, desc[k], rng) for k in ("size", "colour") if k in desc]
    if len(adjectives) == 2 and rng.random() < 0.2:
        adjectives.reverse()
    if "shape" in desc:
        noun = _one(rng, SHAPES[desc["shape"]])
    else:
        noun = _one(rng, NOUNS + (("one",) if adjectives else ()))
    return " ".join(adjectives + [noun]) + after


def _adjective(key: str, value: str, rng) -> str:
    if key == "size":
        return _one(rng, SIZES[value])
    return _one(rng, COLOURS.get(value, (value,)))


def attribute(objs, t, rng, side):
    unique = attribute_options(objs, t)
    if not unique:
        return None
    shortest = min(map(len, unique))
    desc = _one(rng, [d for d in unique if len(d) == shortest] if rng.random() < 0.7 else unique)
    return _the(rng) + noun_phrase(desc, rng)


def position(objs, t, rng, side):
    options = position_options(objs, t, side)
    if not options:
        return None
    desc, word = _one(rng, options)
    form = rng.random()
    if form < 0.25:
        return f"the {_one(rng, SIDE_BEFORE[word])} {noun_phrase(desc, rng, trailing=False)}"
    if form < 0.35:
        return f"{_one(rng, SIDE_AFTER[word])}, {_the(rng)}{noun_phrase(desc, rng)}"
    return f"{_the(rng)}{noun_phrase(desc, rng, trailing=False)} {_one(rng, SIDE_AFTER[word])}"


def relation(objs, t, rng, side):
    options = relation_options(objs, t, side)
    if not options:
        return None
    desc, anchor_descs, word = _one(rng, options)
    anchor = min(anchor_descs, key=len) if rng.random() < 0.65 else _one(rng, anchor_descs)
    link = _one(rng, ("", "", "", "that is ", "which is ", "that's "))
    return (f"{_the(rng)}{noun_phrase(desc, rng, trailing=False)} {link}{_one(rng, RELATIONS[word])} "
            f"{_the(rng)}{noun_phrase(anchor, rng, trailing=False)}")


def superlative(objs, t, rng, side):
    options = superlative_options(objs, t, side)
    if not options:
        return None
    desc, key = _one(rng, options)
    if rng.random() < 0.35:
        link = "" if key[0] == "r" else _one(rng, ("", "that is ", "which is "))
        return f"{_the(rng)}{noun_phrase(desc, rng, trailing=False)} {link}{_one(rng, EXTREME_AFTER[key])}"
    return f"{_the(rng)}{_one(rng, EXTREME_BEFORE[key])} {noun_phrase(desc, rng, trailing=False)}"


BUILDERS = {"attribute": attribute, "position": position, "relation": relation, "superlative": superlative}


def paraphrase(kind: str, objs, target: int, rng: np.random.Generator, side: tuple[int, int]) -> str | None:
    """A ``kind`` expression for ``objs[target]`` in the wide grammar, or ``None`` if the scene has none."""
    text = BUILDERS[kind](objs, target, rng, side)
    if text is None:
        return None
    if not text.startswith(("on ", "in ", "at ", "near ", "up ", "down ", "to ")) and rng.random() < 0.3:
        text = f"{_one(rng, REQUESTS)} {text}"
    if rng.random() < 0.15:
        text += _one(rng, (".", "?", "!", " please"))
    return text
