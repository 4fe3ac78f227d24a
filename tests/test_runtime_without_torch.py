"""The robot's runtime without PyTorch (issue 22): engines, bag scoring and the ROS node run with the
full install's packages absent (tests/runtime_only/sitecustomize.py), and a full-install command says
what to install."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptq4ris_core.engine import Engine
from ptq4ris_core.engine.tokens import CommandTokenizer

RUNTIME_ONLY = Path(__file__).parent / "runtime_only"
PHRASES = ["the red circle", "Pick up the SMALL blue star on the left!", "the cup", "", "   ",
           "ünïcödé wörds and emoji 🤖", "the object that is left of the big green hexagon " * 4, "a-b c.d e,f"]


def runtime_only_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(RUNTIME_ONLY)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run_runtime(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=runtime_only_env(), capture_output=True,
                          text=True, timeout=300)


def test_the_command_tokenizer_matches_transformers(default_engine):
    """Reference: transformers' BertTokenizerFast over the same files, as the model was exported."""
    from transformers import BertTokenizerFast
    ref = BertTokenizerFast.from_pretrained(default_engine)
    ours = CommandTokenizer(Path(default_engine), 32)
    for text in PHRASES:
        enc = ref([text], padding="max_length", truncation=True, max_length=32, return_tensors="np")
        ids, mask = ours.encode(text)
        assert np.array_equal(ids, enc["input_ids"]) and np.array_equal(mask, enc["attention_mask"]), text
        assert ours.count(text) == len(ref(text)["input_ids"]), text


def test_the_blocker_really_hides_torch():
    r = run_runtime("import torch")
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


PROBE = """
import json, sys
import numpy as np
from ptq4ris_core.engine import Engine
from ptq4ris_core.cli import main
engine = Engine.load(sys.argv[1], backend="onnxruntime", threads=1)
image = np.zeros((120, 160, 3), np.uint8); image[30:90, 40:100] = (220, 30, 30)
mask, score = engine.segment(image, "the red square")
rc = main(["bag", "eval", sys.argv[2], "--engine", sys.argv[1], "--backend", "onnxruntime", "--threads", "1",
           "--out", sys.argv[3], "--json", sys.argv[4]])
import ptq4ris_ros.node  # the node's module and what it imports
print("PROBE", json.dumps({"rc": rc, "mask_px": int((mask > 0).sum()), "score": score,
      "torch": sys.modules.get("torch") is not None, "loaded": sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in
      ("torch", "transformers", "scipy", "matplotlib", "skimage"))}))
"""


def test_engine_and_bag_eval_run_without_torch_and_score_as_with_it(default_engine, tmp_path):
    from ptq4ris_core.bags import make_bag
    from ptq4ris_core.bags.evaluate import evaluate_bag
    bag = make_bag(tmp_path / "bag", n=8, width=160, height=120, hold=2, progress=False)
    r = run_runtime(PROBE, default_engine, str(bag), str(tmp_path / "report"), str(tmp_path / "s.json"))
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, r.stdout[-2000:] + r.stderr[-4000:]
    got = json.loads(lines[0][6:])
    assert not got["rc"] and not got["torch"] and got["loaded"] == [], got
    assert got["mask_px"] > 0 and 0 < got["score"] <= 1
    summary = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    with_torch = evaluate_bag(bag, Engine.load(default_engine, backend="onnxruntime", threads=1), progress=False)
    assert summary["frames_scored"] == with_torch["frames_scored"] == 8
    assert summary["accuracy"]["mIoU"] == pytest.approx(with_torch["accuracy"]["mIoU"], abs=1e-9)
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "matplotlib is not installed" in report and (tmp_path / "report" / "report.json").exists()


@pytest.mark.parametrize("argv", [["calibrate", "--preset", "calibration/W8A8.yaml", "--out", "x"],
                                  ["eval", "--limit", "2"], ["bag", "make", "--out", "x", "--n", "2"]])
def test_a_full_install_command_on_the_runtime_says_what_to_install(argv, tmp_path):
    r = run_runtime("import sys; from ptq4ris_core.cli import main; sys.exit(main(sys.argv[1:]))", *argv)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "ptq4ris-core[full]" in r.stderr and "Traceback" not in r.stderr
