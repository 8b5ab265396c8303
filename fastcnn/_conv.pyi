# Stub of the compiled module csrc/_conv.pyx (convolution kernels, run by
# fastcnn/_conv_plan.py, and the NumPy book's im2col/col2im); tests/test_stubs.py checks
# that its functions and parameter names match the module's.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)  # Cython's `floating`: one dtype per call

# csrc/_conv_image.pxd's ConvGeometry struct, which Cython makes from a dict of ints
# (fastcnn/_conv_plan.py's ConvPlan.geometry)
_ConvGeometry = dict[str, int]

METHOD_CODES: dict[str, int]

def select_kernel_isa(max_level: int) -> tuple[str, int, int, int, int, int]: ...
def cpu_isa_level() -> int: ...
def conv2d_forward(
    g: _ConvGeometry,
    x: NDArray[_F],
    weight: NDArray[_F],
    bias: NDArray[_F] | None,
    packed: NDArray[_F] | None,
    workspace: NDArray[_F],
    columns: NDArray[_F] | None,
    out: NDArray[_F],
    n_threads: int,
) -> None: ...
def conv2d_backward(
    g: _ConvGeometry,
    x: NDArray[_F],
    weight_t: NDArray[_F],
    grad_out: NDArray[_F],
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
def im2col(
    x: NDArray[_F],
    FH: int,
    FW: int,
    SH: int,
    SW: int,
    PH: int,
    PW: int,
    OH: int,
    OW: int,
    col: NDArray[_F],
    n_threads: int,
) -> None: ...
def col2im(
    col: NDArray[_F],
    FH: int,
    FW: int,
    SH: int,
    SW: int,
    PH: int,
    PW: int,
    OH: int,
    OW: int,
    x: NDArray[_F],
    n_threads: int,
) -> None: ...
