"""PTQ4SAM (CVPR 2024) as its framework runs it: bimodal integration (BIG) of post-Key activations
before calibration, adaptive-granularity quantization (AGQ) of every post-Softmax, and block
reconstruction (QDrop) after it; uniform quantizers elsewhere (weights per output channel, activations
per tensor, each range searched on its layer's output error).

Options: ``big``, ``agq`` and the reconstruction options every method has (``recon`` is on here), so
that each part's gain can be measured by turning it off.
"""
from dataclasses import dataclass

from ..calib.big import integrate_bimodal
from ..quant.logq import AGQ_TAUS, LogQuantizer
from .base import Method, register


@register
@dataclass
class PTQ4SAM(Method):
    recon: bool = True
    big: bool = True
    agq: bool = True
    name = "ptq4sam"
    metric = "mse"

    def prepare_model(self, model, run_calibration):
        return {"big": integrate_bimodal(model, run_calibration)} if self.big else {}

    def quantizers_for(self, info, s):
        out = self.plain(info, s, act="grid", wt="grid")
        if self.agq and info.role == "post_softmax" and s.a_bits is not None:
            out["a_quantizer"] = LogQuantizer(s.a_bits, tau=1.0, taus=AGQ_TAUS, strategy="grid")
        return out
