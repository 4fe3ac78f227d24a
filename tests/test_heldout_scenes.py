"""The held-out split (issue 19): a scene style and phrasing training never sees.

Checks determinism, that it shares no scene with the other splits, exact non-overlapping
masks, and, through an independent reader of the held-out grammar, that every
expression picks out exactly its referent.
"""
import hashlib
import re

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from ptq4ris_core.data import KINDS, SPLIT_SIZES, SPLITS, SceneGenerator
from ptq4ris_core.data.heldout import KINDS as HELDOUT_KINDS
from ptq4ris_core.data.shapes import COLOURS

N = 400


@pytest.fixture(scope="module")
def samples():
    gen = SceneGenerator(128)
    return [gen.sample("heldout", i) for i in range(N)]


def test_split_is_registered_with_its_own_stream():
    assert SPLIT_SIZES["heldout"] == 10_000
    assert len(set(SPLITS.values())) == len(SPLITS) and SPLITS["heldout"] not in (
        SPLITS["train"], SPLITS["val"], SPLITS["test"])
    assert HELDOUT_KINDS == KINDS
    with pytest.raises(IndexError):
        SceneGenerator(64).sample("heldout", 10_000)


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = SceneGenerator(96, seed=3), SceneGenerator(96, seed=3), SceneGenerator(96, seed=4)
    for i in (0, 7, 123):
        sa, sb, sc = a.sample("heldout", i), b.sample("heldout", i), c.sample("heldout", i)
        assert np.array_equal(sa.image, sb.image) and np.array_equal(sa.mask, sb.mask)
        assert sa.text == sb.text and sa.target == sb.target and sa.background == sb.background
        assert not np.array_equal(sa.image, sc.image)


def test_shares_no_scene_with_the_other_splits():
    gen = SceneGenerator(64)
    digest = {s: {hashlib.sha1(gen.sample(s, i).image.tobytes()).hexdigest() for i in range(200)}
              for s in ("heldout", "test", "train")}
    assert len(digest["heldout"]) == 200
    assert not digest["heldout"] & digest["test"] and not digest["heldout"] & digest["train"]


def test_mask_is_the_referents_drawn_pixels_and_objects_never_overlap(samples):
    for s in samples[:150]:
        h, w = s.mask.shape
        masks = [o.rasterize(w, h) for o in s.objects]
        assert 3 <= len(s.objects) <= 5
        assert np.array_equal(s.mask, masks[s.target]) and s.mask.any()
        assert (np.sum(masks, axis=0) <= 1).all(), "objects overlap"
        assert all(m.any() for m in masks)
        # Inside each shape the image carries that object's shade (lighting, blur and JPEG aside).
        for o, m in zip(s.objects, masks):
            core = binary_erosion(m, iterations=3)
            if core.sum() >= 20:
                assert np.abs(s.image[core].mean(0) - np.array(o.rgb)).max() < 45, (s.text, o)


# --- An independent reader of the held-out grammar: parse the text, resolve it on the scene. ---
VERBS = ("find ", "show me ", "select ", "highlight ", "where is ", "look at ")
SIZE = {"small": "small", "tiny": "small", "little": "small", "large": "large", "big": "large", "huge": "large"}
COLOUR = {**{c: c for c in COLOURS}, "violet": "purple"}
SHAPE = {"circle": "circle", "disk": "circle", "square": "square", "box": "square", "triangle": "triangle",
         "star": "star"}
GENERIC = {"object", "shape", "item", "thing", "one"}
RELATIONS = {"to the left of": ("x", -1), "left of": ("x", -1), "on the left of": ("x", -1),
             "to the right of": ("x", 1), "right of": ("x", 1), "on the right of": ("x", 1),
             "above": ("y", -1), "over": ("y", -1), "higher than": ("y", -1),
             "below": ("y", 1), "under": ("y", 1), "lower than": ("y", 1)}
