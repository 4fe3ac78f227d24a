"""The bit allocation as a mixed-integer linear program, solved exactly by HiGHS (SciPy's ``milp``).

Each layer l takes one candidate c = (w_c, a_c) from its candidates (weights × inputs; one side only when
the layer has only that side quantized): one-hot binaries x_{l,c}.

    minimize    Σ_l Σ_c x_{l,c} · Ω_l · (e_l(w_c) + e_l(a_c))                       importance-weighted error
              + λ · ē · Σ_{(l,m) adjacent} Ŝ_lm · ((w_l − w_m)² + (a_l − a_m)²) / Δ²   coupling
    subject to  Σ_c x_{l,c} = 1                                                        one setting per layer
                Σ_l params_l · w_l ≤ B_size                                            model size (weight bits)
                Σ_l MACs_l · w_l · a_l ≤ B_bops (a_l² for an attention matmul)         bit-operations

with w_l = Σ_c w_c x_{l,c}; Ω_l the importance over its mean (1 = an average layer) plus 0.01; e_l the measured
sensitivity (floored where too small to measure: ``sensitivity.resolved``); ē the mean over layers of each
layer's largest e_l(w) + e_l(a) (its error at the lowest candidates, so that λ has no unit); Ŝ the synergy over
its largest value; Δ the widest gap between candidates. A side (weights or inputs) that one of the two layers
does not quantize adds no coupling for that pair. The squares are exact: (w_l − w_m)² takes
only the values d² for the possible gaps d, and the convex piecewise-linear function through those points
(its secants) equals d² at each of them, so t ≥ each secant with t minimized is exact.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from ..config import ConfigError

IMPORTANCE_FLOOR = 0.01  # a layer scored 0 still has its error counted a little, so ties do not decide


@dataclass
class Problem:
    """What the program needs, per layer (execution order)."""

    names: list[str]
    params: np.ndarray  # weights per layer (0 where weights are not chosen)
    macs: np.ndarray  # multiply-adds per sample
    matmul: np.ndarray  # bool: both operands are activations (BOPs = MACs · a²)
    w_err: list[dict]  # per layer {bits: e} ({} when the weights are not chosen)
    a_err: list[dict]
    importance: np.ndarray  # Ω_l
    pairs: list[tuple[int, int]]
    synergy: np.ndarray  # Ŝ per pair

    def candidates(self, l):
        ws = sorted(self.w_err[l]) or [None]
        as_ = sorted(self.a_err[l]) or [None]
        return list(itertools.product(ws, as_))


def layer_size_bits(p: Problem, l, w):
    return 0.0 if w is None else float(p.params[l]) * w


def layer_bops(p: Problem, l, w, a):
    if a is None:
        return 0.0  # float inputs: no integer bit-operations counted (the layer is not integer)
    return float(p.macs[l]) * (a * a if p.matmul[l] else (w if w is not None else 32) * a)


def uniform_budget(p: Problem, w_bits: int, a_bits: int) -> tuple[float, float]:
    """The size (bits) and bit-operations of every layer at WxAy: the budget of 'an average of x bits'."""
    size = sum(layer_size_bits(p, l, w_bits if p.w_err[l] else None) for l in range(len(p.names)))
    bops = sum(layer_bops(p, l, w_bits if p.w_err[l] else None, a_bits if p.a_err[l] else None)
               for l in range(len(p.names)))
    return size, bops


def _extremes(p: Problem, pick):
    size = bops = 0.0
    for l in range(len(p.names)):
        w, a = pick(p.candidates(l), l)
        size += layer_size_bits(p, l, w)
        bops += layer_bops(p, l, w, a)
    return size, bops


def smallest(p: Problem) -> tuple[float, float]:
    """The least size (bits) and bit-operations any allocation reaches: every layer at its lowest candidates
    (one allocation reaches both, so the two budgets are feasible together exactly when each is)."""
    if not p.names:
        raise ConfigError("no layer has a bit-width to choose (empty model, or every layer float)")
    for l in range(len(p.names)):
        if not p.w_err[l] and not p.a_err[l]:
            raise ConfigError(f"layer {p.names[l]} has an empty candidate set")
    low = lambda cands, l: min(cands, key=lambda c: (layer_size_bits(p, l, c[0]), layer_bops(p, l, *c)))  # noqa: E731
    return _extremes(p, low)


def check_budget(p: Problem, size_bits: float | None, bops: float | None):
    """Refuse a budget no allocation meets, naming the binding constraint and the smallest feasible value."""
    min_size, min_bops = smallest(p)
    if size_bits is not None and size_bits < min_size - 1e-6:
        raise ConfigError(f"the size budget ({size_bits / 8e6:.3f} MB of quantized weights) is below the smallest "
                          f"possible, {min_size / 8e6:.3f} MB (every layer at its lowest candidate); the size "
                          f"constraint binds: raise the budget or add lower candidates")
    if bops is not None and bops < min_bops - 1e-6:
        raise ConfigError(f"the bit-operations budget ({bops:.4g} per sample) is below the smallest possible, "
                          f"{min_bops:.4g} (every layer at its lowest candidates); the bit-operations "
                          f"constraint binds: raise the budget or add lower candidates")


def allocate(p: Problem, size_bits: float | None, bops: float | None, coupling: float = 0.0,
             time_limit: float = 60.0) -> dict:
    """Solve the program (module docstring). Returns {"bits": {layer: (w, a)}, "size_bits", "bops",
    "objective", "seconds", "status"}."""
    check_budget(p, size_bits, bops)
    t0 = time.time()
    cands = [p.candidates(l) for l in range(len(p.names))]
    offset = np.cumsum([0] + [len(c) for c in cands])
    nx, npairs = int(offset[-1]), len(p.pairs)
    # coupling variables: t_w and t_a per adjacent pair
    n = nx + 2 * npairs
    imp = p.importance / max(float(np.mean(p.importance)), 1e-30) + IMPORTANCE_FLOOR
    low_err = [max(p.w_err[l].values(), default=0.0) + max(p.a_err[l].values(), default=0.0)
               for l in range(len(p.names))]
    e_bar = max(float(np.mean(low_err)), 1e-30)
    all_bits = sorted({b for c in cands for wa in c for b in wa if b is not None}) or [8]
    delta2 = float((all_bits[-1] - all_bits[0]) ** 2) or 1.0
    syn = np.asarray(p.synergy, dtype=float)
    syn = syn / syn.max() if syn.size and syn.max() > 0 else syn

    cost = np.zeros(n)
    for l, cs in enumerate(cands):
        for k, (w, a) in enumerate(cs):
            cost[offset[l] + k] = imp[l] * (p.w_err[l].get(w, 0.0) + p.a_err[l].get(a, 0.0))
    for j in range(npairs):
        cost[nx + 2 * j] = cost[nx + 2 * j + 1] = coupling * e_bar * syn[j] / delta2

    lo, hi = [], []
    A = lil_matrix((len(cands) + 2 + npairs * 2 * 2 * len(all_bits) ** 2, n))
    r = 0
    for l, cs in enumerate(cands):  # one-hot
        A[r, offset[l]:offset[l] + len(cs)] = 1
        lo.append(1), hi.append(1)
        r += 1
    if size_bits is not None:
        for l, cs in enumerate(cands):
            for k, (w, a) in enumerate(cs):
                A[r, offset[l] + k] = layer_size_bits(p, l, w)
        lo.append(-np.inf), hi.append(size_bits)
        r += 1
    if bops is not None:
        for l, cs in enumerate(cands):
            for k, (w, a) in enumerate(cs):
                A[r, offset[l] + k] = layer_bops(p, l, w, a)
        lo.append(-np.inf), hi.append(bops)
        r += 1
    if coupling > 0:
        for j, (l, m) in enumerate(p.pairs):
            for side in (0, 1):
                vals_l = {c[side] for c in cands[l]} - {None}
                vals_m = {c[side] for c in cands[m]} - {None}
                if not vals_l or not vals_m:
                    continue
                gaps = sorted({x - y for x in vals_l for y in vals_m})
                if len(gaps) == 1:  # one possible gap: t ≥ its square, a constant
                    A[r, nx + 2 * j + side] = 1
                    lo.append(gaps[0] ** 2), hi.append(np.inf)
                    r += 1
                for d0, d1 in zip(gaps, gaps[1:]):  # t ≥ (d0 + d1)·d − d0·d1, d = bits_l − bits_m
                    for k, c in enumerate(cands[l]):
                        A[r, offset[l] + k] = -(d0 + d1) * c[side]
                    for k, c in enumerate(cands[m]):
                        A[r, offset[m] + k] = (d0 + d1) * c[side]
                    A[r, nx + 2 * j + side] = 1
                    lo.append(-d0 * d1), hi.append(np.inf)
                    r += 1
    A = A[:r].tocsr()
    integrality = np.r_[np.ones(nx), np.zeros(2 * npairs)]
    res = milp(cost, constraints=LinearConstraint(A, lo, hi), integrality=integrality,
               bounds=Bounds(np.zeros(n), np.r_[np.ones(nx), np.full(2 * npairs, np.inf)]),
               options={"time_limit": time_limit})
    if res.x is None:
        raise ConfigError(f"the bit allocation found no solution ({res.message}); the budgets may be too tight "
                          f"for the candidates")
    bits, size, ops = {}, 0.0, 0.0
    for l, cs in enumerate(cands):
        k = int(np.argmax(res.x[offset[l]:offset[l] + len(cs)]))
        w, a = cs[k]
        bits[p.names[l]] = (w, a)
        size += layer_size_bits(p, l, w)
        ops += layer_bops(p, l, w, a)
    return {"bits": bits, "size_bits": size, "bops": ops, "objective": float(res.fun),
            "seconds": round(time.time() - t0, 3), "status": res.message, "optimal": res.status == 0}
