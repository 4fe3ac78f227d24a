"""Process settings for serving camera frames: ``tune_for_frames`` applies them once per process.

Freed memory stays in the process, so that each frame's arrays reuse the last frame's pages. A camera frame makes a few arrays of about a megabyte (the decoded image, the resized margin and
probability maps, the mask). glibc gives blocks that large back to the kernel when they are freed, and the
next frame faults every page in again; on a virtual machine a fault is expensive: ``mask_from_logits`` on a
640x480 frame took 2.0 ms that way and 0.19 ms with the memory kept (docs/RESULTS.md, issue 4).

The entry points that serve frames (the CLI, the ROS 2 node, the bag player, the demo, the benchmarks) call
``tune_for_frames``; a program that embeds ``Engine`` may call it too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit


def _glibc(name: str, argtypes: list):
    """A glibc malloc function, or None off glibc (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


def keep_freed_memory(keep_mb: int = 256) -> bool:
    """Blocks under 32 MB come from the heap, and up to ``keep_mb`` of freed heap stays with the process.
    True when set; False (nothing changed) off glibc, e.g. on macOS or musl."""
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])
    if mallopt is None:
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and mallopt(M_TRIM_THRESHOLD, keep_mb << 20) == 1
    if not ok:
        log.debug("mallopt refused; freed memory goes back to the kernel as before")
    return ok


def release_freed_memory() -> bool:
    """Give the kernel back what the process keeps (``malloc_trim``), so that resident memory counts only
    live data: for measuring, e.g. the bench's memory column. False off glibc."""
    trim = _glibc("malloc_trim", [ctypes.c_size_t])
    if trim is None:
        return False
    trim(0)
    return True


def tune_for_frames() -> dict:
    """Freed memory kept (the module's docstring says why); returns what took effect."""
    return {"keep_freed_memory": keep_freed_memory()}
