"""Freed memory kept for reuse: glibc's ``malloc`` tuned once, when the package is imported.

NumPy takes every array's memory from ``malloc``. glibc serves a block of 128 KiB or more by
a fresh ``mmap`` — or, after its dynamic threshold has risen, from the heap, whose free top
it returns to the system once it exceeds twice that threshold — so a computation that
allocates and frees arrays of a few MiB (every readable product of the curvature sweeps:
one fresh array per layer and product) pays a page fault per 4 KiB page, again and again.
torch's numbers do not move with these settings; ours did: one thread, the curvature
benchmark's CNN, CPU ms a call, default → tuned (``docs/performance.md``, "Freed memory
kept"): per-sample gradients 26.8 → 22.3, HVP 56.7 → 44.6, KFAC 27.8 → 20.5; the fused
training steps, which keep their buffers, do not change.

The tuning: blocks under 32 MiB (glibc's own ceiling for its dynamic threshold) always from
the heap, and up to 256 MiB of freed heap top kept rather than trimmed. The process's
resident size then stays near its high-water mark, as with torch's caching allocators.
Nothing is done when glibc's ``mallopt`` is absent (macOS, Windows, musl), when the user set
glibc's own ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (theirs stands), or
when ``MANUAL_BP_MALLOC=default`` asks for glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["MMAP_THRESHOLD", "OPT_OUT", "TRIM_THRESHOLD", "keep_freed_memory"]

#: ``mallopt`` parameters (glibc's ``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks smaller than this come from the heap (glibc's maximum dynamic threshold, 64-bit).
MMAP_THRESHOLD = 32 * 2**20
#: Freed memory at the heap's top up to this size is kept for reuse.
TRIM_THRESHOLD = 256 * 2**20
#: The environment variable and value that leave glibc's defaults alone.
OPT_OUT = ("MANUAL_BP_MALLOC", "default")
_GLIBC_OWN = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Set glibc's thresholds as the module docstring says; whether they were set."""
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT[0]) == OPT_OUT[1]:
        return False
    if any(name in os.environ for name in _GLIBC_OWN):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
