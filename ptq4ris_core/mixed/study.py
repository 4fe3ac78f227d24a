"""Everything the bit allocation needs about one model, measured once and cached: the layers' costs,
Mix-QSAM's KL importance and synergy, LRP relevance, and the per-layer sensitivities at every candidate.

The file is keyed by the float model's fingerprint, the base method and its options, the candidates and
the calibration pairs; it records what each part cost in seconds. A file made for another model is refused.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..calib.reconstruct import DOMAINS
from ..calib.calibrate import (CalibrationSet, calibrate_all_layers, build_config, hessian_grads, model_fingerprint,
                               prepare_model)
from ..config import ConfigError
from ..files import cache_home
from ..models import Preprocessor
from .importance import kl_importance, lrp_relevance, normalized, synergy
from .profile import layer_costs, neighbours
from .sensitivity import resolved, sensitivities

STUDY_VERSION = 1


@dataclass(frozen=True)
class StudySettings:
    w_cands: tuple = (3, 4, 6, 8)
    a_cands: tuple = (4, 6, 8)
    pairs: int = 16
    seed: int = 0
    parts: tuple = DOMAINS  # the parts whose layers get a bit-width of their own; the rest stay uniform


def study_key(fp_model, base_method, s: StudySettings) -> dict:
    """What the study depends on (the reconstruction options do not: the study never reconstructs)."""
    options = {k: v for k, v in base_method.options().items() if not k.startswith("recon")}
    return {"version": STUDY_VERSION, "model": model_fingerprint(fp_model), "method": base_method.name,
            "options": options, "w_cands": sorted(s.w_cands), "a_cands": sorted(s.a_cands),
            "pairs": s.pairs, "seed": s.seed, "parts": sorted(s.parts)}


def default_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_home() / "mixed" / f"{key['model'][:12]}-{digest}.json"


def load_study(path: Path, key: dict) -> dict | None:
    """The study in ``path`` if it was made with ``key``; None if there is none; refused if it is another's."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not a readable layer study ({e}); delete it to measure again") from e
    if got.get("key", {}).get("model") != key["model"]:
        raise ConfigError(f"{path} was measured on another model (fingerprint {str(got.get('key', {}).get('model'))[:12]}, "
                          f"this model is {key['model'][:12]}); delete it or leave out the study file to measure "
                          f"this model")
    # candidates: a study that measured more of them serves any subset
    subset = lambda k: set(key[k]) <= set(got["key"].get(k, []))  # noqa: E731
    differs = sorted(k for k in key if got["key"].get(k) != json.loads(json.dumps(key[k]))
                     and not (k in ("w_cands", "a_cands") and subset(k)))
    if differs:
        raise ConfigError(f"{path} was measured with other settings ({', '.join(differs)} differ); delete it or "
                          f"leave out the study file")
    return got


@dataclass
class StudyInputs:
    """What the study measures on, built the same way by the driver and by a Ray worker (``study_inputs``)."""
    batches: list          # the calibration pairs
    model: torch.nn.Module  # the quantizable copy under the base method (its quantizers not yet calibrated)
    infos: dict
    fp: torch.nn.Module     # its float twin
    fp_logits: list         # the float model's logits per batch
    costs: list             # every quantized layer's LayerCost

    @property
    def pristine(self) -> dict:
        """Each layer's float wrapped module."""
        return {n: self.fp.get_submodule(n) for n in self.infos}


def study_inputs(fp_model, base_method, s: StudySettings) -> StudyInputs:
    batches = CalibrationSet(s.pairs, s.seed).build(fp_model.cfg, Preprocessor(fp_model.cfg))
    model, infos = prepare_model(fp_model, base_method, build_config(fp_model, 8, 8), batches[0])
    with torch.no_grad():
        base_method.prepare_model(model, lambda: [model(*b) for b in batches])
        fp = copy.deepcopy(model)  # float (its quantizers not yet calibrated do nothing)
        fp_logits = [fp(*b) for b in batches]
    return StudyInputs(batches, model, infos, fp, fp_logits, layer_costs(infos, batches, lambda b: model(*b)))


def calibrate_w8a8(inp: StudyInputs, base_method, progress: bool = True) -> dict:
    """Calibrate ``inp.model`` at W8A8, the bits every other layer keeps while one is measured; returns
    ∂L/∂O at the float model (the Hessian metric's), which the sensitivities reuse."""
    grads = hessian_grads(inp.model, inp.infos, base_method, inp.batches)
    calibrate_all_layers(inp.model, inp.infos, base_method, inp.batches, lambda b: inp.model(*b), progress,
                         "calibrate W8A8 (the others' bits)", grads=dict(grads))
    return grads


