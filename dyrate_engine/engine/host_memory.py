"""Keeping freed heap memory in the process (glibc), so a CPU prefill does not fault it back in.

A prefill allocates and frees tens of megabytes of activations per layer. By default glibc hands
large freed blocks back to the OS: blocks above its mmap threshold are unmapped, and the heap's
top is trimmed once more than the trim threshold is free. The next prefill then takes a page
fault for every 4 KiB it gets back: 6,000-13,000 faults per 609-token prompt of the cpu-vllm
preset, none with both thresholds raised to 1 GiB (python_bench/RESULTS.md). Page faults are dear
in a virtual machine. The price is that the process keeps its peak heap resident, as a server's
allocator (tcmalloc, jemalloc) does anyway.

The thresholds are process-wide, so the library never changes them by itself: ``dyrate serve``
calls :func:`keep_freed_memory`, and so can an application that embeds the engine on the CPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap, and up to this much free heap stays mapped.
DEFAULT_LIMIT = 1 << 30


def keep_freed_memory(limit_bytes: int = DEFAULT_LIMIT) -> bool:
    """Raise glibc's mmap and trim thresholds to ``limit_bytes`` (which also turns off their
    dynamic adjustment). Returns whether both took effect: False where the C library is not
    glibc (musl, macOS, Windows), which is then left as it was."""
    if not 0 < limit_bytes < 1 << 31:
        raise ValueError(f"limit_bytes must be in (0, 2 GiB), got {limit_bytes}")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, limit_bytes)) \
        and bool(mallopt(_M_TRIM_THRESHOLD, limit_bytes))
