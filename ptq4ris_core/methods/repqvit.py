"""RepQ-ViT: per-channel post-LayerNorm scales reparameterized to one per-tensor scale (exact),
log√2 quantization of post-Softmax values, L2-scored search elsewhere.
"""
from ..quant.quantizers import LogQuantizer
from .base import Method, per_channel_params, register, reparameterize_channels, uniform


@register
class RepQViT(Method):
    name = "repqvit"
    metric = "mse"
    rounds = 1

    def quantizers_for(self, info, s):
        out = self.plain(info, s, act="grid", wt="grid")
        if s.a_bits is None:
            return out
        if info.role == "post_softmax":
            out["a_quantizer"] = LogQuantizer(s.a_bits, tau=2.0, strategy="grid")
        elif info.role == "post_ln" and info.kind == "linear":
            out["input_quantizer"] = uniform(s.a_bits, "fixed")
        return out

    def prepare(self, info, inputs, s):
        if s.a_bits is not None and info.role == "post_ln" and info.kind == "linear":
            scale_c, zp_c = per_channel_params(inputs[0], s.a_bits)
            d, z = reparameterize_channels(info.module, inputs[0], scale_c, zp_c, target="mean")
            info.module.input_quantizer.set_params(d, z)
