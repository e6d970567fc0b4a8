"""glibc malloc settings for CPU training (README: Training, "Performance").

A training step frees and re-allocates activations of the same sizes every step. With glibc's
defaults, blocks above the (adaptive) mmap threshold are unmapped on free and the top of the
heap is trimmed, so each step hands its memory back to the kernel and page-faults it in again.
Measured on the full-size SD1.5 benchmark (``benchmarks/training.py --malloc default``):
3.5 s per step against 2.0 s with fixed thresholds, mostly system time. Fixed thresholds keep
freed blocks in the heap, where the next step reuses them.
"""
from __future__ import annotations

import ctypes
import os

# mallopt() parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# The user's own allocator settings win over ours.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")

MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap and are reused after free
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: keep up to ~2 GiB free at the heap top


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Make glibc keep freed memory for reuse (fixed mmap and trim thresholds).

    Returns True when applied; False (and changes nothing) when the C library is not glibc or
    the environment already configures the allocator (``MALLOC_*_``, ``GLIBC_TUNABLES``, a
    preloaded allocator such as jemalloc). Process-wide: call it once, at program start.
    """
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, TypeError, AttributeError):
        return False  # not glibc (musl, macOS, Windows): nothing to tune
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
