"""What this CPU's int8 kernels do with one u8 x s8 pair, and the export targets that follow from it.

x86 int8 GEMMs without a VNNI-class instruction (AVX2, AVX-512 without VNNI) multiply pairs of u8
activations and s8 weights and add each pair into a *saturating* int16 (VPMADDUBSW): 255·(|w₁|+|w₂|) above
32767 is clipped, silently. With AVX512-VNNI, AVX-VNNI or AMX the products go straight into int32; ARM's
int8 kernels (dot product, or widening multiplies) and GPUs do not saturate this way. So an engine whose
weights use the full 8-bit range is only right on some CPUs; weights of at most 7 bits (|w| ≤ 64) are right
on all of them (README, "Every CPU"; docs/RESULTS.md, hardware table).

The features come from NumPy's CPU feature table where it has them (AVX512-VNNI, ARM's dot product); it
has no entry for AVX-VNNI or AMX, so those two are read from the kernel's flags (/proc/cpuinfo).
No torch here: the runtime imports this.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

# An export target: what the integer weights may hold.
TARGETS = ("portable", "vnni", "auto")
PAIR_SAFE_WEIGHT_BITS = 7  # symmetric codes within ±63: 255·(63+63) = 32130 ≤ 32767
INT16_MAX = 32767
U8_MAX = 255

X86 = ("x86_64", "amd64", "i386", "i686", "x86")
ARM = ("aarch64", "arm64", "armv8l", "armv7l")


@dataclass(frozen=True)
class CpuInt8:
    """The int8 dot-product features of a CPU and what they mean for a u8 x s8 pair."""
    arch: str
    features: tuple[str, ...]  # of AVX512_VNNI, AVX_VNNI, AMX_INT8, ASIMDDP found
    readable: bool  # False: the features could not be read (then saturation must be assumed on x86)
    name: str = ""

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in X86

    @property
    def saturates(self) -> bool:
        """Whether a full 8-bit weight pair can be clipped in int16 on this CPU (assumed when unreadable)."""
        if not self.is_x86:
            return False
        return not self.readable or not ({"AVX512_VNNI", "AVX_VNNI", "AMX_INT8"} & set(self.features))

    def describe(self) -> str:
        """One line for the user: the CPU, its int8 features, and whether 8-bit weights are safe here."""
        what = ", ".join(self.features) if self.features else "no int8 dot-product instructions"
        if not self.readable:
            what = "int8 features unreadable"
        verdict = ("u8 x s8 pairs saturate int16: only portable engines are right here" if self.saturates
                   else "no int16 saturation: portable and vnni engines are both right here")
        name = f"{self.name} " if self.name else ""
        return f"{name}({self.arch}): {what}; {verdict}"


def _cpuinfo() -> tuple[set[str], str]:
    """The kernel's CPU flags and model name (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set(), ""
    flags, name = set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model") and not name:
            name = value.strip()
    return flags, name


def _numpy_features() -> dict | None:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__  # NumPy 1.x
        except ImportError:
            return None
    return dict(__cpu_features__)


@functools.lru_cache(maxsize=1)
def cpu_int8() -> CpuInt8:
    """This machine's int8 features, read once."""
    arch = platform.machine() or "unknown"
    np_features = _numpy_features()
    flags, name = _cpuinfo()
    found = []
    if np_features is not None and np_features.get("AVX512VNNI"):
        found.append("AVX512_VNNI")
    if "avx_vnni" in flags:
        found.append("AVX_VNNI")
    if "amx_int8" in flags:
        found.append("AMX_INT8")
    if (np_features or {}).get("ASIMDDP") or "asimddp" in flags:
        found.append("ASIMDDP")
    readable = np_features is not None or bool(flags)
    return CpuInt8(arch, tuple(found), readable, name)


def resolve_target(target: str, cpu: CpuInt8 | None = None) -> str:
    """``auto`` → the target that is right and fastest on ``cpu`` (this machine by default)."""
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}; choose one of {', '.join(TARGETS)}")
    if target != "auto":
        return target
    return "portable" if (cpu or cpu_int8()).saturates else "vnni"


def max_pair_sum(codes, axis: int) -> int:
    """The largest |w₁|+|w₂| of any two integer weights of one output channel (``axis`` indexes the output
    channels): a bound for every order in which a kernel may pair a channel's inputs."""
    import numpy as np
    a = np.abs(np.moveaxis(np.asarray(codes, dtype=np.int32), axis, 0).reshape(np.shape(codes)[axis], -1))
    if a.shape[1] < 2:
        return int(a.max(initial=0))
    top2 = np.partition(a, a.shape[1] - 2, axis=1)[:, -2:]
    return int(top2.sum(1).max(initial=0))


def pair_safe(pair_sum: int) -> bool:
    """Whether a pair of weights summing to ``pair_sum`` in magnitude fits a saturating int16 with any u8 input."""
    return U8_MAX * pair_sum <= INT16_MAX
