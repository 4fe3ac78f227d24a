"""PTQ4ViT: twin-uniform quantizers for post-Softmax and post-GELU, Hessian-guided search elsewhere.

Single-modality PTQ: the text encoder gets the same treatment as the vision encoder.
"""
from ..quant.quantizers import DualRegionGeluQuantizer, DualRegionSoftmaxQuantizer
from .base import Method, register


@register
class PTQ4ViT(Method):
    name = "ptq4vit"
    metric = "hessian"
    rounds = 3

    def quantizers_for(self, info, s):
        out = self.plain(info, s, act="grid", wt="grid")
        if s.a_bits is None:
            return out
        if info.role == "post_softmax":
            out["a_quantizer"] = DualRegionSoftmaxQuantizer(s.a_bits, strategy="grid")
        elif info.role == "post_gelu" and info.kind == "linear":
            out["input_quantizer"] = DualRegionGeluQuantizer(s.a_bits, strategy="grid")
        return out
