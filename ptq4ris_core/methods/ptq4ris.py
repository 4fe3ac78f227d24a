"""PTQ4RIS: DRQ (dual-region) for the vision encoder's post-Softmax / post-GELU activations,
RORQ (outlier-retained) for the text encoder's Linear inputs, plain uniform for fusion and decoder.

Options for the ablation: ``drq=False`` (uniform instead), ``rorq=None | "element" | "channel"``.
"""
from dataclasses import dataclass

from ..calib.search import channel_group_params
from ..quant.quantizers import DualRegionGeluQuantizer, DualRegionSoftmaxQuantizer, ElementGroupQuantizer
from .base import Method, register, reparameterize_channels, uniform, weight_q, with_strategy

RORQ_VARIANTS = (None, "element", "channel")


@register
@dataclass
class PTQ4RIS(Method):
    drq: bool = True
    rorq: str | None = "channel"
    name = "ptq4ris"
    metric = "hessian"
    rounds = 3

    def __post_init__(self):
        if self.rorq not in RORQ_VARIANTS:
            raise ValueError(f"rorq must be one of {RORQ_VARIANTS}, got {self.rorq!r}")

    def options(self):
        return {"drq": self.drq, "rorq": self.rorq}

    def quantizers_for(self, info, s):
        if info.domain == "text":
            return self._text(info, s)
        out = self.plain(info, s, act="grid", wt="grid")
        if s.a_bits is None or info.domain != "vision":
            return out  # fusion and decoder: plain uniform (quantization-friendly)
        if info.kind == "matmul" and info.role == "qk":  # both operands of Q·Kᵀ per head
            out = {"a_quantizer": uniform(s.a_bits, "grid", axis=1), "b_quantizer": uniform(s.a_bits, "grid", axis=1)}
        if self.drq and info.role == "post_softmax":
            out["a_quantizer"] = with_strategy(DualRegionSoftmaxQuantizer(s.a_bits), "grid")
        elif self.drq and info.role == "post_gelu" and info.kind == "linear":
            out["input_quantizer"] = with_strategy(DualRegionGeluQuantizer(s.a_bits), "grid")
        return out

    def _text(self, info, s):
        out = {}
        if info.kind == "matmul":  # BERT's attention operands: clip at the best quantile
            if s.a_bits is not None:
                out = {"a_quantizer": uniform(s.a_bits, "quantile"), "b_quantizer": uniform(s.a_bits, "quantile")}
            return out
        if s.w_bits is not None:
            out["weight_quantizer"] = weight_q(s.w_bits, "grid")
        if s.a_bits is not None:
            if self.rorq == "element":
                out["input_quantizer"] = with_strategy(ElementGroupQuantizer(s.a_bits), "rule")
            elif self.rorq == "channel":
                out["input_quantizer"] = uniform(s.a_bits, "fixed")
            else:
                out["input_quantizer"] = uniform(s.a_bits, "grid")
        return out

    def prepare(self, info, inputs, s):
        if info.domain == "text" and info.kind == "linear" and self.rorq == "channel" and s.a_bits is not None:
            scale_c, zp_c, _groups = channel_group_params(inputs[0], s.a_bits)
            d, z = reparameterize_channels(info.module, inputs[0], scale_c, zp_c, target="bulk")
            info.module.input_quantizer.set_params(d, z)

    def metric_for(self, info):
        return "mse2.4" if info.domain == "text" else self.metric  # BERT: PD-Quant/QDrop's p = 2.4
