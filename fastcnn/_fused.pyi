# Stub of the compiled module csrc/_fused.pyx (conv2d -> ReLU -> max-pool as one kernel,
# run by fastcnn/_conv_plan.py); tests/test_stubs.py checks that its functions and
# parameter names match the module's.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)  # Cython's `floating`: one dtype per call

# csrc/_conv_image.pxd's ConvGeometry and PoolWindow structs, which Cython makes from dicts
# of ints (fastcnn/_conv_plan.py's ConvPlan.fused_geometry and PoolPlan.window)
_ConvGeometry = dict[str, int]
_PoolWindow = dict[str, int]

def select_kernel_isa(max_level: int) -> tuple[str, int, int, int, int, int]: ...
def conv2d_relu_max_pool2d_forward(
    g: _ConvGeometry,
    pool: _PoolWindow,
    x: NDArray[_F],
    weight: NDArray[_F],
    bias: NDArray[_F] | None,
    packed: NDArray[_F] | None,
    workspace: NDArray[_F],
    columns: NDArray[_F] | None,
    out: NDArray[_F],
    argmax: NDArray[np.int64],
    n_threads: int,
) -> None: ...
def conv2d_relu_max_pool2d_backward(
    g: _ConvGeometry,
    x: NDArray[_F],
    weight_t: NDArray[_F],
    grad_out: NDArray[_F],
    out: NDArray[_F],
    argmax: NDArray[np.int64],
    dx_packed: NDArray[_F] | None,
    columns: NDArray[_F] | None,
    chunk: int,
    workspace: NDArray[_F],
    grad_w_chunks: NDArray[_F],
    grad_b_chunks: NDArray[_F] | None,
    grad_x: NDArray[_F] | None,
    grad_w: NDArray[_F],
    grad_b: NDArray[_F] | None,
    n_threads: int,
) -> None: ...
