"""`make demo` tells the whole story end to end (small: 6 frames, 2 calibration pairs), and reuses its engines."""
import json
import os

from ptq4ris_core.demo import main


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
    main(args + ["--no-replay"])
    again = capsys.readouterr().out
    assert again.count("reusing") == 3  # two engines and the bag
