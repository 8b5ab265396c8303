# Stub of the compiled module csrc/_dense.pyx (Linear kernels); tests/test_stubs.py checks
# that its functions and parameter names match the module's.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)  # Cython's `floating`: one dtype per call

def linear_forward(
    x: NDArray[_F],
    weight: NDArray[_F],
    bias: NDArray[_F] | None,
    chunk: int,
    out: NDArray[_F],
    n_threads: int,
) -> None: ...
def linear_backward(
    x: NDArray[_F],
    weight: NDArray[_F],
    grad_out: NDArray[_F],
    chunk: int,
    grad_w_chunks: NDArray[_F],
    grad_b_chunks: NDArray[_F],
    grad_x: NDArray[_F] | None,
    grad_w: NDArray[_F],
    grad_b: NDArray[_F] | None,
    n_threads: int,
) -> None: ...