EXTREMES = {"leftmost": ("x", -1), "furthest to the left": ("x", -1), "farthest left": ("x", -1),
            "rightmost": ("x", 1), "furthest to the right": ("x", 1), "farthest right": ("x", 1),
            "topmost": ("y", -1), "highest": ("y", -1), "closest to the top": ("y", -1), "nearest the top": ("y", -1),
            "bottommost": ("y", 1), "lowest": ("y", 1), "closest to the bottom": ("y", 1),
            "nearest the bottom": ("y", 1), "biggest": ("r", 1), "largest": ("r", 1), "smallest": ("r", -1),
            "tiniest": ("r", -1)}
SIDES = {"left": ("x", -1), "left-hand": ("x", -1), "on the left side": ("x", -1), "on the left": ("x", -1),
         "in the left half": ("x", -1), "right": ("x", 1), "right-hand": ("x", 1), "on the right side": ("x", 1),
         "on the right": ("x", 1), "in the right half": ("x", 1), "top": ("y", -1), "upper": ("y", -1),
         "at the top": ("y", -1), "in the upper half": ("y", -1), "near the top": ("y", -1), "bottom": ("y", 1),
         "lower": ("y", 1), "at the bottom": ("y", 1), "in the lower half": ("y", 1), "near the bottom": ("y", 1)}
PRE_SIDES = ("left", "left-hand", "right", "right-hand", "top", "upper", "bottom", "lower")
PRE_EXTREMES = ("leftmost", "rightmost", "topmost", "highest", "bottommost", "lowest", "biggest", "largest",
                "smallest", "tiniest")


def _alt(words):
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def parse_np(np_: str) -> dict:
    *adjectives, noun = np_.split()
    desc = {}
    for word in adjectives:
        key, table = ("size", SIZE) if word in SIZE else ("colour", COLOUR)
        assert word in table and key not in desc, f"unexpected {word!r} in {np_!r}"
        desc[key] = table[word]
    if noun in SHAPE:
        desc["shape"] = SHAPE[noun]
    else:
        assert noun in GENERIC and (noun != "one" or adjectives), f"unexpected noun in {np_!r}"
    return desc


def select(objs, desc, skip=None):
    return [i for i, o in enumerate(objs) if i != skip and all(getattr(o, k) == v for k, v in desc.items())]


def resolve(text: str, objs, w: int, h: int) -> list[int]:
    """Indices of the objects the text can mean; a well-formed expression gives exactly one."""
    for verb in VERBS:
        if text.startswith(verb):
            text = text[len(verb):]
            assert text.startswith("the "), "a verb comes only before 'the'"
    article = text.startswith("the ")
    text = text[4:] if article else text
    val = {"x": [o.cx / w for o in objs], "y": [o.cy / h for o in objs], "r": [o.radius for o in objs]}

    rel = re.fullmatch(rf"(.+?) (?:that is |which is )?({_alt(RELATIONS)}) (the )?(.+)", text)
    if rel:
        assert bool(rel.group(3)) == article, "both noun phrases take an article or neither does"
        anchors = select(objs, parse_np(rel.group(4)))
        if len(anchors) != 1:
            return []
        a = anchors[0]
        axis, sign = RELATIONS[rel.group(2)]
        return [i for i in select(objs, parse_np(rel.group(1)), skip=a) if sign * (val[axis][i] - val[axis][a]) > 0]

    sup = (re.fullmatch(rf"({_alt(PRE_EXTREMES)}) (.+)", text)
           or re.fullmatch(rf"(.+?) (?:that is )?({_alt(set(EXTREMES) - set(PRE_EXTREMES))})", text))
    if sup:
        word, np_ = sup.groups() if sup.group(1) in PRE_EXTREMES else sup.groups()[::-1]
        axis, sign = EXTREMES[word]
        desc = parse_np(np_)
        assert axis != "r" or "size" not in desc
        ranked = sorted(select(objs, desc), key=lambda i: -sign * val[axis][i])
        if len(ranked) > 1 and val[axis][ranked[0]] == val[axis][ranked[1]]:
            return ranked[:2]  # a tie is ambiguous
        return ranked[:1]

    side = (re.fullmatch(rf"({_alt(PRE_SIDES)}) (.+)", text)
            or re.fullmatch(rf"(.+) ({_alt(set(SIDES) - set(PRE_SIDES))})", text))
    if side:
        word, np_ = side.groups() if side.group(1) in PRE_SIDES else side.groups()[::-1]
        assert article or word not in PRE_SIDES
        axis, sign = SIDES[word]
        return [i for i in select(objs, parse_np(np_)) if sign * (val[axis][i] - 0.5) > 0]

    trailing = re.fullmatch(r"(.+) (?:that is|which is) (\w+)", text)
    if trailing:
        desc, word = parse_np(trailing.group(1)), trailing.group(2)
        key, table = ("size", SIZE) if word in SIZE else ("colour", COLOUR)
        assert word in table and key not in desc, text
        return select(objs, {**desc, key: table[word]})
    return select(objs, parse_np(text))