def layer_study(fp_model, base_method, s: StudySettings = StudySettings(), path: Path | None = None,
                progress: bool = True, ray: str | None = None, workers: int | None = None, threads: int = 1) -> dict:
    """Load or measure (and save) the study of ``fp_model`` under ``base_method`` (its quantizers at 8 bits
    for the other layers, and at each candidate for the layer measured).

    ``ray``: measure the sensitivities as one task per layer on Ray ("local", or HOST:PORT of a cluster;
    ``workers`` tasks at a time on a local Ray, ``threads`` each), resumable in the folder beside the study."""
    key = study_key(fp_model, base_method, s)
    path = Path(path) if path else default_path(key)
    got = load_study(path, key)
    if got is not None:
        return {**got, "path": str(path), "cached": True}
    bar = (lambda x, **k: tqdm(x, dynamic_ncols=True, **k)) if progress else None
    seconds = {}
    t = time.time()
    inp = study_inputs(fp_model, base_method, s)
    batches, fp, pristine = inp.batches, inp.fp, inp.pristine
    fp_run = lambda b: fp(*b)  # noqa: E731
    every = inp.costs
    costs = [c for c in every if c.domain in s.parts]
    if not costs:
        raise ConfigError(f"no quantized layer lies in the parts {', '.join(s.parts)}; choose other parts "
                          f"(mix_parts) or 'all'")
    layers = {c.name: pristine[c.name] for c in costs}
    seconds["profile"] = round(time.time() - t, 1)

    t = time.time()
    per_sample = kl_importance(layers, batches, fp_run, bar)
    pairs = neighbours(costs)
    omega = normalized(per_sample).mean(1)
    syn = synergy(per_sample, pairs)
    seconds["kl_importance"] = round(time.time() - t, 1)

    t = time.time()
    relevance = _lrp(fp, layers, batches)
    seconds["lrp"] = round(time.time() - t, 1)

    if ray is None:
        t = time.time()
        grads = calibrate_w8a8(inp, base_method, progress)
        seconds["w8a8_calibration"] = round(time.time() - t, 1)
        t = time.time()
        partial = path.with_suffix(".partial.json")  # finished layers of an interrupted run, kept until the end
        done = _read_partial(partial, key)
        sens = sensitivities(inp.model, inp.infos, pristine, base_method, costs, batches, inp.fp_logits, s.w_cands,
                             s.a_cands, grads, bar, done,
                             lambda results: _write_json(partial, {"key": key, "sensitivity": results}))
        seconds["sensitivity"] = round(time.time() - t, 1)
        if done:
            seconds["sensitivity_layers_resumed"] = len(done)
    else:
        from .scale_out import sensitivities_as_tasks
        sens = sensitivities_as_tasks(fp_model, base_method, s, key, path.with_suffix(".work"), inp, costs, ray,
                                      workers, threads, progress, seconds)

    study = {"key": key, "seconds": seconds, "layers": [c.to_dict() for c in costs],
             "total_params": sum(p.numel() for p in fp_model.parameters()),
             "other_quantized_params": sum(c.params for c in every if c.domain not in s.parts),
             "kl_importance": [float(v) for v in omega], "lrp_relevance": [float(v) for v in relevance],
             "pairs": pairs, "synergy": syn,
             "sensitivity": [{"w": {str(b): e for b, e in sens[c.name]["w"].items()},
                              "a": {str(b): e for b, e in sens[c.name]["a"].items()}} for c in costs]}
    _write_json(path, study)
    path.with_suffix(".partial.json").unlink(missing_ok=True)  # an interrupted single-process run's
    return {**study, "path": str(path), "cached": False}


def _write_json(path: Path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_partial(path: Path, key: dict) -> dict:
    """{layer: {"w": {bits: e}, "a": ...}} finished by an interrupted run of the same study, else {}."""
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if got.get("key") != json.loads(json.dumps(key)):
        return {}  # another study's leftovers: measured again
    return {n: {part: {int(b): e for b, e in v.items()} for part, v in parts.items()}
            for n, parts in got.get("sensitivity", {}).items()}


def _lrp(fp, layers, batches):
    embeddings = [m.weight for m in fp.modules() if isinstance(m, torch.nn.Embedding)]
    for w in embeddings:
        w.requires_grad_(True)
    try:
        return lrp_relevance(fp, layers, batches, lambda b: fp(b[0].clone().requires_grad_(True), b[1], b[2]))
    finally:
        for w in embeddings:
            w.requires_grad_(False)
            w.grad = None


def problem(study: dict, importance: str, w_cands=None, a_cands=None):
    """The allocation's inputs from a study; ``importance``: 'kl' (Mix-QSAM) or 'lrp' (LRP-QViT); the
    candidates kept (default: all the study measured)."""
    import numpy as np

    from .allocate import Problem
    layers = study["layers"]
    scores = {"kl": study["kl_importance"], "lrp": study["lrp_relevance"]}[importance]
    return Problem(names=[l["name"] for l in layers],
                   params=np.array([l["params"] for l in layers], dtype=float),
                   macs=np.array([l["macs"] for l in layers], dtype=float),
                   matmul=np.array([l["kind"] == "matmul" for l in layers]),
                   w_err=resolved([{int(b): e for b, e in s["w"].items() if w_cands is None or int(b) in w_cands}
                                   for s in study["sensitivity"]]),
                   a_err=resolved([{int(b): e for b, e in s["a"].items() if a_cands is None or int(b) in a_cands}
                                   for s in study["sensitivity"]]),
                   importance=np.asarray(scores, dtype=float),
                   pairs=[tuple(p) for p in study["pairs"]], synergy=np.asarray(study["synergy"], dtype=float))
