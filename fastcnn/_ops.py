"""Running the compiled kernels: what functional and the layers share once arguments are
checked (fastcnn/_validation.py) and shapes known. Nothing here validates.

``run_kernel`` calls a kernel on fastcnn's thread count with BLAS on one thread (the
kernels parallelise over images themselves); ``workspace`` hands out the per-thread
scratch the kernels write into.

The runners below (linear, ReLU, pooling, batch norm, augmentation) are what ``functional``
calls after its checks and what the layers (and RandomAffine) call after theirs: each
allocates the outputs and calls one kernel.
Their arrays must be C-contiguous, of one float dtype (int64 for max-pool indices), with
the shapes their docstrings give; the kernels read and write them without bounds checks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

import fastcnn._augment as _augment
import fastcnn._batchnorm as _batchnorm
import fastcnn._dense as _dense
import fastcnn._elementwise as _elementwise
import fastcnn._pool as _pool
from fastcnn._blas import single_threaded_blas
from fastcnn._threads import get_num_threads

Pair = tuple[int, int]

# Rows of a Linear layer's batch per GEMM call; weight/bias gradients are summed per chunk
# and the chunks added in order. Fixed, so the sums do not depend on the thread count.
LINEAR_CHUNK = 16

_buffers = threading.local()


def workspace(rows: int, columns: int, dtype: DTypeLike) -> NDArray[Any]:
    """A (rows, columns) scratch array, kept per Python thread and grown as needed.
    Callers use it as ``_ops.workspace`` so a test can swap in a poisoned one.

    The kernels' per-thread im2col buffers: reusing them avoids a page-faulting allocation
    on every call. Per Python thread, so two Python threads can run kernels at once.
    """
    key = np.dtype(dtype).char
    cached = getattr(_buffers, key, None)
    size = rows * columns
    if cached is None or cached.size < size:
        cached = np.empty(max(size, 1), dtype=dtype)
        setattr(_buffers, key, cached)
    return cached[:size].reshape(rows, columns)


def run_kernel(kernel: Callable[..., None], *args: Any, n_threads: int | None = None) -> None:
    """Call a kernel with the thread count (default: the current one), its BLAS on one thread."""
    if n_threads is None:
        n_threads = get_num_threads()
    with single_threaded_blas():
        kernel(*args, n_threads)


# ------------------------------------------------------------------------------- linear


def linear_forward(x: NDArray, weight: NDArray, bias: NDArray | None) -> NDArray:
    """``x . weight^T + bias``: x (rows, in_features), weight (out_features, in_features),
    bias (out_features,) or None; returns (rows, out_features)."""
    out = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    run_kernel(_dense.linear_forward, x, weight, bias, LINEAR_CHUNK, out)
    return out


def linear_backward(
    x: NDArray, weight: NDArray, grad_out: NDArray, input_grad: bool, bias_grad: bool
) -> tuple[NDArray | None, NDArray, NDArray | None]:
    """(grad_x or None, grad_weight, grad_bias or None) of ``linear_forward(x, weight, _)``
    for grad_out (rows, out_features); the sums over rows in a fixed order of chunks."""
    out_features = weight.shape[0]
    n_chunks = -(-x.shape[0] // LINEAR_CHUNK)
    grad_x = np.empty_like(x) if input_grad else None
    grad_w = np.empty_like(weight)
    grad_b = np.empty(out_features, dtype=x.dtype) if bias_grad else None
    w_chunks = np.empty((n_chunks, weight.size), dtype=x.dtype)
    b_chunks = np.empty((n_chunks, out_features), dtype=x.dtype) if bias_grad else None
    run_kernel(
        _dense.linear_backward,
        x,
        weight,
        grad_out,
        LINEAR_CHUNK,
        w_chunks,
        b_chunks,
        grad_x,
        grad_w,
        grad_b,
    )
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------------- relu


def relu(x: NDArray) -> NDArray:
    """``max(x, 0)`` element-wise, any shape."""
    out = np.empty_like(x)
    run_kernel(_elementwise.relu_forward, x.reshape(-1), out.reshape(-1))
    return out


def relu_backward(grad_out: NDArray, out: NDArray) -> NDArray:
    """``grad_out`` where relu's output ``out`` is > 0 or NaN, else 0 (same shapes)."""
    grad_x = np.empty_like(out)
    run_kernel(
        _elementwise.relu_backward, grad_out.reshape(-1), out.reshape(-1), grad_x.reshape(-1)
    )
    return grad_x


