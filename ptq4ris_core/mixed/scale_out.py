"""The sensitivity pass as independent tasks, one per layer, on Ray (``cluster/tasks.py``).

The driver calibrates the W8A8 model once and writes what a worker needs into the work folder beside the
study: the float model (``fp.safetensors``), the calibrated W8A8 state (``w8a8.safetensors``) and
``context.json`` (the study's key, the base method and its options, the settings). A worker rebuilds the
study's inputs from them the way ``study.layer_study`` builds them (the same calibration pairs, the same
quantizable copy, the same float logits and gradients), keeps them for its next tasks, and measures one
layer with ``sensitivity.sensitivities``: so each layer's figures are those of the single-process pass.
Each layer's result is a file in the work folder's ``layers/``; a rerun reuses the finished ones.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..cluster.tasks import Task, folder_lock, run_tasks
from ..config import ConfigError

FP_FILE, W8A8_FILE, CONTEXT_FILE = "fp.safetensors", "w8a8.safetensors", "context.json"


def sensitivities_as_tasks(fp_model, base_method, s, key: dict, work: Path, inp, costs, ray: str, workers, threads,
                           progress, seconds: dict) -> dict:
    """{layer: {"w": {bits: e}, "a": {bits: e}}} as ``sensitivity.sensitivities`` returns it, measured as
    tasks. ``inp``: the study's inputs, its model not yet calibrated (calibrated here unless the work folder
    already holds this study's W8A8 state)."""
    from safetensors.torch import save_file

    from ..models.store import save_model
    from .study import _write_json, calibrate_w8a8

    work = Path(work)
    with folder_lock(work):
        context = {"key": key, "method": base_method.name, "options": base_method.options(),
                   "settings": asdict(s)}
        if _read_context(work) != json.loads(json.dumps(context)):
            _clear(work)  # another study's (or an unfinished) work: measured again
            t = time.time()
            calibrate_w8a8(inp, base_method, progress)
            seconds["w8a8_calibration"] = round(time.time() - t, 1)
            full = copy.copy(fp_model)  # the text encoder too, whatever the model's freeze_text says
            full.cfg = replace(fp_model.cfg, freeze_text=False)
            save_model(full, work / FP_FILE, dtype=torch.float32)
            save_file({k: v.detach().contiguous() for k, v in inp.model.state_dict().items()}, str(work / W8A8_FILE))
            _write_json(work / CONTEXT_FILE, context)  # last: its presence means the inputs are complete
        t = time.time()
        (work / "layers").mkdir(exist_ok=True)
        tasks = [Task(c.name, layer_sensitivity, (str(work), c.name), work / "layers" / f"{c.name}.json",
                      settings=key) for c in costs]
        outcome = run_tasks(tasks, ray, workers, threads, progress=progress)
        seconds["sensitivity"] = round(time.time() - t, 1)
        if outcome.resumed:
            seconds["sensitivity_layers_resumed"] = len(outcome.resumed)
        if outcome.failed:
            raise ConfigError(f"{len(outcome.failed)} of {len(tasks)} layers were not measured ("
                              + "; ".join(f"{k}: {v}" for k, v in list(outcome.failed.items())[:3])
                              + f"); the {len(outcome.results)} finished ones are kept in {work}: run again to "
                              "measure only the missing layers")
    shutil.rmtree(work, ignore_errors=True)
    return {name: {part: {int(b): e for b, e in v.items()} for part, v in r.items()}
            for name, r in outcome.results.items()}


def _read_context(work: Path):
    try:
        return json.loads((work / CONTEXT_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _clear(work: Path):
    for p in work.iterdir():
        if p.name != ".run.lock":
            shutil.rmtree(p) if p.is_dir() else p.unlink()


_CONTEXTS: dict = {}  # a worker's rebuilt study inputs, reused by its next tasks (one study at a time)


def _context(work: str):
    if work in _CONTEXTS:
        return _CONTEXTS[work]
    from safetensors.torch import load_file

    from ..calib.calibrate import hessian_grads
    from ..methods import get_method
    from ..models import load_model
    from .study import StudySettings, study_inputs

    folder = Path(work)
    ctx = json.loads((folder / CONTEXT_FILE).read_text(encoding="utf-8"))
    s = StudySettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in ctx["settings"].items()})
    method = get_method(ctx["method"], **ctx["options"])
    inp = study_inputs(load_model(folder / FP_FILE), method, s)
    grads = hessian_grads(inp.model, inp.infos, method, inp.batches)  # at the float model, as the driver's
    inp.model.load_state_dict(load_file(str(folder / W8A8_FILE)), strict=True)  # the driver's W8A8 calibration
    _CONTEXTS.clear()
    _CONTEXTS[work] = (inp, {c.name: c for c in inp.costs}, grads, method, s)
    return _CONTEXTS[work]


def layer_sensitivity(work: str, layer: str) -> dict:
    """One layer's sensitivities at every candidate (a task: JSON-ready, bits as strings)."""
    from .sensitivity import sensitivities
    inp, costs, grads, method, s = _context(work)
    if layer not in costs:
        raise ConfigError(f"{layer} is not a quantized layer of the model in {work}")
    got = sensitivities(inp.model, inp.infos, inp.pristine, method, [costs[layer]], inp.batches, inp.fp_logits,
                        s.w_cands, s.a_cands, grads)[layer]
    return {part: {str(b): e for b, e in v.items()} for part, v in got.items()}
