"""The OpenMP wait policy fastcnn's runtime starts with.

GNU OpenMP's default makes idle threads spin for a while after every parallel region. On a
machine whose cores are busy with other work, a spinning or descheduled thread stalls the
next region's barrier, and the kernels ran 20-50x slower (measured here: a LeNet-5 step at
2 threads took 117 ms instead of 17 ms with passive waiting; see bench/README.md). fastcnn
runs many short regions between Python code, so it asks its runtime to sleep instead:
``OMP_WAIT_POLICY=PASSIVE``, set only while the runtime loads (libgomp reads it then) and
removed afterwards, so other libraries and child processes see the environment unchanged.
A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins. If an OpenMP runtime is
already loaded (PyTorch imported first), the kernels bind to it and it keeps its own policy.
"""

import contextlib
import os

USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
wait_policy = None  # what fastcnn's runtime was started with, for show_config


def _openmp_already_loaded():
    """Whether some OpenMP runtime is mapped into this process already (Linux only)."""
    try:
        with open("/proc/self/maps") as maps:
            return any(name in line for line in maps for name in ("libgomp", "libomp", "libiomp"))
    except OSError:
        return False


@contextlib.contextmanager
def passive_openmp_while_loading():
    """Load the OpenMP runtime (inside the block) with passive waiting unless the user chose."""
    global wait_policy
    if _openmp_already_loaded():
        wait_policy = "that of the OpenMP runtime loaded before fastcnn (e.g. by PyTorch)"
        yield
        return
    chosen = {name: os.environ[name] for name in USER_SETTINGS if name in os.environ}
    if chosen:
        wait_policy = ", ".join(f"{k}={v}" for k, v in chosen.items()) + " (from environment)"
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        del os.environ["OMP_WAIT_POLICY"]
    wait_policy = "PASSIVE, requested at load (fastcnn's default; OMP_WAIT_POLICY=active spins)"