def test_every_expression_picks_out_exactly_its_referent(samples):
    for s in samples:
        h, w = s.mask.shape
        assert resolve(s.text, s.objects, w, h) == [s.target], (s.kind, s.text)


def test_kinds_rotate_and_the_content_varies(samples):
    kinds = [s.kind for s in samples]
    assert kinds == [KINDS[i % len(KINDS)] for i in range(N)]
    assert {o.shape for s in samples for o in s.objects} == {"circle", "square", "triangle", "star"}
    assert {o.colour for s in samples for o in s.objects} == set(COLOURS)
    assert {o.size for s in samples for o in s.objects} == {"small", "large"}
    assert {s.background for s in samples} == {"flat", "gradient", "noise"}
    assert {len(s.objects) for s in samples} == {3, 4, 5}
    assert SceneGenerator(96).sample("heldout", 0, kind="relation").kind == "relation"


def test_sentence_forms_vary(samples):
    texts = [s.text for s in samples]
    assert len(set(texts)) > 0.7 * len(texts)
    bare = [t for t in texts if not t.startswith(("the ",) + VERBS)]
    assert len(bare) > 0.1 * len(texts)  # no article at all
    assert any(t.startswith("find the ") for t in texts)
    assert any(re.search(r" (that|which) is (\w+)$", t) for t in texts)
    assert any(" to the left of " in t for t in texts) and any(" that is " in t and "of" in t for t in texts)
    assert any(t.endswith(" on the left side") for t in texts)
    assert any(re.search(r"\b(leftmost|rightmost)\b", t) for t in texts)
    assert any(re.search(r"\b(biggest|largest|smallest|tiniest) (object|shape|item|thing)$", t) for t in texts)
    assert any(re.search(r"\b(furthest|farthest|closest|nearest)\b", t) for t in texts)
    assert any(re.search(r"\b(disk|box|violet|huge|tiny)\b", t) for t in texts)  # synonyms


@pytest.mark.parametrize("size", [(47, 33), (320, 320), (640, 480)])
def test_any_image_size_renders(size):
    w, h = size
    gen = SceneGenerator(w, h)
    for i in range(4):
        s = gen.sample("heldout", i)
        assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (h, w) and s.mask.any()
        assert resolve(s.text, s.objects, w, h) == [s.target], s.text


def test_eval_and_bag_make_accept_the_split():
    from ptq4ris_core.cli import build_parser
    parser = build_parser()
    assert parser.parse_args(["eval", "--split", "heldout"]).split == "heldout"
    assert parser.parse_args(["bag", "make", "--split", "heldout", "--out", "b"]).split == "heldout"
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--split", "holdout"])


def test_bag_make_writes_heldout_scenes(tmp_path):
    pytest.importorskip("rosbags")
    from ptq4ris_core.bags.make import make_bag
    path = make_bag(tmp_path / "bag", split="heldout", n=4, width=64, height=48, hold=2, progress=False)
    assert path.exists()
