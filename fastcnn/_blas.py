"""The BLAS behind the kernels' GEMM calls (scipy.linalg.cython_blas), kept to one thread.

Kernels call GEMM from inside their own OpenMP threads. If that BLAS also ran its own thread
pool, the two pools would spin against each other (measured 4-7x slowdowns), so while a
kernel runs, the library behind scipy.linalg.cython_blas is held at one thread. Other BLAS
libraries (NumPy's own, say) are left alone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_active = 0  # kernels running now, across Python threads
# Controllers are threadpoolctl's LibController objects: Any, as threadpoolctl has no types.
# (a controller's thread-count setter, the count it had) to restore when the last kernel ends
_saved: list[tuple[Callable[[int], object], int]] = []
_controllers: list[Any] | None = None


def kernel_blas_controllers() -> list[Any]:
    """threadpoolctl controllers of the BLAS that scipy.linalg.cython_blas calls into."""
    global _controllers
    if _controllers is None:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
        from threadpoolctl import ThreadpoolController

        blas = ThreadpoolController().select(user_api="blas").lib_controllers
        scipy_dir = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
        own = [
            c
            for c in blas
            if "scipy" in os.path.dirname(c.filepath)
            and os.path.abspath(c.filepath).startswith(scipy_dir)
        ]
        # A BLAS shared by NumPy and SciPy (conda, a system OpenBLAS): hold every one.
        _controllers = own or blas
    return _controllers


# OpenBLAS's process-wide setter and getter under each name a build may export them by.
def _openblas_names(what: str) -> tuple[str, ...]:
    return tuple(
        f"{prefix}openblas_{what}_num_threads{suffix}"
        for prefix in ("", "scipy_")
        for suffix in ("", "64_", "_64")
    )


def _openblas_function(controller: Any, what: str) -> Callable[..., Any] | None:
    """OpenBLAS's own ``what`` ("set", "get") of its pthreads pool's size, or None (not
    an OpenBLAS with its own pool)."""
    if (
        controller.internal_api == "openblas"
        and getattr(controller, "threading_layer", None) != "openmp"
    ):
        for name in _openblas_names(what):
            function = getattr(controller.dynlib, name, None)
            if function is not None:
                return function
    return None


def _thread_setter(controller: Any) -> Callable[[int], object]:
    """A function setting the library's thread count, whichever Python thread calls.

    Not threadpoolctl's set_num_threads for an OpenBLAS with its own (pthreads) thread
    pool: threadpoolctl >= 3.8 lets only one Python thread change that process-wide count
    (the first to call it, the main thread in practice, for as long as it lives) and from
    every other thread silently does nothing. Kernels run from a second Python thread then
    called a 2-thread BLAS, whose sgemm splits a product between its threads and rounds
    differently (1 ulp on an AVX2 CPU): other bits than the same call on the main thread.
    The counter in single_threaded_blas already coordinates the Python threads.
    """
    return _openblas_function(controller, "set") or controller.set_num_threads


def _thread_getter(controller: Any) -> Callable[[], int]:
    """A function returning the library's thread count: OpenBLAS's own where it has one
    (threadpoolctl's num_threads property took 1 us, a third of a hold)."""
    return _openblas_function(controller, "get") or (lambda: controller.num_threads)


# (getter, setter) of each controller's thread count, looked up once (a ctypes lookup per
# kernel call cost 40 us of a LeNet-5 step)
_count_functions: list[tuple[Callable[[], int], Callable[[int], object]]] | None = None


def _thread_count_functions() -> list[tuple[Callable[[], int], Callable[[int], object]]]:
    global _count_functions
    if _count_functions is None:
        _count_functions = [
            (_thread_getter(c), _thread_setter(c)) for c in kernel_blas_controllers()
        ]
    return _count_functions


def blas_info() -> list[dict[str, Any]]:
    """What show_config reports about the kernels' BLAS."""
    return [c.info() for c in kernel_blas_controllers()]


class _SingleThreadedBlas:
    """The block of single_threaded_blas (a class rather than a generator: it is entered
    once per kernel call, and contextlib's wrapper cost more than the bookkeeping)."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _active, _saved
        with _lock:
            if _active == 0:
                _saved = [(setter, getter()) for getter, setter in _thread_count_functions()]
                for setter, count in _saved:
                    if count != 1:
                        setter(1)
            _active += 1

    def __exit__(self, *exc_info: object) -> None:
        global _active, _saved
        with _lock:
            _active -= 1
            if _active == 0:
                for setter, count in _saved:
                    if count != 1:
                        setter(count)
                _saved = []


_HOLD = _SingleThreadedBlas()


def single_threaded_blas() -> _SingleThreadedBlas:
    """Hold the kernels' BLAS at one thread for the duration of the ``with`` block."""
    return _HOLD
