"""The C allocator's thresholds for a serving process (glibc only).

A round moves buffers of a few hundred KB to a few MB: upload bodies and their copies,
the fold's float64 sums and the new version's temporaries, the encoded weights. glibc
serves each of those above its mmap threshold (128 KB at start, raised only as far as
the largest freed block) with a fresh ``mmap`` and hands freed heap memory above its
trim threshold straight back to the kernel, so the next round's buffers fault their
pages in (zeroed by the kernel) again: ~1 ms of a small round's aggregation and ~6 ms
of CPU per 10-participant round over HTTP (bench/RESULTS.md, round-job-core).

:func:`keep_round_buffers` raises both thresholds so those buffers are reused from the
heap: blocks below ``MMAP_THRESHOLD_BYTES`` come from the heap, and up to
``TRIM_THRESHOLD_BYTES`` of free memory at its top stays in the process. Larger
buffers (a 10^7-parameter model's float64 sums: 80 MB) are still mapped and unmapped
each time. Settings made through ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
in the environment are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "keep_round_buffers"]

log = logging.getLogger("fedrec.allocator")

MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 16 * 1024 * 1024
# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_round_buffers() -> bool:
    """Set the thresholds above (once the process is serving: ``fedrec serve`` and each of
    its workers); False where nothing was set (not glibc, or set by the environment)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt answers 1 on success; setting the mmap threshold also stops glibc's own
    # adjustment of both
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not done:
        log.warning("could not set the allocator's thresholds (mallopt refused)")
    return done
