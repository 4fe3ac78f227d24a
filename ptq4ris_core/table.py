"""One run, one table: FP first, then every (method, bits) cell calibrated and evaluated on the
same test scenes, with the calibration time. Markdown for people, JSON for machines."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .calib.calibrate import CalibrationSet, calibrate
from .config import parse_bits
from .evaluate import evaluate_model
from .methods import get_method
from .presets import cell_method

COLUMNS = ("mIoU", "oIoU", "prec@0.5", "prec@0.9")


def method_table(fp_model, methods: list[str], bits: list[str], limit: int = 1000, calib_n: int = 32,
                 seed: int = 0, progress: bool = True, out: Path | None = None, on_cell=None,
                 save_dir: Path | None = None, deploy: tuple = (), backends: tuple = ("onnxruntime", "openvino"),
                 base: str = "default", target: str = "portable", ray: str | None = None,
                 workers: int | None = None, threads: int = 1) -> dict:
    """``save_dir``: keep each calibrated cell there (DIR/<method>_<bits>) and its row (DIR/<cell>.row.json): a
    re-run with the same folder reuses the finished cells. ``deploy``: methods whose cells are also exported as
    integer engines and evaluated on each runtime in ``backends`` (simulated and deployed side by side).
    ``base``: the FP model's name or path, recorded in each saved cell, and what a Ray worker loads.
    ``target``: each cell is simulated with its weights as that export target stores them, and deployed to it
    (engine/targets.py). ``ray``: run the cells on Ray ("local", or HOST:PORT), ``workers`` at a time locally,
    ``threads`` each; ``fp_model`` then only scores the FP32 row."""
    from .cluster.tasks import Task, check_ray, folder_lock, run_tasks
    import tempfile
    check_ray(ray)  # an unreachable cluster is named before any work
    cells = Path(save_dir) if save_dir else Path(tempfile.mkdtemp(prefix="ptq4ris_cells_"))
    specs = []
    for b in bits:
        parse_bits(b)
        for name in methods:
            method = cell_method(name, b)[0]  # a bad method or option fails here, before any cell runs
            specs.append(Cell(name, b.upper(), limit, calib_n, seed, target, method in deploy, tuple(backends),
                              save_dir is not None))
    source = fp_model if ray is None else base
    tasks = [Task(c.folder, run_cell, (c, source, base, str(cells), progress and ray is None),
                  cells / f"{c.folder}.row.json", settings={**asdict(c), "base": base}) for c in specs]
    with folder_lock(cells):
        rows = [{"method": "FP32", "bits": "-", **_scores(evaluate_model(fp_model, "test", limit, progress=progress)),
                 "calib_s": None}]
        finished = []

        def on_result(_key, row):
            finished.append(row)
            if on_cell:
                on_cell(row)
            if out:
                write(rows + finished, out, limit, calib_n)

        outcome = run_tasks(tasks, ray, workers, threads, progress=progress, on_result=on_result)
    rows += list(outcome.results.values())  # in the table's order, the reused cells too
    if out:
        write(rows, out, limit, calib_n)
    return {"rows": rows, "limit": limit, "calib_n": calib_n, "missing": outcome.failed, "resumed": outcome.resumed}


@dataclass(frozen=True)
class Cell:
    """One (method, bits) cell of the table and how it is scored: what a task needs, picklable."""
    name: str       # "ptq4ris:rorq=element", "ptq4ris@preset:recon=true"
    bits: str       # "W4A4"
    limit: int
    calib_n: int
    seed: int
    target: str
    deploy: bool
    backends: tuple
    keep: bool      # keep the calibrated model in the cells folder

    @property
    def folder(self) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_.=+-]', '_', self.name)}_{self.bits}"  # one name, whatever the options


def run_cell(cell: Cell, fp_source, base: str, cells: str, progress: bool = True) -> dict:
    """Calibrate and score one cell (``fp_source``: the FP model, or its name or path ``base`` to load)."""
    from .engine.targets import weights_for_target
    from .models import load_model
    fp_model = load_model(fp_source) if isinstance(fp_source, (str, Path)) else fp_source
    root = Path(cells)
    w, a = parse_bits(cell.bits)
    method, options = cell_method(cell.name, cell.bits)
    partial = root / f"{cell.folder}.partial" if cell.keep else None  # resumable reconstruction
    model, report = calibrate(fp_model, get_method(method, **options), w, a, CalibrationSet(cell.calib_n, cell.seed),
                              progress=progress, resume_dir=partial)
    with weights_for_target(model, cell.target) as stored:
        scores = _scores(evaluate_model(model, "test", cell.limit, progress=progress))
    row = {"method": cell.name, "bits": cell.bits, **scores, "calib_s": report["seconds"], "target": stored}
    if cell.keep or cell.deploy:
        row["deployed"] = _save_and_deploy(model, report, root, base, cell.folder, cell.deploy, cell.backends,
                                           cell.limit, progress, stored)
    if partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
    return row


def split_methods(text: str) -> list[str]:
    """'rtn,ptq4ris:rorq=element,drq=false' → ['rtn', 'ptq4ris:rorq=element,drq=false']: a comma followed
    by KEY=VALUE continues the previous method's options."""
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if "=" in tok and ":" not in tok and out:
            out[-1] += "," + tok
        else:
            out.append(tok)
    return out


def _save_and_deploy(model, report, root: Path, base: str, cell: str, deploy: bool, backends, limit, progress,
                     target: str) -> dict:
    from .calib.saved import save_quantized
    from .engine import Engine
    from .engine.export import export_quantized
    from .evaluate import evaluate_engine
    saved = save_quantized(model, report, root / cell, base=base)
    if not deploy:
        return {}
    engine_dir = export_quantized(saved, root / f"{cell}_engine", target=target)
    return {bk: _scores(evaluate_engine(Engine.load(engine_dir, backend=bk), "test", limit, progress=progress))
            for bk in backends}


def _scores(summary: dict) -> dict:
    return {c: summary[c] for c in COLUMNS} | {"by_kind": {k: v["mIoU"] for k, v in summary.get("by_kind", {}).items()}}


def markdown(rows: list[dict]) -> str:
    fp = rows[0]["mIoU"]
    backends = sorted({bk for r in rows for bk in r.get("deployed") or {}})
    lines = ["| method | bits | mIoU | drop | oIoU | prec@0.5 | prec@0.9 | calib (s) |"
             + "".join(f" engine mIoU ({bk}) |" for bk in backends),
             "|---|---|---|---|---|---|---|---|" + "---|" * len(backends)]
    for r in rows:
        drop = "–" if r["method"] == "FP32" else f"{100 * (r['mIoU'] - fp):+.2f}"
        calib = "–" if r["calib_s"] is None else f"{r['calib_s']:.0f}"
        dep = r.get("deployed") or {}
        lines.append(f"| {r['method']} | {r['bits']} | {100 * r['mIoU']:.2f} | {drop} | {100 * r['oIoU']:.2f} | "
                     f"{100 * r['prec@0.5']:.2f} | {100 * r['prec@0.9']:.2f} | {calib} |"
                     + "".join(f" {100 * dep[bk]['mIoU']:.2f} |" if bk in dep else " – |" for bk in backends))
    return "\n".join(lines)


def write(rows, out: Path, limit, calib_n):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(rows) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "limit": limit, "calib_n": calib_n}, indent=1) + "\n", encoding="utf-8")
