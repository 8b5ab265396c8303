"""Running the compiled kernels: what functional and the layers share once arguments are
checked (fastcnn/_validation.py) and shapes known. Nothing here validates.

``run_kernel`` calls a kernel on fastcnn's thread count with BLAS on one thread (the
kernels parallelise over images themselves); ``workspace`` hands out the per-thread
scratch the kernels write into.
"""

import threading

import numpy as np

from fastcnn._blas import single_threaded_blas
from fastcnn._threads import get_num_threads

_buffers = threading.local()


def workspace(rows, columns, dtype):
    """A (rows, columns) scratch array, kept per Python thread and grown as needed.
    Callers use it as ``_ops.workspace`` so a test can swap in a poisoned one.

    The kernels' per-thread im2col buffers: reusing them avoids a page-faulting allocation
    on every call. Per Python thread, so two Python threads can run kernels at once.
    """
    key = np.dtype(dtype).char
    cached = getattr(_buffers, key, None)
    size = rows * columns
    if cached is None or cached.size < size:
        cached = np.empty(max(size, 1), dtype=dtype)
        setattr(_buffers, key, cached)
    return cached[:size].reshape(rows, columns)


def run_kernel(kernel, *args, n_threads=None):
    """Call a kernel with the thread count (default: the current one), its BLAS on one thread."""
    if n_threads is None:
        n_threads = get_num_threads()
    with single_threaded_blas():
        kernel(*args, n_threads)
