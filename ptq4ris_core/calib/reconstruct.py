"""Block reconstruction (BRECQ with QDrop, the framework PTQ4SAM quantizes on): after the layer-wise
calibration has set every scale, each block (a BERT layer, a Swin block, a patch merging, a fusion
stage, a decoder stage) learns how to round its weights so that its quantized output matches the
float block's.

Per block, in network order:

- data: the block's input in the quantized model (the blocks before it already reconstructed) and in
  the float model; the target is the float block's output on the float input;
- AdaRound: each uniform weight quantizer's rounding becomes ⌊W/s⌋ + h(V), h a rectified sigmoid
  started at the fractional part (so the start is rounding to nearest), fitted with Adam on
  ‖block_q(x) − target‖² + λ·Σ(1 − |2h − 1|^β), β annealed from 20 to 2 after a warm-up; then h is made
  hard (h ≥ ½ rounds up) and the rounded weights are written back: they lie on the quantizer's own grid,
  so the quantizer, the saved model and the engine all see exactly them;
- QDrop: while fitting, each element of the block input comes from the quantized or the float model
  at random, and each activation quantizer's output is replaced by its float input with probability
  ``drop``. The drop lives only inside ``_fitting``, which removes it however the fit ends: at
  evaluation every quantizer is on (PTQ4SAM's released code left it on, AHCPTQ found).

A block whose loss rises (diverges) or whose learned rounding ends worse than rounding to nearest on
the calibration data keeps rounding to nearest, and the report says so. With ``resume_dir`` each
finished block is saved, and a rerun of the same calibration skips it.
"""
from __future__ import annotations

import copy
import json
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..config import ConfigError
from ..nn import QuantConv2d, QuantLinear
from ..quant.base import Quantizer
from ..quant.uniform import UniformQuantizer

DOMAINS = ("text", "vision", "fusion", "decoder")
ZETA, GAMMA = 1.1, -0.1  # AdaRound's stretch of the sigmoid, so that h reaches 0 and 1 exactly
BETA_START, BETA_END = 20.0, 2.0
DIVERGED = 2.0  # a fit whose recent loss is this many times rounding to nearest's error is stopped


@dataclass(frozen=True)
class ReconSettings:
    """``iters`` Adam steps per block on ``batch`` calibration samples each; ``domains``: the parts of
    the model whose blocks are fitted; ``drop``: QDrop's probability; ``round_weight``: λ;
    ``warmup``: the fraction of steps before the rounding term starts; ``learn_steps``: the activation
    quantizers' step sizes are learned too (LSQ, as QDrop does), each at ``step_lr`` of its size per step."""

    iters: int = 500
    batch: int = 8
    domains: tuple[str, ...] = DOMAINS
    drop: float = 0.5
    lr: float = 1e-2  # AdaRound's 1e-3 suits 20 000 steps; at a few hundred it barely moves (RESULTS.md)
    round_weight: float = 0.01
    warmup: float = 0.2
    learn_steps: bool = True
    step_lr: float = 1e-3

    def __post_init__(self):
        if int(self.iters) < 1 or int(self.batch) < 1:
            raise ConfigError(f"reconstruction needs iters ≥ 1 and batch ≥ 1, got {self.iters} and {self.batch}")
        if not 0.0 <= float(self.drop) < 1.0:
            raise ConfigError(f"QDrop's probability must be in [0, 1), got {self.drop}")
        unknown = set(self.domains) - set(DOMAINS)
        if unknown or not self.domains:
            raise ConfigError(f"reconstruction domains must be among {', '.join(DOMAINS)}, got {self.domains}")

    def to_dict(self) -> dict:
        return {**asdict(self), "domains": list(self.domains)}


def parse_domains(spec: str | tuple) -> tuple[str, ...]:
    """'all' or 'vision,fusion' → a tuple of domains."""
    if isinstance(spec, tuple):
        return spec
    return DOMAINS if str(spec) == "all" else tuple(d for d in str(spec).replace("+", ",").split(",") if d)


# --- learned rounding ----------------------------------------------------------------------------

def learnable(q) -> bool:
    """Weight quantizers whose rounding can be learned: calibrated uniform grids."""
    return isinstance(q, UniformQuantizer) and q.active


