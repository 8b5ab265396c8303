# Stub of the compiled module csrc/_network.pyx (a chain of layers run for inference in one
# call, built by fastcnn/nn/_inference.py); tests/test_stubs.py checks that its names and
# parameter names match the module's.
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)  # Cython's `floating`: one dtype per call

STEP_CODES: dict[str, int]

class Network:
    def __init__(
        self,
        steps: list[dict[str, Any]],
        sources: list[tuple[NDArray[Any], NDArray[Any]]],
        found: list[tuple[Any, str, bool, Any]],
    ) -> None: ...
    def current(self) -> bool: ...

def any_training(modules: tuple[Any, ...]) -> bool: ...
def select_kernel_isa(max_level: int) -> tuple[str, int, int, int, int, int]: ...
def run_network(
    net: Network,
    x: NDArray[_F],
    activations: NDArray[_F],
    workspace: NDArray[_F],
    argmax: NDArray[np.int64],
    out: NDArray[_F],
    n_threads: int,
) -> None: ...
