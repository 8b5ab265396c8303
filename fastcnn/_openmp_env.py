"""How long fastcnn's OpenMP threads spin before they sleep.

GNU OpenMP's default makes idle threads spin for a long while (300,000 rounds) after every
parallel region. On a machine whose cores are busy with other work, a spinning or
descheduled thread stalls the next region's barrier: a LeNet-5 step at 2 threads took 117 ms
instead of 17 ms (passive waiting) while other jobs ran here. Never spinning
(``OMP_WAIT_POLICY=PASSIVE``) costs a wake-up per region instead, which on an idle virtual
machine left 2 threads no faster than 1. A short spin keeps both cases good (measured on the
2-core CI machine: idle, 5.7 ms vs 5.9 ms fully active; loaded, far below the default), so
fastcnn starts its runtime with ``GOMP_SPINCOUNT=30000``: about as long as the gap between
two kernels of a training step. The variable is set only while the runtime loads (libgomp
reads it then) and removed afterwards, so other libraries and child processes see the
environment unchanged. A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins; if an
OpenMP runtime is already loaded (PyTorch imported first), the kernels bind to it and it
keeps its own setting.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SPIN_COUNT = "30000"
wait_policy: str | None = None  # what fastcnn's runtime was started with, for show_config


def _openmp_already_loaded() -> bool:
    """Whether some OpenMP runtime is mapped into this process already (Linux only)."""
    try:
        with open("/proc/self/maps") as maps:
            return any(name in line for line in maps for name in ("libgomp", "libomp", "libiomp"))
    except OSError:
        return False


@contextlib.contextmanager
def short_spin_while_loading() -> Iterator[None]:
    """Load the OpenMP runtime (inside the block) with a short spin unless the user chose."""
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
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        yield
    finally:
        del os.environ["GOMP_SPINCOUNT"]
    wait_policy = f"GOMP_SPINCOUNT={SPIN_COUNT}, requested at load (fastcnn's default)"