class LearnedRounding(nn.Module):
    """Stands in for a uniform weight quantizer while its block is fitted:
    Ŵ = s·(clamp(⌊W/s⌋ + h(V) + z, qmin, qmax) − z), h(V) = clamp(σ(V)(ζ − γ) + γ, 0, 1)."""

    def __init__(self, q: UniformQuantizer, weight: torch.Tensor):
        super().__init__()
        w = weight.detach()
        self.register_buffer("s", q._shaped(q.scale, w).clone())
        self.register_buffer("z", q._shaped(q.zero_point, w).clone())
        self.qmin, self.qmax = q.qmin_qmax
        self.register_buffer("floor", torch.floor(w / self.s))
        rest = (w / self.s - self.floor).clamp(0.0, 1.0)
        self.V = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(V) = rest
        self.V0 = self.V.detach().clone()

    def h(self):
        return torch.clamp(torch.sigmoid(self.V) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def weight(self, hard: bool = False, nearest: bool = False) -> torch.Tensor:
        if nearest:
            up = (self.V0 >= 0).float()
        else:
            up = (self.V >= 0).float() if hard else self.h()
        return (torch.clamp(self.floor + up + self.z, self.qmin, self.qmax) - self.z) * self.s

    def forward(self, _w):
        return self.weight()

    def regularizer(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def flipped(self) -> float:
        """Share of weights rounded otherwise than to nearest."""
        return float(((self.V >= 0) != (self.V0 >= 0)).float().mean())


# --- the model's blocks and their data ----------------------------------------------------------

def _pattern(p: str):
    """'stages.*.blocks.*': each * is one name part (it never crosses a dot)."""
    return re.compile("^" + re.escape(p).replace(r"\*", r"[^.]+") + "$")


@torch.no_grad()
def find_blocks(model: nn.Module, patterns, run_example) -> list[str]:
    """Names of the modules matching ``patterns``, in the order ``run_example()`` executes them."""
    regs = [_pattern(p) for p in patterns]
    mods = {n: m for n, m in model.named_modules() if any(r.match(n) for r in regs)}
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda _m, _a, n=n: None if n in order else order.append(n))
             for n, m in mods.items()]
    try:
        run_example()
    finally:
        for h in hooks:
            h.remove()
    return order


@contextmanager
def quantizers_enabled(model: nn.Module, on: bool):
    """Every quantizer of ``model`` on or off for the duration (as they were afterwards)."""
    qs = [(q, q.enabled) for q in model.modules() if isinstance(q, Quantizer)]
    for q, _ in qs:
        q.enabled = on
    try:
        yield
    finally:
        for q, e in qs:
            q.enabled = e


class _Stop(Exception):
    pass


class BlockData:
    """A block's calls on the calibration set, stacked: per-sample tensors (leading dim = samples)
    concatenated, everything else (sizes, constants) kept from the first call."""

    def __init__(self, calls: list, counts: list[int]):
        self.n = sum(counts)
        self.args = [self._stack([c[0][i] for c in calls], counts) for i in range(len(calls[0][0]))]
        self.kwargs = {k: self._stack([c[1][k] for c in calls], counts) for k in calls[0][1]}

    @staticmethod
    def _stack(values, counts):
        if isinstance(values[0], torch.Tensor) and all(v.dim() > 0 and v.shape[0] == c for v, c in zip(values, counts)):
            return ("sample", torch.cat([v.detach() for v in values], 0))
        return ("const", values[0])

    @staticmethod
    def _pick(entry, idx):
        kind, v = entry
        return v[idx] if kind == "sample" else v

    def take(self, idx, other: "BlockData | None" = None, drop: float = 0.0):
        """(args, kwargs) for samples ``idx``; with ``other``, each floating element comes from ``other``
        with probability ``drop`` (QDrop's mix of quantized and float inputs)."""
        def one(a, b):
            x = self._pick(a, idx)
            if other is None or a[0] != "sample" or not x.is_floating_point():
                return x
            return torch.where(torch.rand_like(x) < drop, self._pick(b, idx), x)
        args = [one(a, other.args[i] if other else None) for i, a in enumerate(self.args)]
        kwargs = {k: one(a, other.kwargs[k] if other else None) for k, a in self.kwargs.items()}
        return args, kwargs


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for t in out if isinstance(t, torch.Tensor)]