def add(a: NDArray, b: NDArray) -> NDArray:
    """``a + b`` element-wise on fastcnn's threads (same shapes and dtype)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    out = np.empty(a.shape, a.dtype)
    run_kernel(_elementwise.add_forward, a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out


def add_relu(a: NDArray, b: NDArray) -> NDArray:
    """``relu(a + b)`` in one pass (same shapes and dtype): the bits of NumPy's ``a + b``
    then ``relu``."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    out = np.empty(a.shape, a.dtype)
    run_kernel(_elementwise.add_relu_forward, a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out


# ------------------------------------------------------------------------------ pooling


def max_pool2d(
    x: NDArray, kernel: Pair, stride: Pair, padding: Pair, out_hw: Pair
) -> tuple[NDArray, NDArray]:
    """(out, int64 indices), both (N, C, *out_hw), of max pooling the (N, C, H, W) x."""
    out = np.empty((*x.shape[:2], *out_hw), dtype=x.dtype)
    indices = np.empty(out.shape, dtype=np.int64)
    if out.size:  # (the kernel reads a first element of every array)
        run_kernel(_pool.max_pool2d_forward, x, *kernel, *stride, *padding, out, indices)
    return out, indices


def max_pool2d_backward(
    grad_out: NDArray, indices: NDArray, input_shape: tuple[int, ...]
) -> NDArray:
    """The input gradient of max pooling; ``indices`` in [0, H*W) of ``input_shape``."""
    if grad_out.size == 0:  # no output (an adaptive pool to 0 pixels): the kernel reads one
        return np.zeros(input_shape, dtype=grad_out.dtype)
    grad_x = np.empty(input_shape, dtype=grad_out.dtype)
    run_kernel(_pool.max_pool2d_backward, grad_out, indices, grad_x)
    return grad_x


def avg_pool2d(
    x: NDArray, kernel: Pair, stride: Pair, padding: Pair, out_hw: Pair, include_pad: bool
) -> NDArray:
    """(N, C, *out_hw) average pooling of the (N, C, H, W) x."""
    out = np.empty((*x.shape[:2], *out_hw), dtype=x.dtype)
    if out.size:  # (the kernel reads a first element of every array)
        run_kernel(_pool.avg_pool2d_forward, x, *kernel, *stride, *padding, include_pad, out)
    return out


def avg_pool2d_backward(
    grad_out: NDArray,
    input_shape: tuple[int, ...],
    kernel: Pair,
    stride: Pair,
    padding: Pair,
    include_pad: bool,
) -> NDArray:
    """The input gradient of average pooling, grad_out of avg_pool2d's output shape."""
    if grad_out.size == 0:  # nothing pooled: no gradient (and the kernel reads one)
        return np.zeros(input_shape, dtype=grad_out.dtype)
    grad_x = np.empty(input_shape, dtype=grad_out.dtype)
    run_kernel(_pool.avg_pool2d_backward, grad_out, *kernel, *stride, *padding, include_pad, grad_x)
    return grad_x


# ------------------------------------------------------------------------- log-softmax


def log_softmax(x: NDArray, axis: int) -> NDArray:
    """``log_softmax`` along ``axis``, shifted by the maximum: scipy.special.log_softmax's
    arithmetic (and bits) for finite inputs, torch's values for the others, and no NumPy
    warning (CrossEntropyLoss and LogSoftmax share it).

    Not scipy's function: it swaps a non-finite maximum for 0, so a slice holding +inf
    computed inf - inf (warning "invalid value encountered in subtract") and gave NaN in one
    place and -inf in the others. Shifting by the true maximum gives a slice of NaN, as
    torch, for a slice holding NaN or +inf or only -inf; a -inf among finite values gives
    -inf.
    """
    top = np.max(x, axis=axis, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):  # 3e38 - -3e38 overflows; inf - inf
        shifted = x - top
        # the sum is at least 1 (the maximum's exp(0)) or NaN: its log is finite or NaN
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


# --------------------------------------------------------------------------- batch norm
# x is (N, C, S): S = H*W, L or 1. The per-channel arrays (weight, bias, mean, var,
# inv_std, scale, shift, and the weight and bias gradients) are float64 of length C.


def batch_norm_train(
    x: NDArray, weight: NDArray, bias: NDArray, eps: float, relu: bool = False
) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """(y, mean, var, inv_std): the batch's per-channel mean and biased variance,
    ``inv_std = 1 / sqrt(var + eps)`` and ``y = (x - mean) * inv_std * weight + bias``
    (``relu(y)`` if ``relu``: the bits of ``relu`` after it)."""
    channels = x.shape[1]
    y = np.empty_like(x)
    if x.size == 0:  # no values: NaN statistics, as NumPy's mean of nothing (no warning)
        nan = np.full(channels, np.nan)
        return y, nan, nan.copy(), nan.copy()
    mean, var, inv_std = (np.empty(channels) for _ in range(3))
    run_kernel(
        _batchnorm.batch_norm_forward_train, x, weight, bias, eps, mean, var, inv_std, relu, y
    )
    return y, mean, var, inv_std


def batch_norm_eval(
    x: NDArray, mean: NDArray, scale: NDArray, shift: NDArray, relu: bool = False
) -> NDArray:
    """``y = (x - mean) * scale + shift`` per channel (``relu(y)`` if ``relu``)."""
    y = np.empty_like(x)
    run_kernel(_batchnorm.batch_norm_forward_eval, x, mean, scale, shift, relu, y)
    return y


def batch_norm_backward(
    grad_out: NDArray,
    x: NDArray,
    mean: NDArray,
    inv_std: NDArray,
    weight: NDArray,
    batch_stats: bool,
    input_grad: bool,
    relu_out: NDArray | None = None,
) -> tuple[NDArray | None, NDArray, NDArray]:
    """(grad_x or None, grad_weight, grad_bias) of ``x_hat * weight + bias`` with
    ``x_hat = (x - mean) * inv_std``; with ``batch_stats`` the mean and inv_std were the
    batch's, so the gradient flows through them too. Given ``relu_out``, the output of a
    ReLU on this BatchNorm's output, ``grad_out`` is the ReLU's output gradient: the bits
    of ``relu_backward`` first."""
    channels = x.shape[1]
    # with a ReLU the kernel writes its masked gradient into grad_x first
    grad_x = np.empty_like(x) if input_grad or relu_out is not None else None
    if x.size == 0:  # nothing to sum
        if grad_x is not None:
            grad_x.fill(0)
        return grad_x, np.zeros(channels), np.zeros(channels)
    grad_weight, grad_bias = np.empty(channels), np.empty(channels)
    run_kernel(
        _batchnorm.batch_norm_backward,
        grad_out,
        relu_out,
        x,
        mean,
        inv_std,
        weight,
        batch_stats,
        grad_weight,
        grad_bias,
        grad_x,
    )
    return grad_x if input_grad else None, grad_weight, grad_bias


# ------------------------------------------------------------------------- augmentation


def affine_nearest(
    batch: NDArray[np.float32],
    cos_over_scale: NDArray[np.float64],
    sin_over_scale: NDArray[np.float64],
    translate_x: NDArray[np.float64],
    translate_y: NDArray[np.float64],
    fill: float,
) -> NDArray[np.float32]:
    """RandomAffine's nearest-pixel output of the float32 (N, C, H, W) ``batch``; the four
    coefficient arrays are float64 of length N (``fastcnn._reference.affine_nearest``)."""
    out = np.empty_like(batch)
    if out.size:  # (the kernel reads a first element of every array)
        run_kernel(
            _augment.affine_nearest,
            batch,
            cos_over_scale,
            sin_over_scale,
            translate_x,
            translate_y,
            fill,
            out,
        )
    return out
