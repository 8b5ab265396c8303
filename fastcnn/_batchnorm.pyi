# Stub of the compiled module csrc/_batchnorm.pyx (BatchNorm kernels on (N, C, S) arrays,
# per-channel float64 statistics); tests/test_stubs.py checks that its functions and
# parameter names match the module's.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)  # Cython's `floating`: one dtype per call
_D = NDArray[np.float64]

def batch_norm_forward_train(
    x: NDArray[_F],
    weight: _D,
    bias: _D,
    eps: float,
    mean: _D,
    var: _D,
    inv_std: _D,
    relu: bool,
    y: NDArray[_F],
    n_threads: int,
) -> None: ...
def batch_norm_forward_eval(
    x: NDArray[_F], mean: _D, scale: _D, shift: _D, relu: bool, y: NDArray[_F], n_threads: int
) -> None: ...
def batch_norm_backward(
    grad_out: NDArray[_F],
    relu_out: NDArray[_F] | None,
    x: NDArray[_F],
    mean: _D,
    inv_std: _D,
    weight: _D,
    batch_stats: bool,
    grad_weight: _D,
    grad_bias: _D,
    grad_x: NDArray[_F] | None,
    n_threads: int,
) -> None: ...
