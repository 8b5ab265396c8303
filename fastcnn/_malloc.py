"""Keep freed activation memory for reuse instead of handing it back to the OS (glibc).

A training step allocates each layer's output and gradient afresh, arrays of 1-16 MiB at
CIFAR sizes. glibc's malloc maps the largest of them on their own and returns them to the
kernel when freed, and trims the top of its heap whenever more than twice that size is
free, so the next step faults every page in again, zero-filled by the kernel and one
fault at a time for both threads: MobileNetCIFAR's step at batch 64 took about 6,900 page
faults and 25 ms of system time per step on the 2-core AMD EPYC (ResNet-20's 3,400 and
10-48 ms), and none after this tuning (2026-12-01; the step times, 155-175 vs 140-142 ms
and 142-144 vs 136-137 ms, are from a noisy machine).

So at import fastcnn sets glibc's ``M_MMAP_THRESHOLD`` to 32 MiB (its largest; bigger
arrays are still mapped on their own) and ``M_TRIM_THRESHOLD`` to 256 MiB: up to that
much freed memory stays in the process, to be reused by the next step, as PyTorch's GPU
caching allocator keeps its blocks. This is process-wide, as ``mallopt`` is. It is not
done where the user chose: ``FASTCNN_MALLOC_TUNING=0``, or any of glibc's own
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_TOP_PAD_`` set; nor
off glibc (macOS, Windows, musl), whose allocators differ.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit: DEFAULT_MMAP_THRESHOLD_MAX
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
OPT_OUT = "FASTCNN_MALLOC_TUNING"

tuning: str | None = None  # what was done, for show_config


def tune() -> None:
    """Set the two thresholds unless the user chose or the C library is not glibc."""
    global tuning
    if os.environ.get(OPT_OUT) == "0":
        tuning = f"glibc defaults ({OPT_OUT}=0)"
        return
    chosen = [name for name in USER_SETTINGS if name in os.environ]
    if chosen:
        tuning = f"glibc, as set in the environment ({', '.join(chosen)})"
        return
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        tuning = "the platform's allocator, untouched (not glibc)"
        return
    mallopt = ctypes.CDLL(None).mallopt
    if (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1
        or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1
    ):  # pragma: no cover - glibc accepts both values
        tuning = "glibc defaults (mallopt refused fastcnn's thresholds)"
        return
    tuning = (
        f"glibc, freed memory kept for reuse (M_MMAP_THRESHOLD {MMAP_THRESHOLD >> 20} MiB, "
        f"M_TRIM_THRESHOLD {TRIM_THRESHOLD >> 20} MiB; {OPT_OUT}=0 to keep glibc's defaults)"
    )
