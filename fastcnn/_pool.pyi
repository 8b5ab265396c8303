# Stub of the compiled module csrc/_pool.pyx (max and average pooling kernels);
# tests/test_stubs.py checks that its functions and parameter names match the module's.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)  # Cython's `floating`: one dtype per call

def max_pool2d_forward(
    x: NDArray[_F],
    KH: int,
    KW: int,
    SH: int,
    SW: int,
    PH: int,
    PW: int,
    out: NDArray[_F],
    argmax: NDArray[np.int64],
    n_threads: int,
) -> None: ...
def max_pool2d_backward(
    grad_out: NDArray[_F], argmax: NDArray[np.int64], grad_x: NDArray[_F], n_threads: int
) -> None: ...
def avg_pool2d_forward(
    x: NDArray[_F],
    KH: int,
    KW: int,
    SH: int,
    SW: int,
    PH: int,
    PW: int,
    count_include_pad: bool,
    out: NDArray[_F],
    n_threads: int,
) -> None: ...
def avg_pool2d_backward(
    grad_out: NDArray[_F],
    KH: int,
    KW: int,
    SH: int,
    SW: int,
    PH: int,
    PW: int,
    count_include_pad: bool,
    grad_x: NDArray[_F],
    n_threads: int,
) -> None: ...
