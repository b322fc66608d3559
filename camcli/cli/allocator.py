"""Keep freed tensor buffers in the process instead of handing them back to the kernel.

glibc's malloc serves blocks above its mmap threshold (at most 32 MB) with a fresh ``mmap``
and returns them with ``munmap`` on free. A batch's activations (ResNet-50 at batch 16: 51 MB
per stage) are such blocks, so every batch page-faults its buffers in again and the kernel
zeroes them: 20 s of system time in a 110 s ResNet-50 Score-CAM run on 2 cores. Raising the
mmap and trim thresholds lets malloc reuse the same memory batch after batch. Peak memory is
unchanged (a peak is a peak); memory is held until the process ends, which for a command-line
run is when it would be given back anyway.

Only the command line calls :func:`keep_freed_memory`: importing camcli as a library never
changes the host's allocator. It does nothing off glibc, and nothing when the user has tuned
malloc (``MALLOC_*_`` variables) or preloaded another allocator (jemalloc, tcmalloc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # glibc's own, dynamic threshold stops at 32 MB; a threshold set here may be larger


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; True when they were changed."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get("LD_PRELOAD") or any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):
        return False
