"""Mixed precision over PTQ4RIS's quantizers: ``mixq-kl`` (Mix-QSAM: KL importance, cross-layer synergy)
and ``mixq-lrp`` (Mix-QViT / LRP-QViT: relevance propagated from the referred object's mask logits). Both
choose each layer's weight and input bits with the integer program of ``mixed/allocate.py``, over the
sensitivities of ``mixed/sensitivity.py``, then calibrate with PTQ4RIS (DRQ, RORQ, every PTQ4RIS option)
at those bits.

The budget is the uniform setting the calibration is given: at WxAy, the quantized weights take no more
bits than every layer at x bits and the bit-operations no more than every layer at WxAy (``--avg-bits 4``
is W4A4). ``size_mb`` instead caps the whole model's size in MB (the chosen layers' weights at their bits,
everything else at 32 bits) with no bit-operations budget. Options: ``w_cands`` / ``a_cands`` the candidate
bit-widths ('2/3/4/6/8', or with commas in a preset), ``coupling`` λ of the synergy term (Mix-QSAM's; 0 in ``mixq-lrp``),
``study_pairs`` the calibration pairs the study measures on, ``study`` a study file to use or write
(default: the user's cache, keyed by the model), ``mix_parts`` the parts whose layers get bits of their own
('all', or e.g. 'fusion+decoder'; the others stay at the uniform setting).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..calib.reconstruct import DOMAINS, parse_domains
from ..config import ConfigError
from ..mixed.allocate import allocate, smallest, uniform_budget
from ..mixed.study import StudySettings, layer_study, problem
from .base import register
from .ptq4ris import PTQ4RIS


def _bits_list(text) -> tuple:
    values = [text] if isinstance(text, int) else str(text).replace("/", ",").replace(";", ",").split(",")
    try:
        bits = tuple(sorted({int(v) for v in values if str(v).strip()}))
    except ValueError:
        raise ConfigError(f"candidate bit-widths are whole numbers separated by commas, got {text!r}") from None
    if not bits:
        raise ConfigError("the candidate set is empty: give bit-widths such as '2,3,4,6,8'")
    if any(not 2 <= b <= 8 for b in bits):
        raise ConfigError(f"candidate bit-widths must be between 2 and 8, got {text!r}")
    if 8 not in bits:
        raise ConfigError(f"the candidates must include 8 (the sensitivities are measured against 8 bits), got {text!r}")
    return bits


@dataclass
class MixedPrecision(PTQ4RIS):
    size_mb: float | None = None
    w_cands: str = "3/4/6/8"  # measured best at the W4A4 budget; 2-bit weights and 3-bit inputs lost (RESULTS.md)
    a_cands: str = "4/6/8"
    coupling: float = 0.1
    study_pairs: int = 16
    study: str | None = None
    mix_parts: str = "all"
    importance = "kl"

    def __post_init__(self):
        super().__post_init__()
        _bits_list(self.w_cands), _bits_list(self.a_cands)
        unknown = set(parse_domains(self.mix_parts)) - set(DOMAINS)
        if unknown or not parse_domains(self.mix_parts):
            raise ConfigError(f"mix_parts is 'all' or parts joined by '+' from {', '.join(DOMAINS)}; got {self.mix_parts!r}")
        if self.size_mb is not None and not (isinstance(self.size_mb, (int, float)) and self.size_mb > 0):
            raise ConfigError(f"size_mb is a size in MB greater than 0, got {self.size_mb!r}")
        if not (isinstance(self.coupling, (int, float)) and self.coupling >= 0):
            raise ConfigError(f"coupling is a number ≥ 0, got {self.coupling!r}")

    def base(self) -> PTQ4RIS:
        """The quantizers the sensitivities are measured with: PTQ4RIS with this method's options."""
        return PTQ4RIS(**{f.name: getattr(self, f.name) for f in fields(PTQ4RIS)} | {"recon": False})

    def plan_bits(self, fp_model, w_bits, a_bits, progress=True, scale_out=None):
        settings = StudySettings(_bits_list(self.w_cands), _bits_list(self.a_cands), int(self.study_pairs),
                                 parts=tuple(sorted(parse_domains(self.mix_parts))))
        st = layer_study(fp_model, self.base(), settings, self.study, progress, **(scale_out or {}))
        p = problem(st, self.importance, settings.w_cands, settings.a_cands)
        others = st["other_quantized_params"]  # quantized layers outside mix_parts: at the uniform bits
        fixed_bits = 32.0 * (st["total_params"] - float(p.params.sum()) - others) + w_bits * others
        fp32_mb = 32.0 * st["total_params"] / 8e6
        uni_size, uni_bops = uniform_budget(p, w_bits, a_bits)
        if self.size_mb is not None:
            if self.size_mb >= fp32_mb:
                raise ConfigError(f"size_mb={self.size_mb} is not below the FP32 model's {fp32_mb:.2f} MB: nothing "
                                  f"to quantize for; use the FP32 model or a smaller budget")
            size_bits, bops = self.size_mb * 8e6 - fixed_bits, None
            least = (smallest(p)[0] + fixed_bits) / 8e6
            if self.size_mb < least:
                raise ConfigError(f"size_mb={self.size_mb} cannot be met: the size constraint binds; the smallest "
                                  f"feasible size_mb is {least:.3f} (every allocated layer at its lowest candidate, "
                                  f"the rest of the model {fixed_bits / 8e6:.2f} MB)")
        else:
            size_bits, bops = uni_size, uni_bops
        res = allocate(p, size_bits, bops, self.coupling if self.importance == "kl" else 0.0)
        overrides = [(n, {k: v for k, v in (("w_bits", w), ("a_bits", a)) if v is not None})
                     for n, (w, a) in res["bits"].items()]
        params = float(p.params.sum())
        avg_w = sum(p.params[i] * (res["bits"][n][0] or 0) for i, n in enumerate(p.names)) / max(params, 1)
        report = {"importance": self.importance, "budget": {"size_bits": size_bits, "bops": bops,
                                                             "uniform": f"W{w_bits}A{a_bits}"},
                  "size_bits": res["size_bits"], "bops": res["bops"],
                  "size_vs_uniform": res["size_bits"] / uni_size if uni_size else None,
                  "bops_vs_uniform": res["bops"] / uni_bops if uni_bops else None,
                  "model_mb": (res["size_bits"] + fixed_bits) / 8e6, "fp32_mb": fp32_mb,
                  "avg_weight_bits": float(avg_w), "objective": res["objective"], "optimal": res["optimal"],
                  "solve_seconds": res["seconds"], "study": st["path"], "study_cached": st["cached"],
                  "study_seconds": st["seconds"],
                  "bits": {n: list(b) for n, b in res["bits"].items()}}
        return {"overrides": overrides, "report": report}


@register
@dataclass
class MixQKL(MixedPrecision):
    name = "mixq-kl"
    importance = "kl"


@register
@dataclass
class MixQLRP(MixedPrecision):
    coupling: float = 0.0
    name = "mixq-lrp"
    importance = "lrp"
