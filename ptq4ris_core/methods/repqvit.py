"""RepQ-ViT: per-channel post-LayerNorm scales reparameterized to one per-tensor scale (exact),
log√2 quantization of post-Softmax values, L2-scored search elsewhere.

Option ``clip`` (LRP-QViT's clipped channel-wise quantization): the reparameterization multiplies the next
layer's weight columns by r_c = Δ_c / Δ̃, so a few channels with extreme ranges make a few huge weight
columns, and the per-output-channel weight scale then serves those columns rather than the rest. With
``clip=true`` a channel whose range lies above the upper Tukey fence of the channel ranges, taken in log
space (exp(Q3 + 1.5·IQR) of log ranges), has its range shrunk to that fence (both bounds scaled by
fence / range; ``base.clip_channel_ranges``): its own outliers saturate, and no weight column grows past the
fence. LRP-QViT does not publish its rule; this is ours.
"""
from dataclasses import dataclass

from ..quant.quantizers import LogQuantizer
from .base import Method, per_channel_params, register, reparameterize_channels, uniform


@register
@dataclass
class RepQViT(Method):
    clip: bool = False
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
            scale_c, zp_c = per_channel_params(inputs[0], s.a_bits, clip=bool(self.clip))
            d, z = reparameterize_channels(info.module, inputs[0], scale_c, zp_c, target="mean")
            info.module.input_quantizer.set_params(d, z)
