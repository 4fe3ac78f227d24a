"""Quantizing a model with a method: fold, wrap, trace roles, then calibrate layer by layer in
network order, each layer seeing the inputs that the already-quantized layers before it produce.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import ConfigError, LayerSetting, QuantConfig
from ..data import SPLIT_SIZES, SceneGenerator
from ..models import Preprocessor
from .capture import capture_inputs, output_grads
from .reconstruct import reconstruct
from .roles import trace_roles
from .search import calibrate_layer
from .transforms import fold_batchnorm, layer_domain, wrap_model

CALIB_BATCH = 8


@dataclass
class CalibrationSet:
    """Image-sentence pairs from the **train** split, chosen by seed (never test data)."""

    n: int = 32
    seed: int = 0
    split: str = "train"
    indices: list = field(default_factory=list)

    def build(self, model_cfg, pre: Preprocessor):
        if self.split != "train":
            raise ValueError("calibration draws from the train split only")
        if not 0 < self.n <= SPLIT_SIZES["train"]:
            raise ConfigError(f"calibration needs between 1 and {SPLIT_SIZES['train']} pairs, got {self.n}")
        rng = np.random.default_rng(self.seed)
        self.indices = sorted(int(i) for i in rng.choice(SPLIT_SIZES["train"], self.n, replace=False))
        gen = SceneGenerator(model_cfg.image_size)
        samples = [gen.sample("train", i) for i in self.indices]
        batches = []
        for k in range(0, len(samples), CALIB_BATCH):
            chunk = samples[k:k + CALIB_BATCH]
            ids, m = pre.texts([s.text for s in chunk])
            batches.append((pre.images(np.stack([s.image for s in chunk])), ids, m))
        return batches

    def describe(self):
        return {"n": self.n, "seed": self.seed, "split": self.split, "first_indices": self.indices[:8]}


def build_config(model, w_bits: int, a_bits: int, overrides=None) -> QuantConfig:
    """One global WxAy setting, the model's own float spots, then the user's overrides."""
    layout = model.quant_layout()
    return QuantConfig(LayerSetting(w_bits, a_bits), list(layout.get("float", [])) + list(overrides or []))


def attach_quantizers(model, method, config: QuantConfig, run_example, domains: dict) -> dict:
    """Fold BN, wrap by type, trace roles with ``run_example()``, attach the method's quantizers.

    Works on any module (the RIS model, or a text encoder alone); returns LayerInfos in execution order.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    fold_batchnorm(model)
    wrap_model(model, config)
    infos = trace_roles(model, run_example)
    for info in infos.values():
        info.domain = layer_domain(info.name, domains)
        info.setting = config.for_module(info.name)
        for slot, q in method.quantizers_for(info, info.setting).items():
            setattr(info.module, slot, q)
    return dict(sorted(infos.items(), key=lambda kv: kv[1].order))


def prepare_model(fp_model, method, config: QuantConfig, example_batch):
    """A quantizable copy of a RIS model with the method's (uncalibrated) quantizers attached."""
    model = copy.deepcopy(fp_model).eval()
    model.cfg = replace(model.cfg, freeze_text=False)  # gradients reach the text encoder (Hessian metric)
    infos = attach_quantizers(model, method, config, lambda: model(*example_batch), model.quant_layout()["domains"])
    return model, infos


def calibrate_layers(infos: dict, method, batches, run, grads: dict | None = None, progress: bool = True,
                     desc: str = "calibrate", switch=None):
    """Layer by layer in execution order; each layer's inputs come from the already-quantized layers.

    ``switch(info, batches, run) -> (batches, run)`` may replace the data path on the way
    (the RIS model caches the text features once the text encoder is done).
    """
    grads = grads or {}
    for info in tqdm(infos.values(), desc=desc, unit="layer", disable=not progress, dynamic_ncols=True):
        if switch is not None:
            batches, run = switch(info, batches, run)
        if not info.module.quantizers():
            continue
        inputs = capture_inputs(info.module, batches, run)
        method.prepare(info, inputs, info.setting)
        fp_out = calibrate_layer(info.module, inputs, grads.pop(info.name, None), method.metric_for(info), method.rounds)
        method.finish(info, inputs, fp_out)


def _pseudo_label_loss(model, batch):
    """CE between the model's logits and its own hard prediction, over the class axis: a non-zero
    gradient at the FP model (a loss against the FP output itself would have none)."""
    img, ids, m = batch
    img = img.clone().requires_grad_(True)
    logits = model(img, ids, m)
    return F.cross_entropy(logits, logits.argmax(1).detach())


def hessian_grads(model, infos: dict, method, batches) -> dict:
    """∂L/∂O at the FP model for every layer the method scores with the Hessian metric."""
    wanted = {n: i.module for n, i in infos.items() if method.metric_for(i) == "hessian"}
    if not wanted:
        return {}
    # The embedding tables are the text side's graph inputs: let gradients start there.
    embeddings = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    for w in embeddings:
        w.requires_grad_(True)
    try:
        return output_grads(model, wanted, batches, lambda b: _pseudo_label_loss(model, b))
    finally:
        for w in embeddings:
            w.requires_grad_(False)
            w.grad = None


