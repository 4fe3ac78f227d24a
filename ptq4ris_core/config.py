"""Quantization settings: one global setting plus local overrides keyed by module-name patterns.

Patterns are shell-style (``fnmatch``) over the module's dotted name; the last matching
override wins. This is how a method's per-layer choices and mixed precision are expressed.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field, replace

from .errors import PTQ4RISError


class ConfigError(PTQ4RISError, ValueError):
    """A bit string, method or override that cannot be used."""


@dataclass(frozen=True)
class LayerSetting:
    w_bits: int | None = 8  # None: weights stay float
    a_bits: int | None = 8  # None: inputs stay float

    def to_dict(self):
        return asdict(self)


@dataclass
class QuantConfig:
    default: LayerSetting = field(default_factory=LayerSetting)
    overrides: list[tuple[str, dict]] = field(default_factory=list)

    def for_module(self, name: str) -> LayerSetting:
        s = self.default
        for pattern, changes in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                s = replace(s, **changes)
        return s

    def to_dict(self):
        return {"default": self.default.to_dict(), "overrides": [[p, c] for p, c in self.overrides]}

    @classmethod
    def from_dict(cls, d):
        return cls(LayerSetting(**d["default"]), [(p, dict(c)) for p, c in d.get("overrides", [])])


BITS_RE = re.compile(r"^W(\d+)A(\d+)$", re.IGNORECASE)


def parse_bits(text: str) -> tuple[int, int]:
    """'W4A8' → (4, 8); bits from 2 to 8."""
    m = BITS_RE.match(text.strip())
    if not m:
        raise ConfigError(f"bit setting {text!r} is not of the form WxAy (e.g. W8A8, W4A8, W6A6)")
    w, a = int(m.group(1)), int(m.group(2))
    for name, b in (("weight", w), ("activation", a)):
        if not 2 <= b <= 8:
            raise ConfigError(f"{name} bits must be between 2 and 8, got {b} in {text!r}")
    return w, a
