"""Every quantizer type, by name. Each type lives in its own file with its handler (``base.py`` says
how they fit); the math is in ``functional.py`` and the statistics in ``observers.py``."""
from __future__ import annotations

from .base import Handler, Quantizer
from .drq import DualRegionGeluQuantizer, DualRegionSoftmaxQuantizer
from .logq import LogQuantizer
from .rorq import ChannelGroupQuantizer, ElementGroupQuantizer
from .uniform import UniformQuantizer

QUANTIZERS = {q.kind: q for q in (UniformQuantizer, DualRegionSoftmaxQuantizer, DualRegionGeluQuantizer,
                                  LogQuantizer, ElementGroupQuantizer, ChannelGroupQuantizer)}

__all__ = ["Handler", "Quantizer", "QUANTIZERS", *(q.__name__ for q in QUANTIZERS.values())]