@torch.no_grad()
def capture_block(model, block: nn.Module, batches, run, quantized: bool, outputs: bool = False):
    """The block's inputs (a BlockData) on every batch, with the model's quantizers on or off; with
    ``outputs`` also its outputs (a list of tensors, samples concatenated)."""
    calls, outs = [], []

    def pre(_m, args, kwargs):
        calls.append((args, kwargs))
        if not outputs:
            raise _Stop

    def post(_m, _args, _kwargs, out):
        outs.append([t.detach() for t in _tensors(out)])
        raise _Stop

    hooks = [block.register_forward_pre_hook(pre, with_kwargs=True)]
    if outputs:
        hooks.append(block.register_forward_hook(post, with_kwargs=True))
    try:
        with quantizers_enabled(model, quantized):
            for b in batches:
                try:
                    run(b)
                except _Stop:
                    pass
    finally:
        for h in hooks:
            h.remove()
    if not calls:
        raise RuntimeError("the block did not run on the calibration data")
    data = BlockData(calls, [len(b[0]) for b in batches])
    if not outputs:
        return data
    return data, [torch.cat([o[i] for o in outs], 0) for i in range(len(outs[0]))]


# --- fitting one block ----------------------------------------------------------------------------

def _rec_loss(pred, target: list, idx=None) -> torch.Tensor:
    """Squared error summed over each sample's features, averaged over samples (BRECQ's form)."""
    return sum(((p - (t if idx is None else t[idx])) ** 2).flatten(1).sum(1).mean()
               for p, t in zip(_tensors(pred), target))


def step_sizes(acts: list) -> list[tuple]:
    """(quantizer, buffer name) of every activation step size the quantizers' handlers let move."""
    return [(q, name) for q in acts if q.active for name in q.handler.step_sizes]


@contextmanager
def _fitting(layers: dict, rounders: dict, acts: list, drop: float, steps=()):
    """For the fit only: learned rounding in the weight slots, QDrop on the activation quantizers, and
    the ``steps`` (quantizer, buffer) turned into parameters; yields those parameters. Afterwards the
    weight slots hold their quantizers again, no drop is left, and the steps are buffers again (as learned)."""
    saved = {n: m.weight_quantizer for n, m in layers.items()}
    hooks, params, shared = [], [], []
    try:
        for n, m in layers.items():
            m.weight_quantizer = rounders[n]
        if drop > 0:
            hooks = [q.register_forward_hook(
                lambda q_, inp, out: torch.where(torch.rand_like(out) < drop, inp[0], out) if q_.active else out)
                for q in acts]
        for q, name in steps:
            if q.handler.step_groups is None:
                p = nn.Parameter(q._buffers.pop(name).detach().clone())
                q.register_parameter(name, p)
            else:  # one parameter per group, spread over its channels before each call
                _, member = torch.unique(getattr(q, q.handler.step_groups), return_inverse=True)
                first = torch.stack([torch.nonzero(member == g)[0, 0] for g in range(int(member.max()) + 1)])
                p = nn.Parameter(getattr(q, name).detach()[first].clone())
                shared.append((q, name, p, member))
                hooks.append(q.register_forward_pre_hook(
                    lambda q_, _a, name=name, p=p, member=member: setattr(q_, name, p[member])))
            params.append(p)
        yield params
    finally:
        for h in hooks:
            h.remove()
        for n, m in layers.items():
            m.weight_quantizer = saved[n]
        for q, name in steps:
            if name in q._parameters:
                q.register_buffer(name, q._parameters.pop(name).detach().clamp_min(1e-8))
        for q, name, p, member in shared:
            setattr(q, name, p.detach()[member].clamp_min(1e-8))


