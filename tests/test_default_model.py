"""The committed default model: it loads, reproduces its recorded test score on a fixed subset, and answers
bad scenes and unknown words with a small or empty mask."""
import json

import pytest

from ptq4ris_core.evaluate import evaluate_model
from ptq4ris_core.models import DEFAULT_WEIGHTS, load_model


def test_committed_weights_reproduce_recorded_test_miou():
    assert DEFAULT_WEIGHTS.exists(), "the default weights must be committed"
    assert DEFAULT_WEIGHTS.stat().st_size < 30 * 2 ** 20
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text(encoding="utf-8"))
    ref = meta["reference"]
    model = load_model("default")
    got = evaluate_model(model, ref["split"], ref["n"], batch=ref["batch"], progress=False)
    assert got["mIoU"] == pytest.approx(ref["mIoU"], abs=0.005)
    assert meta["command"].startswith("ptq4ris train")


def test_bad_scenes_and_unknown_words_give_an_empty_mask_and_a_low_score(default_engine):
    """Issue 19's bad input: a flat colour, an empty noisy scene, words the model never saw: no crash, a
    small or empty mask, and a score a robot can refuse on."""
    import numpy as np

    from ptq4ris_core.engine import Engine
    engine = Engine.load(default_engine, backend="onnxruntime", threads=1)
    rng = np.random.default_rng(0)
    scenes = {"flat colour": np.full((480, 640, 3), (90, 140, 200), np.uint8),
              "empty noisy scene": rng.normal(120, 20, (480, 640, 3)).clip(0, 255).astype(np.uint8)}
    for name, image in scenes.items():
        for command in ("the red circle", "the flibbertigibbet near the quokka", "zzzz qqqq"):
            mask, score = engine.segment(image, command)
            share = np.count_nonzero(mask) / mask.size
            assert share < 0.01 and (score == 0.0) == (share == 0.0), (name, command, share, score)
