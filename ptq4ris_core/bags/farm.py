"""``ptq4ris bag eval DIR``: every bag under a folder scored as a task of its own, here or on Ray.

A worker loads the engine and scores one bag with the torch-free runtime (it never imports PyTorch). Each
bag's summary is written as it finishes (OUT/<bag>.summary.json, its report in OUT/<bag>/), so a re-run
scores only the bags still missing; the pooled accuracy weighs every scored frame alike.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..cluster.tasks import Task, folder_lock, run_tasks
from .errors import BagError


def _bag_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if (p / "metadata.yaml").is_file()) if folder.is_dir() else []


def find_bags(folder) -> list[Path]:
    """The rosbag2 folders (each with its metadata.yaml) directly under ``folder``."""
    bags = _bag_dirs(Path(folder))
    if not bags:
        raise BagError(f"{folder} holds no rosbag2 folders (a folder with metadata.yaml each); give one bag, or a "
                       f"folder of bags")
    return bags


def is_bag_folder_set(path) -> bool:
    """A folder of bags rather than one bag."""
    p = Path(path)
    return not (p / "metadata.yaml").exists() and bool(_bag_dirs(p))


def score_bag(bag: str, engine_dir: str, backend: str, threads: int, topics: dict, out: str) -> dict:
    """One bag, one task (a worker's side)."""
    from ..engine import Engine
    from .evaluate import evaluate_bag
    engine = Engine.load(engine_dir, backend=backend, threads=threads)
    return evaluate_bag(bag, engine, out=out, progress=False, **topics)


def pooled(summaries: dict) -> dict:
    """mIoU and oIoU over every scored frame of every bag, and the frame counts."""
    scored = {k: s for k, s in summaries.items() if s.get("accuracy")}
    n = sum(s["frames_scored"] for s in scored.values())
    out = {"bags": len(summaries), "bags_with_ground_truth": len(scored), "frames_scored": n}
    if n:
        out["mIoU"] = sum(s["accuracy"]["mIoU"] * s["frames_scored"] for s in scored.values()) / n
    return out


def farm(folder, engine_dir, out, backend: str = "auto", threads: int = 1, topics: dict | None = None,
         ray: str | None = None, workers: int | None = None, progress: bool = True) -> dict:
    bags = find_bags(folder)
    out = Path(out)
    topics = {k: v for k, v in (topics or {}).items() if v is not None}
    meta = Path(engine_dir) / "meta.json"
    if not meta.is_file():
        raise BagError(f"{engine_dir} is not an engine folder (no meta.json); export one with 'ptq4ris export'")
    settings = {"engine": str(Path(engine_dir).resolve()), "engine_meta_sha256": hashlib.sha256(meta.read_bytes()).hexdigest(),
                "backend": backend, "topics": topics}
    tasks = [Task(b.name, score_bag, (str(b), str(engine_dir), backend, threads, topics, str(out / b.name)),
                  out / f"{b.name}.summary.json", settings={**settings, "bag": str(b.resolve())}) for b in bags]
    with folder_lock(out):
        outcome = run_tasks(tasks, ray, workers, threads, progress=progress)
    return {"per_bag": outcome.results, "pooled": pooled(outcome.results), "missing": outcome.failed,
            "resumed": outcome.resumed, "out": str(out)}
