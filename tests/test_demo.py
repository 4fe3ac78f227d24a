"""`make demo` runs end to end (small: a few scenes) and writes its pictures."""
from ptq4ris_core.demo import main


def test_demo_runs_and_writes_pictures(tmp_path, capsys):
    main(["--out", str(tmp_path), "--limit", "8"])
    out = capsys.readouterr().out
    assert "| all | 8 |" in out and "p50" in out
    assert (tmp_path / "segment_examples.png").stat().st_size > 10_000
