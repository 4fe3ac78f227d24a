"""A method is a recipe: which quantizer goes on which input (by role and domain), how each is
set (its strategy), which reparameterization runs first, and the search metric. Chosen by name.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..calib.reconstruct import ReconSettings, parse_domains
from ..config import ConfigError, LayerSetting
from ..quant import functional as Fq
from ..quant.observers import channel_minmax
from ..quant.quantizers import UniformQuantizer

REGISTRY: dict[str, type] = {}


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


def get_method(name: str, **options) -> "Method":
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**options)


def uniform(bits: int, strategy: str, symmetric: bool = False, axis: int | None = None):
    return UniformQuantizer(bits, symmetric, axis, strategy=strategy)


def weight_q(bits: int, strategy: str):
    """Weights: per output channel, symmetric signed (zero point 0): TensorRT's int8 form too."""
    return uniform(bits, strategy, symmetric=True, axis=0)


@torch.no_grad()
def reparameterize_channels(mod, x: torch.Tensor, scale_c: torch.Tensor, zp_c: torch.Tensor, target: str = "mean"):
    """RepQ-ViT: per-channel (Δ_c, z_c) → one (Δ̃, z̃), exactly, through an input affine on ``mod``.

    r_c = Δ_c/Δ̃, s_c = (z_c - z̃)·Δ_c; x'_c = (x_c + s_c)/r_c quantized with (Δ̃, z̃) gives the
    integer codes x_c gets with (Δ_c, z_c). ``target``: ``mean`` (RepQ-ViT) or ``bulk`` (the most
    common scale: RORQ's group 0 keeps r = 1). Returns (Δ̃, z̃) for the per-tensor quantizer.
    """
    if target == "mean":
        d, z = scale_c.mean(), torch.round(zp_c.mean())
    else:
        vals, counts = torch.unique(scale_c, return_counts=True)
        d = vals[counts.argmax()]
        z = torch.round(zp_c[scale_c == d].mean())
    r = scale_c / d
    s = (zp_c - z) * scale_c
    mod.set_input_affine(s, r)
    return d, z


FENCE_IQR = 1.5


def clip_channel_ranges(lo: torch.Tensor, hi: torch.Tensor):
    """LRP-QViT's clipping, our rule: ranges above the upper Tukey fence of the log ranges
    (exp(Q3 + 1.5·IQR)) shrink to the fence, both bounds scaled by fence / range."""
    rng = (hi - lo).clamp_min(1e-8)
    q1, q3 = torch.quantile(rng.log(), 0.25), torch.quantile(rng.log(), 0.75)
    fence = torch.exp(q3 + FENCE_IQR * (q3 - q1))
    shrink = torch.where(rng > fence, fence / rng, torch.ones_like(rng))
    return lo * shrink, hi * shrink


def per_channel_params(x: torch.Tensor, bits: int, clip: bool = False):
    """Per-channel (scale, zero point) over the last axis, min-max; ``clip``: see ``clip_channel_ranges``."""
    lo, hi = channel_minmax(x, x.dim() - 1)
    if clip:
        lo, hi = clip_channel_ranges(lo, hi)
    return Fq.minmax_params(lo, hi, bits, symmetric=False)


@dataclass
class Method:
    """Base recipe. Subclasses override ``quantizers_for`` and, when they reparameterize, ``prepare``.

    Every method takes block reconstruction after its layer-wise calibration (``calib/reconstruct.py``):
    ``recon`` on or off, ``recon_iters`` steps per block, ``recon_batch`` samples per step,
    ``recon_blocks`` the parts whose blocks are fitted ('all' or e.g. 'vision,fusion'), ``recon_act_steps``
    whether the activation quantizers' step sizes are learned with the rounding.
    """

    recon: bool = False
    recon_iters: int = 500
    recon_batch: int = 8
    recon_blocks: str = "all"
    recon_act_steps: bool = True
    name = "base"
    metric = "mse"
    rounds = 1

    def quantizers_for(self, info, s: LayerSetting) -> dict:
        raise NotImplementedError

    def prepare_model(self, model, run_calibration) -> dict:
        """Runs once on the quantizable copy before any layer is calibrated (its quantizers still off), for
        whole-model folds; ``run_calibration()`` runs it on the calibration data. Returns what it did."""
        return {}

    def plan_bits(self, fp_model, w_bits: int, a_bits: int, progress: bool = True,
                  scale_out: dict | None = None) -> dict | None:
        """Mixed precision: {"overrides": [(layer, {"w_bits", "a_bits"})], "report": {...}} choosing each
        layer's bits within the budget of uniform WxAy, or None (one global setting). ``scale_out``:
        {"ray": ADDRESS, "workers": N, "threads": N} to measure what the choice needs on Ray."""
        return None

    def prepare(self, info, inputs: list, s: LayerSetting) -> None:
        """Runs on the layer's calibration inputs before its quantizers are set."""

    def finish(self, info, inputs: list, fp_out) -> None:
        """Runs after the layer's quantizers are set (``fp_out``: its float output on ``inputs``)."""

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def reconstruction(self):
        """Block reconstruction settings, or None when ``recon`` is off."""
        if not self.recon:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.recon_iters, self.recon_batch)):
            raise ConfigError(f"recon_iters and recon_batch are whole numbers, got {self.recon_iters!r} and "
                              f"{self.recon_batch!r}")
        return ReconSettings(iters=self.recon_iters, batch=self.recon_batch, domains=parse_domains(self.recon_blocks),
                             learn_steps=bool(self.recon_act_steps))

    def __post_init__(self):
        self.reconstruction()  # bad settings fail now, not after the layer-wise calibration

    def metric_for(self, info) -> str:
        return self.metric

    # The shared default: uniform everywhere, with the given strategies.
    @staticmethod
    def plain(info, s: LayerSetting, act: str, wt: str) -> dict:
        out = {}
        if info.kind == "matmul":
            if s.a_bits is not None:
                out = {"a_quantizer": uniform(s.a_bits, act), "b_quantizer": uniform(s.a_bits, act)}
            return out
        if s.a_bits is not None:
            out["input_quantizer"] = uniform(s.a_bits, act)
        if s.w_bits is not None:
            out["weight_quantizer"] = weight_q(s.w_bits, wt)
        return out
