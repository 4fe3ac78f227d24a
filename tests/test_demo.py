"""`make demo` tells the whole story end to end (small: 6 frames, 2 calibration pairs), and reuses its engines."""
import json
import os

import pytest

from ptq4ris_core.demo import MAX_ENGINE_LOSS, EngineBelowSimulation, check_against_simulation, main


def test_demo_end_to_end_then_reuses_engines(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(140 + os.getpid() % 40))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["--out", str(tmp_path / "out"), "--engines", str(tmp_path / "eng"), "--bag", str(tmp_path / "bag"),
            "--frames", "6", "--calib", "2"]
    main(args)
    out = capsys.readouterr().out
    assert "| FP32 |" in out and "| W8A8 |" in out and "smaller" in out
    s = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    for name in ("FP32", "W8A8"):
        assert s[name]["offline"]["frames_scored"] == 6
        assert s[name]["live"]["frames_sent"] == 6 and s[name]["live"]["wrong_header"] == 0
        assert abs(s[name]["live"]["accuracy"]["mIoU"] - s[name]["offline"]["accuracy"]["mIoU"]) < 0.01
    assert s["W8A8"]["size_mb"] < s["FP32"]["size_mb"] / 1.5
    # it names the CPU's int8 features, each engine's target and runtime, and compares W8A8 with its simulation
    assert "CPU: " in out and "target portable" in out and "self-check passed" in out
    assert abs(s["W8A8"]["simulated_mIoU"] - s["W8A8"]["offline"]["accuracy"]["mIoU"]) <= MAX_ENGINE_LOSS / 100
    main(args + ["--no-replay"])
    again = capsys.readouterr().out
    assert again.count("reusing") == 3  # two engines and the bag
    # built without the preset's reconstruction: not what --reconstruct asks for
    from ptq4ris_core.calib.saved import base_identity
    from ptq4ris_core.demo import PRESET, _engine_is_current
    from ptq4ris_core.files import sha256
    args = (tmp_path / "eng" / "default_w8a8", base_identity("default")["sha256"], sha256(PRESET), 2)
    assert _engine_is_current(*args, recon=False) and not _engine_is_current(*args, recon=True)


def test_an_engine_below_its_simulation_fails_the_demo_with_the_reason():
    class Saturated:
        folder = "engines/default_w8a8"

        def report(self):
            return {"runtime": "onnxruntime", "cpu": "AMD EPYC (x86_64): no int8 dot-product instructions",
                    "target": "vnni", "self_check": "skipped"}
    check_against_simulation("W8A8", Saturated(), 0.8800, 0.8895)  # 0.95 points: within
    with pytest.raises(EngineBelowSimulation) as e:
        check_against_simulation("W8A8", Saturated(), 0.4942, 0.8791)
    msg = str(e.value)
    assert "FAILED" in msg and "38.49 points below" in msg and "no int8 dot-product" in msg and "--target portable" in msg
    assert e.value.code != 0
