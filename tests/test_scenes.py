"""The scene generator: determinism, exact masks, one referent per expression, balanced content."""
import hashlib
import re

import numpy as np
import pytest

from ptq4ris_core.data import KINDS, SceneGenerator
from ptq4ris_core.data.backgrounds import KINDS as BACKGROUNDS
from ptq4ris_core.data.scenes import _visible_masks
from ptq4ris_core.data.shapes import COLOURS, SHAPES

N = 400


@pytest.fixture(scope="module")
def test_samples():
    gen = SceneGenerator(128)
    return [gen.sample("test", i) for i in range(N)]


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = SceneGenerator(96, seed=3), SceneGenerator(96, seed=3), SceneGenerator(96, seed=4)
    for i in (0, 7, 123):
        sa, sb, sc = a.sample("val", i), b.sample("val", i), c.sample("val", i)
        assert np.array_equal(sa.image, sb.image) and np.array_equal(sa.mask, sb.mask) and sa.text == sb.text
        assert not np.array_equal(sa.image, sc.image)


def test_splits_never_share_a_scene():
    gen = SceneGenerator(64)
    digests = {s: {hashlib.sha1(gen.sample(s, i).image.tobytes()).hexdigest() for i in range(300)}
               for s in ("train", "val", "test")}
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown split"):
        SceneGenerator(64).sample("testing", 0)


def test_mask_is_exactly_the_visible_drawn_object(test_samples):
    for s in test_samples[:100]:
        h, w = s.mask.shape
        visible = _visible_masks([o.rasterize(w, h) for o in s.objects])
        assert np.array_equal(visible[s.target], s.mask)
        assert s.mask.sum() > 0
        # Every mask pixel carries the target's own colour; later objects covered the rest.
        assert (s.image[s.mask] == np.array(s.objects[s.target].rgb, np.uint8)).all()


# --- An independent reader of the expressions: parse the text, resolve it on the scene. ---
SIZE = {"small": "small", "little": "small", "large": "large", "big": "large"}
SHAPE = {"circle": "circle", "disc": "circle", "square": "square", "triangle": "triangle", "star": "star",
         "ring": "ring", "donut": "ring", "cross": "cross", "plus_sign": "cross", "hexagon": "hexagon"}
GENERIC = {"object", "shape", "one", "thing"}
VERBS = ("pick up ", "grab ", "find ", "segment ", "show me ", "point at ")


def parse_np(np_: str) -> dict:
    desc = {}
    for word in np_.replace("plus sign", "plus_sign").split():
        if word in SIZE:
            desc["size"] = SIZE[word]
        elif word in COLOURS:
            desc["colour"] = word
        elif word in SHAPE:
            desc["shape"] = SHAPE[word]
        else:
            assert word in GENERIC, f"unexpected word {word!r} in {np_!r}"
    return desc


def select(objs, desc):
    return [i for i, o in enumerate(objs) if all(getattr(o, k) == v for k, v in desc.items())]


