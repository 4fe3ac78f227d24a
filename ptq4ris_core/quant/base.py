"""What every quantizer shares: the module that holds its parameters, and the handler that sets and
deploys them.

A quantizer type is one file in this folder: its module (the math, parameters as buffers so a
calibrated model saves and loads) and its handler, registered with ``@handles``. The handler is the
one place that knows how the type is initialised from statistics, searched, and written as integer
parts for the engine; calibration (``calib/search.py``) and export (``engine/qdq.py``) only call it.
A new quantizer type touches its own file and nothing else.
"""
from __future__ import annotations

import torch
from torch import nn

from . import functional as Fq

ALPHAS = torch.linspace(0.05, 1.2, 48)  # fractions of the observed range tried by grid searches
QUANTILES = (0.999, 0.9999, 0.99999, 1.0)


class Quantizer(nn.Module):
    """Does nothing until calibrated and enabled; each real quantization bumps ``n_quantized``, so a
    test can prove that a method quantizes every tensor it claims to.

    ``strategy``: how calibration sets it, one of its handler's ``strategies`` (the first is the default):
    ``minmax`` statistics only, ``grid`` a search scored on the layer's output, ``quantile`` (uniform)
    the clip with the least error on the tensor, ``rule`` (RORQ) the grouping rule, ``fixed`` set by a
    method's reparameterization and left alone.
    """

    kind = "base"
    handler: "Handler"  # set by @handles

    def __init__(self, bits: int, strategy: str | None = None):
        super().__init__()
        Fq.qrange(bits, True)  # validates bits
        self.bits = bits
        allowed = type(self).handler.strategies
        self.strategy = strategy or allowed[0]
        if self.strategy not in allowed:
            raise ValueError(f"{type(self).__name__} cannot be calibrated by {self.strategy!r}; "
                             f"choose one of {', '.join(allowed)}")
        self.enabled = True
        self.register_buffer("calibrated", torch.tensor(False))
        self.n_quantized = 0

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.calibrated)

    def forward(self, x):
        if not self.active:
            return x
        self.n_quantized += 1
        return self.quantize(x)

    def quantize(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def mark_calibrated(self):
        self.calibrated.fill_(True)
        return self

    def describe(self) -> dict:
        return {"kind": self.kind, "bits": self.bits}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Parameter shapes are set at calibration (per channel, per group): take the saved ones.
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buf is not None and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Handler:
    """Calibration and deployment of one quantizer type. ``init`` sets parameters from the tensor the
    quantizer will see; ``search`` refines them when the strategy searches (``score()``: the layer's
    output error with the current parameters, lower is better; ``score_per_channel()``: the same per
    output channel, for weights); ``integer_parts`` says how the engine's integer GEMMs take the input.
    """

    strategies: tuple[str, ...] = ("minmax", "fixed")
    searched: tuple[str, ...] = ()  # strategies that search after ``init``
    # buffers holding step sizes that may each move freely and still deploy as they are: block
    # reconstruction learns them (LSQ) for activations
    step_sizes: tuple[str, ...] = ()
    # a buffer of group indices when the step sizes are stored per channel but shared within each
    # group (RORQ's channel groups): reconstruction then learns one step per group
    step_groups: str | None = None

    def init(self, q, x: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def search(self, q, x: torch.Tensor, score, score_per_channel=None) -> None:
        """Refine ``q`` for its strategy; nothing by default."""

    def integer_parts(self, q, symmetric: bool = False, exact: bool = False):
        """(parts, how): uniform grids whose dequantized values add up to the quantized input (see
        ``uniform.part``), or (None, why) when the input runs float. ``exact``: the type's exact form
        of several parts where it has one; otherwise one uniform stand-in over the same range."""
        return None, f"{q.kind} input quantizer has no integer form here: runs float"


def handles(quantizer_type: type):
    """Register a handler class for a quantizer type (the type's subclasses inherit it until they
    register their own)."""
    def register(handler_cls):
        quantizer_type.handler = handler_cls()
        return handler_cls
    return register


def pick_best(candidates, apply, score):
    """Apply each candidate, score it, and leave the quantizer on the best one (lowest score)."""
    best, best_c = None, None
    for c in candidates:
        apply(c)
        v = float(score())
        if best is None or v < best:
            best, best_c = v, c
    apply(best_c)
