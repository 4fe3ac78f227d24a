"""Tasks on Ray (a local Ray with 2 workers): the same results as one process, retried when a worker dies,
reported once when a task fails, resumable, one run per folder, and an unreachable cluster named at once."""
import json
import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ptq4ris_core.cluster.tasks import Task, check_address, folder_lock, run_tasks  # noqa: E402
from ptq4ris_core.errors import InputError  # noqa: E402

HERE = Path(__file__).resolve().parent


@pytest.fixture
def local_ray():
    """A fresh local Ray per test: a worker that ran another test's tasks keeps what they imported."""
    path = os.pathsep.join([str(HERE.parent), str(HERE)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def square_after_dying_once(x: int, marks: str) -> dict:
    """Kills its own worker process the first time it runs (as an OOM kill or a lost node would)."""
    mark = Path(marks) / f"died_{x}"
    if not mark.exists():
        mark.write_text("1")
        os._exit(1)
    return {"x": x, "square": x * x}


def count_and_fail(marks: str) -> dict:
    with (Path(marks) / "attempts").open("a") as f:
        f.write("1")
    raise ValueError("scene 7 of the bag has no image")


def test_a_killed_worker_is_retried_and_a_failing_task_is_reported_once(local_ray, tmp_path):
    tasks = [Task(f"sq{x}", square_after_dying_once, (x, str(tmp_path)), tmp_path / f"sq{x}.json") for x in (2, 3)]
    tasks.append(Task("bad", count_and_fail, (str(tmp_path),), tmp_path / "bad.json"))
    got = run_tasks(tasks, ray_address="local", retries=2, progress=False)
    assert got.results == {"sq2": {"x": 2, "square": 4}, "sq3": {"x": 3, "square": 9}}
    assert list(got.failed) == ["bad"] and "ValueError" in got.failed["bad"] and "scene 7" in got.failed["bad"]
    assert (tmp_path / "attempts").read_text() == "1"  # a task's own error is not retried
    assert not (tmp_path / "bad.json").exists()
    # resumable: the finished ones are read back, not run again
    again = run_tasks(tasks[:2], ray_address="local", progress=False)
    assert again.resumed == ["sq2", "sq3"] and again.results == got.results


def test_a_result_made_with_other_settings_is_refused_by_name(tmp_path):
    t = Task("cell", dict, (), tmp_path / "cell.json", settings={"limit": 4})
    run_tasks([t], progress=False)
    with pytest.raises(InputError, match="limit differ"):
        run_tasks([Task("cell", dict, (), tmp_path / "cell.json", settings={"limit": 8})], progress=False)


def test_one_run_per_folder_and_a_dead_runs_lock_is_taken_over(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(InputError, match="another run"):
            with folder_lock(tmp_path):
                pass
    (tmp_path / ".run.lock").write_text("999999999")  # no such process
    with folder_lock(tmp_path):
        assert (tmp_path / ".run.lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".run.lock").exists()


def test_an_unreachable_cluster_is_an_error_within_seconds():
    t = time.time()
    with pytest.raises(InputError, match="no Ray cluster answers"):
        check_address("127.0.0.1:9", timeout=3)
    with pytest.raises(InputError, match="HOST:PORT"):
        check_address("nowhere")
    assert time.time() - t < 10


def test_a_table_on_ray_equals_the_single_process_table(local_ray, tiny_model, tmp_path):
    import torch
    from ptq4ris_core.models import load_model, save_model
    from ptq4ris_core.table import method_table
    base = save_model(tiny_model, tmp_path / "tiny.safetensors", dtype=torch.float32)  # what the workers load
    kw = dict(limit=6, calib_n=2, progress=False, base=str(base))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker: the same float reductions
    try:
        here = method_table(load_model(base), ["rtn", "ptq4ris"], ["W8A8", "W4A4"], save_dir=tmp_path / "here", **kw)
    finally:
        torch.set_num_threads(threads)
    there = method_table(load_model(base), ["rtn", "ptq4ris"], ["W8A8", "W4A4"], save_dir=tmp_path / "there",
                         ray="local", **kw)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "calib_s"} for r in rows]  # noqa: E731
    assert len(there["rows"]) == 5 and not there["missing"]
    assert strip(there["rows"]) == strip(here["rows"])
    rows = json.loads((tmp_path / "there" / "rtn_W8A8.row.json").read_text())
    assert rows["settings"]["limit"] == 6 and (tmp_path / "there" / "rtn_W8A8").is_dir()


def test_the_layer_study_on_ray_resumes_and_equals_the_single_process_study(local_ray, tiny_model, tmp_path,
                                                                            monkeypatch):
    import torch
    from ptq4ris_core.methods import get_method
    from ptq4ris_core.mixed import scale_out
    from ptq4ris_core.mixed.study import StudySettings, layer_study
    settings = StudySettings((4, 8), (4, 8), pairs=2, parts=("decoder",))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker: the same float reductions
    try:
        here = layer_study(tiny_model, get_method("ptq4ris"), settings, tmp_path / "here.json", progress=False)
    finally:
        torch.set_num_threads(threads)
    study = lambda: layer_study(tiny_model, get_method("ptq4ris"), settings, tmp_path / "there.json",  # noqa: E731
                                progress=False, ray="local")
    real, resumed = scale_out.run_tasks, []

    def killed_after_two(tasks, *a, **k):  # as a run stopped after two layers: their files stay
        real(tasks[:2], *a, **k)
        raise KeyboardInterrupt

    def counting(tasks, *a, **k):
        out = real(tasks, *a, **k)
        resumed.extend(out.resumed)
        return out

    monkeypatch.setattr(scale_out, "run_tasks", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        study()
    work = tmp_path / "there.work"
    finished = sorted(p.stem for p in (work / "layers").glob("*.json"))
    assert len(finished) == 2 and (work / "w8a8.safetensors").exists()
    monkeypatch.setattr(scale_out, "run_tasks", counting)
    there = study()
    assert sorted(resumed) == finished and "w8a8_calibration" not in there["seconds"]  # only the missing layers
    assert there["key"] == here["key"] and len(there["sensitivity"]) == len(here["layers"]) > 2
    # every layer, every candidate, the same measurement: bit for bit on AMD CPUs; on Intel ones MKL's float
    # GEMMs may sum in another order in another process (alignment-dependent paths), and errors of the tiny
    # model's 4-bit layers moved by up to 0.4 % (1e-5 level), the near-zero 8-bit ones by up to 2e-8
    flat = lambda study: [v for s in study["sensitivity"] for kind in ("w", "a") for v in s[kind].values()]  # noqa: E731
    assert [list(s) for s in there["sensitivity"]] == [list(s) for s in here["sensitivity"]]
    assert flat(there) == pytest.approx(flat(here), rel=0.02, abs=1e-7)
    assert any(float(s["a"]["4"]) > 0 for s in there["sensitivity"])  # a real measurement, not all zeros
    assert not work.exists()  # the per-layer files go once the study is written
    assert study()["cached"]  # and the study is read back, nothing measured


def score_and_say_whether_torch_loaded(*args) -> dict:
    import sys
    from ptq4ris_core.bags.farm import score_bag
    return {**score_bag(*args), "torch_loaded": "torch" in sys.modules}


def test_a_folder_of_bags_on_ray_scores_each_as_one_bag_and_never_loads_torch(local_ray, default_engine, tmp_path,
                                                                               monkeypatch):
    from ptq4ris_core.bags import make_bag
    from ptq4ris_core.bags import farm as farm_module
    from ptq4ris_core.bags.evaluate import evaluate_bag
    from ptq4ris_core.engine import Engine
    bags = tmp_path / "night"
    for i, storage in enumerate(("mcap", "sqlite3", "mcap")):
        make_bag(bags / f"run{i}", n=4, width=160, height=120, start=10 * i, storage=storage, progress=False)
    monkeypatch.setattr(farm_module, "score_bag", score_and_say_whether_torch_loaded)
    res = farm_module.farm(bags, default_engine, tmp_path / "out", backend="onnxruntime", threads=1, ray="local",
                           progress=False)
    assert sorted(res["per_bag"]) == ["run0", "run1", "run2"] and not res["missing"]
    assert not any(s["torch_loaded"] for s in res["per_bag"].values())  # the runtime alone on the workers
    engine = Engine.load(default_engine, backend="onnxruntime", threads=1)
    for name, s in res["per_bag"].items():
        ref = evaluate_bag(bags / name, engine, progress=False)
        assert s["accuracy"] == ref["accuracy"] and s["frames_scored"] == ref["frames_scored"] == 4
    frames = sum(s["frames_scored"] for s in res["per_bag"].values())
    assert res["pooled"]["frames_scored"] == frames == 12
    assert abs(res["pooled"]["mIoU"] - sum(s["accuracy"]["mIoU"] for s in res["per_bag"].values()) / 3) < 1e-12
    assert (tmp_path / "out" / "run1" / "report.md").exists()
    # a bag that cannot be read is reported by name; the others are reused, not scored again
    (bags / "run3").mkdir()
    (bags / "run3" / "metadata.yaml").write_text("not: a bag\n")
    again = farm_module.farm(bags, default_engine, tmp_path / "out", backend="onnxruntime", ray="local", progress=False)
    assert again["resumed"] == ["run0", "run1", "run2"] and list(again["missing"]) == ["run3"]
    assert "BagError" in again["missing"]["run3"]