def model_fingerprint(model) -> str:
    """SHA-256 over a model's tensors: which float model a resumable calibration belongs to."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def calibrate(fp_model, method, w_bits: int, a_bits: int, calib: CalibrationSet | None = None,
              overrides=None, progress: bool = True, resume_dir: Path | None = None, scale_out: dict | None = None):
    """Returns (quantized model, report). Deterministic for a given seed.

    ``resume_dir``: where a method with block reconstruction keeps its finished work (the layer-wise
    calibration, then each block), so that a rerun after an interruption goes on from there.
    ``scale_out``: {"ray": ADDRESS, "workers": N, "threads": N}: a mixed-precision method measures its
    layer study on Ray."""
    torch.manual_seed(0)
    calib = calib or CalibrationSet()
    pre = Preprocessor(fp_model.cfg)
    batches = calib.build(fp_model.cfg, pre)
    t0 = time.time()
    bits_plan = method.plan_bits(fp_model, w_bits, a_bits, progress, scale_out)  # mixed precision: a bit-width per layer
    if bits_plan is not None:
        if overrides:  # the user's overrides come last and win; the report says which
            bits_plan["report"]["user_overrides_win"] = [list(o) for o in overrides]
        overrides = list(bits_plan["overrides"]) + list(overrides or [])
    config = build_config(fp_model, w_bits, a_bits, overrides)
    recon = method.reconstruction()
    model, infos = prepare_model(fp_model, method, config, batches[0])
    run = lambda b: model(*b)  # noqa: E731
    with torch.no_grad():
        folds = method.prepare_model(model, lambda: [run(b) for b in batches])
    resume_dir = Path(resume_dir) if (resume_dir is not None and recon is not None) else None
    key = None if resume_dir is None else {
        "method": method.name, "options": method.options(), "bits": f"W{w_bits}A{a_bits}",
        "config": config.to_dict(), "calibration": calib.describe(), "model": model_fingerprint(fp_model)}
    layers_done = _resume_layers(model, resume_dir, key)
    if not layers_done:
        calibrate_all_layers(model, infos, method, batches, run, progress, f"calibrate {method.name} W{w_bits}A{a_bits}")
        _save_layers(model, resume_dir, key)
    recon_report = None
    if recon is not None:
        layout = model.quant_layout() if hasattr(model, "quant_layout") else {}
        recon_report = reconstruct(model, batches, lambda m, b: m(*b), recon, layout.get("blocks", []),
                                   layout.get("domains", {}), progress,
                                   None if resume_dir is None else resume_dir / "blocks", key)
    model.cfg = replace(model.cfg, freeze_text=True)
    seconds = time.time() - t0
    report = {"method": method.name, "options": method.options(), "bits": f"W{w_bits}A{a_bits}",
              "config": config.to_dict(), "calibration": calib.describe(), "seconds": round(seconds, 1),
              **({"model_folds": folds} if folds else {}),
              **({"mixed_precision": bits_plan["report"]} if bits_plan is not None else {}),
              **({"reconstruction": recon_report} if recon_report is not None else {}),
              **({"resumed_layers": True} if layers_done else {}),
              "layers": {n: {"kind": i.kind, "role": i.role, "domain": i.domain,
                             "quantizers": {s: q.describe() for s, q in i.module.quantizers().items()}}
                         for n, i in infos.items()}}
    return model, report


def calibrate_all_layers(model, infos, method, batches, run, progress, desc, grads: dict | None = None):
    """Every layer in network order (``grads``: ∂L/∂O at the float model when already computed; used up)."""
    grads = hessian_grads(model, infos, method, batches) if grads is None else grads

    def cache_text(info, batches, run):
        # Text layers run first. At the first other layer the text side is calibrated and its output
        # fixed: compute it once per batch (token ids in the batches become word features).
        if info.domain != "text" and not batches[0][1].is_floating_point():
            with torch.no_grad():
                batches = [(img, model.encode_text(ids, m), m) for img, ids, m in batches]
            run = lambda b: model.segment_features(*b)  # noqa: E731
        return batches, run

    calibrate_layers(infos, method, batches, run, grads, progress, desc, switch=cache_text)


LAYERS_FILE, KEY_FILE = "layers.safetensors", "layers.json"


def _resume_layers(model, folder: Path | None, key: dict) -> bool:
    """Load a finished layer-wise calibration of the same run from ``folder``; False when there is none."""
    if folder is None or not (folder / LAYERS_FILE).exists() or not (folder / KEY_FILE).exists():
        return False
    if json.loads((folder / KEY_FILE).read_text(encoding="utf-8")) != json.loads(json.dumps(key)):
        raise ConfigError(f"{folder} holds the work of another calibration (method, bits, options, calibration "
                          f"set or model differ); remove it or choose another output folder")
    from safetensors.torch import load_file
    model.load_state_dict(load_file(str(folder / LAYERS_FILE)), strict=True)
    return True


def _save_layers(model, folder: Path | None, key: dict):
    if folder is None:
        return
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / LAYERS_FILE))
    (folder / KEY_FILE).write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")


def active_quantizers(model) -> dict:
    """Every calibrated, enabled quantizer in the model, by 'layer.slot'."""
    from ..nn import QuantModule
    out = {}
    for n, m in model.named_modules():
        if isinstance(m, QuantModule):
            for s, q in m.quantizers().items():
                if q.active:
                    out[f"{n}.{s}"] = q
    return out
