# Stub of the compiled module csrc/_elementwise.pyx (ReLU, sum and ReLU-of-sum kernels);
# tests/test_stubs.py checks that its functions and parameter names match the module's.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)  # Cython's `floating`: one dtype per call

def relu_forward(x: NDArray[_F], out: NDArray[_F], n_threads: int) -> None: ...
def relu_backward(
    grad_out: NDArray[_F], out: NDArray[_F], grad_x: NDArray[_F], n_threads: int
) -> None: ...
def add_forward(a: NDArray[_F], b: NDArray[_F], out: NDArray[_F], n_threads: int) -> None: ...
def add_relu_forward(a: NDArray[_F], b: NDArray[_F], out: NDArray[_F], n_threads: int) -> None: ...
