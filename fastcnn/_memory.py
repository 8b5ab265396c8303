"""Keep freed NumPy array memory for reuse instead of faulting it in afresh each step.

A training step allocates each layer's output and gradient afresh, arrays of 1-16 MiB at
CIFAR sizes, and frees them by the step's end. Under glibc's default thresholds the largest
are mapped on their own and unmapped when freed, and the heap top is trimmed, so the next
step faults every page in again, zero-filled by the kernel one page at a time:
MobileNetCIFAR's step at batch 64 took about 6,900 page faults and 25 ms of system time on
the 2-core AMD EPYC, ResNet-20's 3,400 (2026-12-01).

So at import fastcnn makes csrc/_array_cache.pyx NumPy's data allocator in the importing
context (NumPy's ``PyDataMem_SetHandler``): freed blocks of 64 KiB and more are kept, up to
256 MiB with the oldest given back first, and reused for the next array of about their
size, as PyTorch's GPU caching allocator keeps its blocks. It changes NumPy's allocator
only: other libraries in the process, PyTorch among them, keep their own malloc settings
(an earlier glibc ``mallopt`` here tuned PyTorch's too). Arrays made in other threads, or
in a context copied before the import, use NumPy's default, as any handler's scope is.
``FASTCNN_ARRAY_CACHE=0`` leaves NumPy's default alone.
"""

from __future__ import annotations

import os

from fastcnn import _array_cache

OPT_OUT = "FASTCNN_ARRAY_CACHE"

state: str | None = None  # what was done, for show_config


def install() -> None:
    """Make the array cache NumPy's allocator here, unless the user opted out."""
    global state
    if os.environ.get(OPT_OUT) == "0":
        state = f"NumPy's default allocator ({OPT_OUT}=0)"
        return
    _array_cache.install()
    state = (
        f"freed NumPy arrays of {_array_cache.min_bytes >> 10} KiB+ kept for reuse, "
        f"up to {_array_cache.max_bytes >> 20} MiB ({OPT_OUT}=0: NumPy's default allocator)"
    )
