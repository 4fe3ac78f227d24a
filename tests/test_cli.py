"""The command line: one-line errors for bad input (never a traceback), and the happy paths."""
import numpy as np
import pytest
import torch
from PIL import Image

from ptq4ris_core.cli import main
from ptq4ris_core.models import save_model


@pytest.fixture(scope="module")
def weights(tiny_model, tmp_path_factory):
    return str(save_model(tiny_model, tmp_path_factory.mktemp("w") / "tiny.safetensors", dtype=torch.float32))


@pytest.fixture()
def image(tmp_path):
    p = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(p)
    return p


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_segment_writes_mask_and_overlay_at_image_size(capsys, weights, image, tmp_path):
    code, out, err = run(capsys, "segment", "--image", image, "--text", "the red circle", "--out", tmp_path / "m.png",
                         "--overlay", tmp_path / "o.png", "--model", weights)
    assert code in (0, None), err
    mask = np.asarray(Image.open(tmp_path / "m.png"))
    assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(tmp_path / "o.png")).shape == (90, 120, 3)


@pytest.mark.parametrize("case,expect", [
    ("missing", "image file not found"),
    ("corrupt", "cannot read"),
    ("blank", "command is empty"),
    ("nodir", "does not exist"),
    ("isdir", "is a folder"),
    ("badmodel", "no weights"),
])
def test_segment_bad_input_is_one_line(capsys, weights, image, tmp_path, case, expect):
    args = {"image": image, "text": "the red circle", "out": tmp_path / "m.png", "model": weights}
    if case == "missing":
        args["image"] = tmp_path / "nope.png"
    elif case == "corrupt":
        bad = tmp_path / "bad.png"
        bad.write_bytes(image.read_bytes()[:200])
        args["image"] = bad
    elif case == "blank":
        args["text"] = "   \t "
    elif case == "nodir":
        args["out"] = tmp_path / "no" / "such" / "m.png"
    elif case == "isdir":
        args["out"] = tmp_path
    elif case == "badmodel":
        args["model"] = tmp_path / "none.safetensors"
    code, out, err = run(capsys, "segment", *sum(([f"--{k}", v] for k, v in args.items()), []))
    assert code == 2
    assert expect in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_segment_converts_grey_and_rgba_and_warns_on_long_commands(capsys, weights, tmp_path, caplog):
    rgb = np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    for mode in ("L", "RGBA"):
        p = tmp_path / f"{mode}.png"
        Image.fromarray(rgb).convert(mode).save(p)
        code, _, err = run(capsys, "segment", "--image", p, "--text", "the star", "--out", tmp_path / "m.png",
                           "--model", weights)
        assert code in (0, None), err
        assert np.asarray(Image.open(tmp_path / "m.png")).shape == (40, 50)
    p = tmp_path / "L.png"
    with caplog.at_level("WARNING"):
        code, _, _ = run(capsys, "segment", "--image", p, "--text", "the red circle " * 400, "--out",
                         tmp_path / "m.png", "--model", weights)
    assert code in (0, None)
    assert any("longer than" in r.message or "cut to" in r.message for r in caplog.records)


def test_eval_and_calibrate_reject_bad_numbers_and_names(capsys, weights, tmp_path):
    code, _, err = run(capsys, "eval", "--model", weights, "--limit", "0")
    assert code == 2 and "--limit" in err
    code, _, err = run(capsys, "eval", "--model", weights, "--limit", "20000")
    assert code == 2 and "between 1 and" in err
    code, _, err = run(capsys, "calibrate", "--model", weights, "--method", "nope", "--bits", "W8A8", "--out", tmp_path / "q")
    assert code == 2 and "unknown method" in err
    code, _, err = run(capsys, "calibrate", "--model", weights, "--method", "rtn", "--bits", "W9A8", "--out", tmp_path / "q")
    assert code == 2 and "between 2 and 8" in err
    code, _, err = run(capsys, "calibrate", "--model", weights, "--method", "rtn", "--bits", "W8A8", "--calib", "0",
                       "--out", tmp_path / "q")
    assert code == 2 and "between 1 and" in err
    code, _, err = run(capsys, "eval", "--quantized", tmp_path / "absent")
    assert code == 2 and "not a folder" in err


def test_calibrate_then_eval_quantized(capsys, weights, tmp_path):
    code, out, err = run(capsys, "calibrate", "--model", weights, "--method", "rtn", "--bits", "W8A8", "--calib", "2",
                         "--out", tmp_path / "q")
    assert code in (0, None), err
    assert (tmp_path / "q" / "quantized.json").exists()
    code, out, err = run(capsys, "eval", "--quantized", tmp_path / "q", "--limit", "4", "--json", tmp_path / "s.json")
    assert code in (0, None), err
    assert "| all | 4 |" in out


def test_eval_engine_scores_like_the_pytorch_model(capsys, default_engine, tmp_path):
    import json
    code, out, err = run(capsys, "eval", "--engine", default_engine, "--backend", "onnxruntime", "--limit", "8",
                         "--json", tmp_path / "e.json")
    assert code in (0, None) and "| all | 8 |" in out
    eng = json.loads((tmp_path / "e.json").read_text(encoding="utf-8"))
    code, out, _ = run(capsys, "eval", "--model", "default", "--limit", "8", "--json", tmp_path / "m.json")
    ref = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert abs(eng["mIoU"] - ref["mIoU"]) < 0.01  # the FP32 engine computes the FP32 model


def test_bag_and_bench_commands_explain_bad_input(capsys, tmp_path):
    code, _, err = run(capsys, "bag", "eval", tmp_path / "missing", "--engine", tmp_path / "none")
    assert code == 2 and "error:" in err and "Traceback" not in err
    code, _, err = run(capsys, "bag", "make", "--n", "0", "--out", tmp_path / "b")
    assert code == 2 and "n >= 1" in err


def test_table_methods_keep_their_options():
    from ptq4ris_core.table import split_methods
    assert split_methods("rtn,ptq4ris:rorq=element,drq=false,ptq4vit") == [
        "rtn", "ptq4ris:rorq=element,drq=false", "ptq4vit"]
    assert split_methods("ptq4ris:drq=false,ptq4ris:rorq=none") == ["ptq4ris:drq=false", "ptq4ris:rorq=none"]
    from ptq4ris_core.errors import InputError
    from ptq4ris_core.presets import PRESET_DIR, cell_method, load_preset, option_value
    # 'ptq4ris@preset': each bit setting takes the options of its shipped preset
    for bits in ("W8A8", "W4A4"):
        want = {k: option_value(v) for k, v in load_preset(PRESET_DIR / f"{bits}.yaml")["options"].items()}
        assert cell_method("ptq4ris@preset", bits) == ("ptq4ris", want)
    assert cell_method("ptq4ris@preset", "W4A4") != cell_method("ptq4ris@preset", "W8A8")
    assert cell_method("ptq4ris:drq=false", "W4A4") == ("ptq4ris", {"drq": False})
    with pytest.raises(InputError, match="not 'rtn'"):
        cell_method("rtn@preset", "W8A8")
    with pytest.raises(InputError, match="not found"):
        cell_method("ptq4ris@preset", "W3A5")
