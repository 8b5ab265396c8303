"""How many threads the kernels use: set_num_threads, get_num_threads, threads(n).

The count is passed to every parallel region (``num_threads=``); nothing here calls
``omp_set_num_threads``, which would also change the threads of any other library sharing
the OpenMP runtime (PyTorch does).
"""

import contextlib
import numbers
import os
import threading

from fastcnn._openmp import OPENMP_ENABLED, openmp_max_threads

_lock = threading.Lock()
_chosen = None  # set by set_num_threads(); None means "the default"


def _cpus_available():
    """CPUs this process may run on (respects taskset/cgroup affinity where the OS says)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_num_threads():
    """scikit-learn's rule: OpenMP's max threads (which honours OMP_NUM_THREADS and
    threadpoolctl limits), capped by the CPUs available; 1 for a serial build."""
    if not OPENMP_ENABLED:
        return 1
    return max(1, min(openmp_max_threads(), _cpus_available()))


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"number of threads must be an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    return int(n)


def set_num_threads(n):
    """Use ``n`` threads in every fastcnn kernel from now on (all Python threads)."""
    global _chosen
    n = _check_count(n)
    with _lock:
        _chosen = n


def get_num_threads():
    """The number of threads the kernels will use."""
    chosen = _chosen
    return chosen if chosen is not None else default_num_threads()


@contextlib.contextmanager
def threads(n):
    """``with fastcnn.threads(2): ...`` runs the block with ``n`` kernel threads."""
    global _chosen
    n = _check_count(n)
    with _lock:
        previous, _chosen = _chosen, n
    try:
        yield
    finally:
        with _lock:
            _chosen = previous


def _one_thread_after_fork():
    # GNU OpenMP's thread pool does not survive fork(): a parallel region with more than one
    # thread in the child hangs. A child starts on one thread; it may call set_num_threads.
    global _chosen, _lock
    _lock = threading.Lock()
    _chosen = 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)
