"""How many threads the kernels use: set_num_threads, get_num_threads, threads(n).

The count is passed to every parallel region (``num_threads=``); nothing here calls
``omp_set_num_threads``, which would also change the threads of any other library sharing
the OpenMP runtime (PyTorch does).

Precedence: a ``with threads(n):`` block (for the Python thread, or asyncio task, that
entered it), else the process-wide ``set_num_threads(n)``, else the default. In a process
made by ``fork()`` the count is always 1.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

from fastcnn._openmp import OPENMP_ENABLED, openmp_max_threads
from fastcnn._validation import integer

_chosen: int | None = None  # set by set_num_threads(); None means "the default"
_block: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "fastcnn_threads_block", default=None
)  # threads(n) blocks
_forked_child = False


def _cpus_available() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity where the OS says)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_num_threads() -> int:
    """scikit-learn's rule: OpenMP's max threads (which honours OMP_NUM_THREADS and
    threadpoolctl limits), capped by the CPUs available; 1 for a serial build."""
    if not OPENMP_ENABLED:
        return 1
    return max(1, min(openmp_max_threads(), _cpus_available()))


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads in every fastcnn kernel from now on, in every Python thread.

    ``None`` goes back to the default (OpenMP's maximum, which follows ``OMP_NUM_THREADS``
    and threadpoolctl limits, capped at the CPUs available).
    """
    global _chosen
    _chosen = None if n is None else integer(n, "number of threads", "set_num_threads", 1)


def get_num_threads() -> int:
    """The number of threads the kernels will use now, in this Python thread."""
    if _forked_child:
        return 1
    block = _block.get()
    if block is not None:
        return block
    chosen = _chosen
    return chosen if chosen is not None else default_num_threads()


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """``with fastcnn.threads(2): ...`` runs the block's kernels on ``n`` threads.

    The block affects only the Python thread (or asyncio task) that enters it, so blocks in
    different threads never undo each other; it overrides ``set_num_threads`` meanwhile.
    """
    token = _block.set(integer(n, "number of threads", "threads", minimum=1))
    try:
        yield
    finally:
        _block.reset(token)


def _one_thread_after_fork():
    # GNU OpenMP's thread pool does not survive fork(): a parallel region with more than one
    # thread in the child hangs. So a forked child runs every kernel on one thread.
    global _forked_child
    _forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)