@torch.no_grad()
def block_error(block, data: BlockData, target: list, batch: int) -> float:
    """Mean per-sample squared error of the block (as it is now) against the target."""
    total = 0.0
    for k in range(0, data.n, batch):
        idx = torch.arange(k, min(k + batch, data.n))
        args, kwargs = data.take(idx)
        total += float(_rec_loss(block(*args, **kwargs), target, idx)) * len(idx)
    return total / data.n


def fit_block(block: nn.Module, q_in: BlockData, fp_in: BlockData, target: list, s: ReconSettings,
              desc: str = "block", progress: bool = True) -> dict:
    """Learn the rounding of ``block``'s uniform weight quantizers; writes the chosen weights back."""
    t0 = time.time()
    layers = {n: m for n, m in block.named_modules()
              if isinstance(m, (QuantLinear, QuantConv2d)) and learnable(m.weight_quantizer)}
    if not layers:
        return {"kept": "as calibrated", "note": "no uniform weight quantizer to round"}
    rounders = {n: LearnedRounding(m.weight_quantizer, m.weight) for n, m in layers.items()}
    weight_qs = {id(m.weight_quantizer) for m in block.modules() if isinstance(m, (QuantLinear, QuantConv2d))}
    acts = [q for q in block.modules() if isinstance(q, Quantizer) and id(q) not in weight_qs]
    nearest = block_error(block, q_in, target, s.batch)  # what rounding to nearest gives: the bar to beat
    steps = step_sizes(acts) if s.learn_steps else []
    start_steps = [getattr(q, name).detach().clone() for q, name in steps]
    warm = int(s.warmup * s.iters)
    window = max(10, s.iters // 10)
    losses, note = [], None
    bar = tqdm(range(s.iters), desc=desc, unit="it", leave=False, disable=not progress, dynamic_ncols=True)
    with torch.enable_grad(), _fitting(layers, rounders, acts, s.drop, steps) as step_params:
        opt = torch.optim.Adam([{"params": [r.V for r in rounders.values()], "lr": s.lr}] +
                               [{"params": [p], "lr": s.step_lr * float(p.detach().abs().mean().clamp_min(1e-8))}
                                for p in step_params])
        for it in bar:
            idx = torch.randint(q_in.n, (min(s.batch, q_in.n),))
            args, kwargs = q_in.take(idx, fp_in, s.drop)
            rec = _rec_loss(block(*args, **kwargs), target, idx)
            loss = rec
            if it >= warm:
                t = (it - warm) / max(1, s.iters - warm)
                beta = BETA_END + (BETA_START - BETA_END) * max(0.0, 1 - t)
                loss = rec + s.round_weight * sum(r.regularizer(beta) for r in rounders.values())
            losses.append(float(rec.detach()))
            if not torch.isfinite(loss) or (len(losses) >= window and
                                            sum(losses[-window:]) / window > DIVERGED * max(nearest, 1e-12)):
                note = (f"diverged at step {it + 1} (loss {sum(losses[-window:]) / window:.4g}, rounding to "
                        f"nearest {nearest:.4g}); kept rounding to nearest")
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for p in step_params:
                    p.clamp_(min=1e-8)
            if it % 20 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
    bar.close()
    # (weights, activation steps) of each candidate; rounding to nearest keeps the calibrated steps
    candidates = {"nearest": ({n: r.weight(nearest=True).detach() for n, r in rounders.items()}, start_steps)}
    if note is None:
        candidates["learned"] = ({n: r.weight(hard=True).detach() for n, r in rounders.items()},
                                 [getattr(q, name).detach().clone() for q, name in steps])

    def apply(kind):
        weights, values = candidates[kind]
        for n, m in layers.items():
            m.weight.data = weights[n]
        for (q, name), v in zip(steps, values):
            setattr(q, name, v.clone())
    errors = {"nearest": nearest}
    if "learned" in candidates:
        apply("learned")
        errors["learned"] = block_error(block, q_in, target, s.batch)
    kept = "learned" if "learned" in errors and errors["learned"] <= errors["nearest"] else "nearest"
    if note is None and kept == "nearest":
        note = "learned rounding ended worse than rounding to nearest on the calibration data; kept nearest"
    apply(kept)
    out = {"kept": kept, "iters_run": len(losses), "error_nearest": errors["nearest"],
           "error_learned": errors.get("learned"), "seconds": round(time.time() - t0, 1),
           "flipped": round(sum(r.flipped() * r.V.numel() for r in rounders.values())
                            / sum(r.V.numel() for r in rounders.values()), 4) if kept == "learned" else 0.0,
           "layers": sorted(layers), "steps_learned": len(steps) if kept == "learned" else 0}
    if note:
        out["note"] = note
    return out


# --- the whole model ------------------------------------------------------------------------------

class _Resume:
    """A folder of finished blocks: ``key.json`` (what was being calibrated), ``blocks.json`` (their
    reports) and one safetensors file per block (its state: rounded weights, learned steps)."""

    def __init__(self, folder: Path | None, key: dict):
        self.folder, self.done = folder, {}
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        kf = folder / "key.json"
        if kf.exists():
            old = json.loads(kf.read_text(encoding="utf-8"))
            if old != json.loads(json.dumps(key)):
                raise ConfigError(f"{folder} holds the reconstruction of another calibration "
                                  f"({old.get('method')} {old.get('bits')}); remove it or choose another folder")
            if (folder / "blocks.json").exists():
                self.done = json.loads((folder / "blocks.json").read_text(encoding="utf-8"))
        else:
            kf.write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")

    def restore(self, name: str, block: nn.Module) -> dict | None:
        if name not in self.done:
            return None
        from safetensors.torch import load_file
        block.load_state_dict(load_file(str(self.folder / f"{name}.safetensors")))
        return {**self.done[name], "resumed": True}

    def save(self, name: str, block: nn.Module, record: dict):
        """The block's whole state: rounded weights and learned activation steps."""
        if self.folder is None:
            return
        from safetensors.torch import save_file
        save_file({k: v.detach().contiguous() for k, v in block.state_dict().items()},
                  str(self.folder / f"{name}.safetensors"))
        self.done[name] = record
        tmp = self.folder / "blocks.json.tmp"
        tmp.write_text(json.dumps(self.done, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.folder / "blocks.json")


def reconstruct(model: nn.Module, batches, run, settings: ReconSettings, block_patterns, domains: dict,
                progress: bool = True, resume_dir: Path | None = None, key: dict | None = None) -> dict:
    """Fit every block of ``model`` (named by ``block_patterns``, in the domains ``settings`` lists), in
    network order; ``run(m, batch)`` runs a whole model ``m``. Returns the report.

    The float side is a copy taken now with its quantizers off: rewriting a block's weights must not
    change the float inputs and targets of the blocks after it."""
    from .transforms import layer_domain
    t0 = time.time()
    names = [n for n in find_blocks(model, block_patterns, lambda: run(model, batches[0]))
             if layer_domain(n, domains) in settings.domains]
    if not names:
        return {"settings": settings.to_dict(), "blocks": {}, "note": "the model has no blocks to reconstruct"}
    float_model = copy.deepcopy(model)
    mods, float_mods = dict(model.named_modules()), dict(float_model.named_modules())
    resume = _Resume(resume_dir, {**(key or {}), "settings": settings.to_dict()})
    report = {}
    for name in tqdm(names, desc="reconstruct", unit="block", disable=not progress, dynamic_ncols=True):
        block = mods[name]
        done = resume.restore(name, block)
        if done is not None:
            report[name] = done
            continue
        if not any(isinstance(m, (QuantLinear, QuantConv2d)) and learnable(m.weight_quantizer) for m in block.modules()):
            report[name] = {"kept": "as calibrated", "note": "no uniform weight quantizer to round"}
            resume.save(name, block, report[name])
            continue
        fp_in, target = capture_block(float_model, float_mods[name], batches, lambda b: run(float_model, b),
                                      quantized=False, outputs=True)
        q_in = capture_block(model, block, batches, lambda b: run(model, b), quantized=True)
        report[name] = fit_block(block, q_in, fp_in, target, settings, desc=name, progress=progress)
        resume.save(name, block, report[name])
    kept = [r["kept"] for r in report.values()]
    return {"settings": settings.to_dict(), "seconds": round(time.time() - t0, 1),
            "learned": kept.count("learned"), "nearest": kept.count("nearest"), "blocks": report}
