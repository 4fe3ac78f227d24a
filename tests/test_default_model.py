"""The committed default model: it loads, and reproduces its recorded test score on a fixed subset."""
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