def resolve(text: str, objs, w: int, h: int) -> list[int]:
    """Indices of the objects the text can mean; a well-formed expression gives exactly one."""
    for v in VERBS:
        if text.startswith(v):
            text = text[len(v):]
    x = {i: o.cx / w for i, o in enumerate(objs)}
    y = {i: o.cy / h for i, o in enumerate(objs)}
    r = {i: o.radius for i, o in enumerate(objs)}
    rel = re.fullmatch(r"the (.+?) (?:to the |that is |on the )?(left of|right of|above|over|below|under|beneath) the (.+)",
                       text)
    if rel:
        anchors = select(objs, parse_np(rel.group(3)))
        if len(anchors) != 1:
            return anchors and []
        a = anchors[0]
        test = {"left of": lambda i: x[i] < x[a], "right of": lambda i: x[i] > x[a], "above": lambda i: y[i] < y[a],
                "over": lambda i: y[i] < y[a], "below": lambda i: y[i] > y[a], "under": lambda i: y[i] > y[a],
                "beneath": lambda i: y[i] > y[a]}[rel.group(2)]
        return [i for i in select(objs, parse_np(rel.group(1))) if i != a and test(i)]
    pos = (re.fullmatch(r"the (.+) (?:on|at|near) the (left|right|top|bottom)(?: side)?", text)
           or re.fullmatch(r"(?:on|at) the (left|right|top|bottom), the (.+)", text))
    upper_lower = re.fullmatch(r"the (upper|lower) (.+)", text)
    if pos or upper_lower:
        if upper_lower:
            where, np_ = {"upper": "top", "lower": "bottom"}[upper_lower.group(1)], upper_lower.group(2)
        else:
            g = pos.groups()
            where, np_ = (g[1], g[0]) if g[0] not in ("left", "right", "top", "bottom") else (g[0], g[1])
        half = {"left": lambda i: x[i] < 0.5, "right": lambda i: x[i] > 0.5, "top": lambda i: y[i] < 0.5,
                "bottom": lambda i: y[i] > 0.5}[where]
        return [i for i in select(objs, parse_np(np_)) if half(i)]
    sup = re.fullmatch(r"the (leftmost|rightmost|topmost|highest|bottommost|lowest|largest|biggest|smallest|tiniest) (.+)",
                       text) or re.fullmatch(r"the (.+) (furthest to the left|farthest left|furthest to the right|"
                                             r"farthest right|closest to the top|closest to the bottom)", text)
    if sup:
        a, b = sup.groups()
        word, np_ = (a, b) if " " not in a and a.endswith(("most", "est")) else (b, a)
        key = {"leftmost": (x, -1), "furthest to the left": (x, -1), "farthest left": (x, -1),
               "rightmost": (x, 1), "furthest to the right": (x, 1), "farthest right": (x, 1),
               "topmost": (y, -1), "highest": (y, -1), "closest to the top": (y, -1),
               "bottommost": (y, 1), "lowest": (y, 1), "closest to the bottom": (y, 1),
               "largest": (r, 1), "biggest": (r, 1), "smallest": (r, -1), "tiniest": (r, -1)}[word]
        vals, sign = key
        group = select(objs, parse_np(np_))
        ranked = sorted(group, key=lambda i: -sign * vals[i])
        if len(ranked) > 1 and abs(vals[ranked[0]] - vals[ranked[1]]) < 1e-9:
            return ranked[:2]  # a tie is ambiguous
        return ranked[:1]
    m = re.fullmatch(r"the (.+) that is (\w+)", text)
    if m:
        return select(objs, {**parse_np(m.group(1)), "colour": m.group(2)})
    m = re.fullmatch(r"the (.+)", text)
    assert m, f"cannot read {text!r}"
    return select(objs, parse_np(m.group(1)))


def test_every_expression_picks_out_exactly_its_referent(test_samples):
    for s in test_samples:
        h, w = s.mask.shape
        assert resolve(s.text, s.objects, w, h) == [s.target], (s.kind, s.text)


def test_test_split_meets_the_difficulty_floor(test_samples):
    kinds = [s.kind for s in test_samples]
    assert set(kinds) == set(KINDS) and min(kinds.count(k) for k in KINDS) >= N // 4 - 1
    n_objs = [len(s.objects) for s in test_samples]
    assert min(n_objs) >= 2 and max(n_objs) <= 6 and np.mean(n_objs) >= 3.5
    assert {o.shape for s in test_samples for o in s.objects} == set(SHAPES) and len(SHAPES) >= 6
    assert {o.colour for s in test_samples for o in s.objects} == set(COLOURS) and len(COLOURS) >= 8
    assert {o.size for s in test_samples for o in s.objects} == {"small", "large"}
    assert {s.background for s in test_samples} == set(BACKGROUNDS)
    distractor = [any(i != s.target and (o.colour == s.objects[s.target].colour or o.shape == s.objects[s.target].shape)
                      for i, o in enumerate(s.objects)) for s in test_samples]
    assert np.mean(distractor) >= 0.5
    # Objects are rotated and scaled, not stamped.
    assert len({round(o.angle, 3) for s in test_samples for o in s.objects}) > 100
    assert len({round(o.radius, 2) for s in test_samples for o in s.objects}) > 50


def test_word_order_and_phrasing_vary(test_samples):
    texts = [s.text for s in test_samples]
    assert len(set(texts)) > 0.8 * len(texts)
    assert any(t.startswith(("on the", "at the")) for t in texts)  # position before the noun
    assert any("that is" in t for t in texts)


def test_any_image_size_renders():
    s = SceneGenerator(320, 240).sample("train", 5)
    assert s.image.shape == (240, 320, 3) and s.mask.shape == (240, 320)
