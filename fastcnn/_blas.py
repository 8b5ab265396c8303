"""The BLAS behind the kernels' GEMM calls (scipy.linalg.cython_blas), kept to one thread.

Kernels call GEMM from inside their own OpenMP threads. If that BLAS also ran its own thread
pool, the two pools would spin against each other (measured 4-7x slowdowns), so while a
kernel runs, the library behind scipy.linalg.cython_blas is held at one thread. Other BLAS
libraries (NumPy's own, say) are left alone.
"""

import contextlib
import os
import threading

_lock = threading.Lock()
_active = 0  # kernels running now, across Python threads
_saved = []  # (controller, threads it had) to restore when the last kernel ends
_controllers = None


def kernel_blas_controllers():
    """threadpoolctl controllers of the BLAS that scipy.linalg.cython_blas calls into."""
    global _controllers
    if _controllers is None:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
        from threadpoolctl import ThreadpoolController

        blas = ThreadpoolController().select(user_api="blas").lib_controllers
        scipy_dir = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
        own = [c for c in blas if "scipy" in os.path.dirname(c.filepath) and
               os.path.abspath(c.filepath).startswith(scipy_dir)]
        # A BLAS shared by NumPy and SciPy (conda, a system OpenBLAS): hold every one.
        _controllers = own or blas
    return _controllers


def blas_info():
    """What show_config reports about the kernels' BLAS."""
    return [c.info() for c in kernel_blas_controllers()]


@contextlib.contextmanager
def single_threaded_blas():
    """Hold the kernels' BLAS at one thread for the duration of the block."""
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = [(c, c.num_threads) for c in kernel_blas_controllers()]
            for controller, count in _saved:
                if count != 1:
                    controller.set_num_threads(1)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                for controller, count in _saved:
                    if count != 1:
                        controller.set_num_threads(count)
                _saved = []
