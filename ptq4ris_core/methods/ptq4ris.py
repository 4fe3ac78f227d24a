"""PTQ4RIS: DRQ (dual-region) for the vision encoder's post-Softmax / post-GELU activations,
RORQ (outlier-retained) for the text encoder's Linear inputs, plain uniform for fusion and decoder.

Options for the ablation: ``drq``: True (both forms), False (uniform instead), ``softmax`` or ``gelu``
(one form only); ``rorq=None | "element" | "channel"``; ``text_metric`` (the text encoder's search metric:
METHODS.md's ``mse2.4``, or ``hessian`` as PTQ4ViT); ``fusion_attention``: give the fusion's pixel-word
attention the vision encoder's attention quantizers (per-head Q·Kᵀ, DRQ post-Softmax) instead of the
paper's plain uniform (at W4A4 that attention is the most sensitive part of our model: RESULTS.md);
``rorq_words``: RORQ also where the fusion reads the text encoder's output (the word projections
take BERT's outlier channels too); ``split_groups``: RORQ's channel groups without the fold (one
scale per group, the GEMM split by group when deployed) on the fusion's and decoder's other
Linear/Conv inputs, which concatenate or multiply features of very different ranges; ``split_groups=all``:
on the vision encoder's Linear inputs too, except those DRQ quantizes (post-LN channels vary in range);
``bias_correction``: each quantized layer's mean output error per channel goes into its bias (image
layers only: token sequences are mostly padding); ``agq``: PTQ4SAM's adaptive-granularity quantization on
every post-Softmax (vision, fusion, text): a log quantizer of base 2^(-1/τ) whose τ ∈ {1, 2, 4} and scale
are searched per attention on the error of Â·V against A·V (the attention matmul's own output). The
engine runs the attention core float, so AGQ changes the simulation only; ``big``: PTQ4SAM's bimodal
integration before calibration (``calib/big.py``): where an attention's post-Key activations are bimodal,
the sign of each channel's mean is folded into its query and key weights (the float output is unchanged,
and the engine simply has other weights).
"""
from dataclasses import dataclass

from ..calib.big import integrate_bimodal
from ..calib.search import correct_bias
from ..quant.quantizers import (ChannelGroupQuantizer, DualRegionGeluQuantizer, DualRegionSoftmaxQuantizer,
                                ElementGroupQuantizer)
from ..quant.logq import AGQ_TAUS, LogQuantizer
from ..quant.rorq import channel_group_params
from .base import Method, register, reparameterize_channels, uniform, weight_q

RORQ_VARIANTS = (None, "element", "channel")
DRQ_VARIANTS = (True, False, "softmax", "gelu")
SPLIT_GROUP_VARIANTS = (False, True, "all")  # True: fusion and decoder; "all": the vision encoder too
TEXT_METRICS = ("mse2.4", "hessian", "mse", "cosine")


@register
@dataclass
class PTQ4RIS(Method):
    drq: bool | str = True
    rorq: str | None = "channel"
    text_metric: str = "mse2.4"
    fusion_attention: bool = False
    rorq_words: bool = False
    split_groups: bool | str = False
    bias_correction: bool = False
    agq: bool = False
    big: bool = False
    name = "ptq4ris"
    metric = "hessian"
    rounds = 3

    def __post_init__(self):
        super().__post_init__()
        if self.drq not in DRQ_VARIANTS:
            raise ValueError(f"drq must be one of {DRQ_VARIANTS}, got {self.drq!r}")
        if self.rorq not in RORQ_VARIANTS:
            raise ValueError(f"rorq must be one of {RORQ_VARIANTS}, got {self.rorq!r}")
        if self.split_groups not in SPLIT_GROUP_VARIANTS:
            raise ValueError(f"split_groups must be one of {SPLIT_GROUP_VARIANTS}, got {self.split_groups!r}")
        if self.text_metric not in TEXT_METRICS:
            raise ValueError(f"text_metric must be one of {TEXT_METRICS}, got {self.text_metric!r}")

    def prepare_model(self, model, run_calibration):
        return {"big": integrate_bimodal(model, run_calibration)} if self.big else {}

    def quantizers_for(self, info, s):
        out = self._quantizers_for(info, s)
        if self.agq and info.role == "post_softmax" and s.a_bits is not None:
            out["a_quantizer"] = LogQuantizer(s.a_bits, tau=1.0, taus=AGQ_TAUS, strategy="grid")
        return out

    def _quantizers_for(self, info, s):
        if info.domain == "text" or self._reads_words(info):
            return self._text(info, s)
        out = self.plain(info, s, act="grid", wt="grid")
        if self._split(info) and s.a_bits is not None:
            out["input_quantizer"] = ChannelGroupQuantizer(s.a_bits, 1 if info.kind == "conv" else -1, strategy="grid")
        attention = info.kind == "matmul" and info.domain == "fusion" and self.fusion_attention
        if s.a_bits is None or not (info.domain == "vision" or attention):
            return out  # fusion and decoder: plain uniform (quantization-friendly)
        if info.kind == "matmul" and info.role == "qk":  # both operands of Q·Kᵀ per head
            out = {"a_quantizer": uniform(s.a_bits, "grid", axis=1), "b_quantizer": uniform(s.a_bits, "grid", axis=1)}
        if self.drq in (True, "softmax") and info.role == "post_softmax":
            out["a_quantizer"] = DualRegionSoftmaxQuantizer(s.a_bits, strategy="grid")
        elif self.drq in (True, "gelu") and info.role == "post_gelu" and info.kind == "linear":
            out["input_quantizer"] = DualRegionGeluQuantizer(s.a_bits, strategy="grid")
        return out

    def _split(self, info):
        """Does this layer's input get channel groups (split GEMM)? Never where DRQ quantizes it."""
        if not self.split_groups or info.kind == "matmul":
            return False
        if info.domain in ("fusion", "decoder"):
            return True
        drq_gelu = self.drq in (True, "gelu") and info.role == "post_gelu"
        return self.split_groups == "all" and info.domain == "vision" and not drq_gelu

    @staticmethod
    def _on_tokens(info):
        """Layers that see token sequences: the text encoder, and the fusion's projections of its output."""
        return info.domain == "text" or (info.domain == "fusion" and info.kind == "linear" and info.role == "post_ln")

    def _reads_words(self, info):
        return self.rorq_words and info.domain == "fusion" and self._on_tokens(info)

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
                out["input_quantizer"] = ElementGroupQuantizer(s.a_bits, strategy="rule")
            elif self.rorq == "channel":
                out["input_quantizer"] = uniform(s.a_bits, "fixed")
            else:
                out["input_quantizer"] = uniform(s.a_bits, "grid")
        return out

    def prepare(self, info, inputs, s):
        if (info.domain == "text" or self._reads_words(info)) and info.kind == "linear" and self.rorq == "channel" and s.a_bits is not None:
            scale_c, zp_c, _groups = channel_group_params(inputs[0], s.a_bits)
            d, z = reparameterize_channels(info.module, inputs[0], scale_c, zp_c, target="bulk")
            info.module.input_quantizer.set_params(d, z)

    def finish(self, info, inputs, fp_out):
        # Not on token sequences: most of their positions are padding, whose error is not the words' error
        # (measured: with the text encoder corrected too, W4A8 fell to 20.8 mIoU).
        if self.bias_correction and not self._on_tokens(info):
            correct_bias(info.module, inputs, fp_out)

    def metric_for(self, info):
        return self.text_metric if info.domain == "text" else self.metric  # mse2.4: PD-Quant/QDrop's p = 2.4
