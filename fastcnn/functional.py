"""Convolution, pooling, linear and ReLU on NumPy arrays, checked, as torch.nn.functional.

Every public function here does the same steps, in order, so the kernels never see a bad
argument: validate (clear ``TypeError``/``ValueError``, with fastcnn/_validation.py's
checks), coerce (C-contiguous, one dtype), compute the output shape (``output_size`` is the
only place that formula lives), then allocate and call the kernel on fastcnn's threads
(``fastcnn.get_num_threads()``), through the runners of fastcnn/_ops.py where there are
some: the layers of ``fastcnn.nn`` call those same runners after their own checks.

Arrays are NCHW. Inputs must be float32 or float64, and every array of one call must have
the same dtype: mixing float32 and float64 raises ``TypeError`` rather than silently casting
(cast one side with ``.astype``). The output has the input's dtype. Non-contiguous,
read-only and memory-mapped inputs are accepted and give the same bits as a contiguous copy.
Unbatched 3-D input is not accepted (unlike PyTorch): pass ``x[None]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

import fastcnn._conv as _conv
from fastcnn import _conv_plan, _ops
from fastcnn._ops import run_kernel
from fastcnn._validation import (
    check_shape,
    conv_groups,
    fits_int32,
    flag,
    float_array,
    image_batch,
    nchw_shape,
    non_negative_pair,
    output_size,
    pool_window,
    positive_pair,
    window_output_hw,
)

__all__ = [
    "add_relu",
    "avg_pool2d",
    "avg_pool2d_backward",
    "col2im",
    "conv2d",
    "conv2d_backward",
    "conv2d_relu_max_pool2d",
    "conv2d_relu_max_pool2d_backward",
    "im2col",
    "linear",
    "linear_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "output_size",
    "relu",
    "relu_backward",
]

# (grad_input or None, grad_weight, grad_bias or None) of a convolution's backward pass
ConvGradients = tuple[NDArray[Any] | None, NDArray[Any], NDArray[Any] | None]

# -------------------------------------------------------------------------- convolution


def _conv_operands(
    func: str,
    x: NDArray[Any],
    weight: ArrayLike,
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> tuple[NDArray[Any], _conv_plan.ConvPlan]:
    """A convolution call's checked weight (x checked by the caller) and its plan."""
    weight = float_array(weight, "weight", func, 4, x.dtype)
    stride = positive_pair(stride, "stride", func)
    padding = non_negative_pair(padding, "padding", func)
    dilation = positive_pair(dilation, "dilation", func)
    if min(weight.shape) < 1:
        raise ValueError(f"{func}: weight of shape {weight.shape} has an empty dimension")
    groups = conv_groups(groups, x.shape[1], weight.shape[0], func)
    if x.shape[1] != weight.shape[1] * groups:
        per_group = f" ({weight.shape[1]} per group, groups={groups})" if groups > 1 else ""
        raise ValueError(
            f"{func}: input has {x.shape[1]} channels (shape {x.shape}) but weight of shape "
            f"{weight.shape} expects {weight.shape[1] * groups}{per_group}; weight must be "
            f"(out_channels, in_channels // groups, kH, kW)"
        )
    plan = _conv_plan.plan_for(
        func, x.shape, weight.shape, x.dtype, stride, padding, dilation, groups
    )
    return weight, plan


def _conv_bias(
    func: str, bias: ArrayLike | None, x: NDArray[Any], weight: NDArray[Any]
) -> NDArray[Any] | None:
    if bias is None:
        return None
    bias = float_array(bias, "bias", func, 1, x.dtype)
    check_shape(bias.shape, (weight.shape[0],), "bias", func, "(one per output channel)")
    return bias


def conv2d(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    save_columns: bool = False,
) -> NDArray[Any] | tuple[NDArray[Any], NDArray[Any] | None]:
    """2-D convolution (cross-correlation, as in PyTorch) of a batch of images.

    Parameters
    ----------
    input : ndarray, shape (N, C, H, W)
    weight : ndarray, shape (K, C // groups, kH, kW)
    bias : ndarray, shape (K,), optional
    stride, padding : int or (int, int)
        Zero padding is added on both sides.
    dilation : int or (int, int)
        Spacing between the kernel's taps.
    groups : int
        C and K split into ``groups`` groups; output group g convolves input group g only.
        ``groups == C`` is a depthwise convolution, computed by a kernel of its own.
    save_columns : bool
        Also return every image's im2col matrix, shape (N, C*kH*kW * OH*OW), for
        ``conv2d_backward(..., columns=...)``: the backward pass then skips rebuilding them,
        at the cost of keeping them in memory (what ``nn.Conv2d`` does while training).
        None is returned instead when the convolution is computed without them, by the
        row kernel or the filter kernel of csrc/direct_conv_impl.h (fastcnn/_conv_plan.py
        picks per layer and per ISA copy: few filters on wide rows take the row kernel,
        many filters the filter kernel), and for a depthwise or 1x1 stride-1 unpadded
        convolution (which reads the input as its own column matrix).

    Returns
    -------
    ndarray, shape (N, K, OH, OW)
        ``OH = floor((H + 2*padding[0] - dilation[0]*(kH - 1) - 1) / stride[0]) + 1``,
        likewise OW. With ``save_columns``, the pair ``(out, columns)``.
    """
    func = "conv2d"
    x = image_batch(input, func)
    save_columns = flag(save_columns, "save_columns", func)
    weight, plan = _conv_operands(func, x, weight, stride, padding, dilation, groups)
    bias = _conv_bias(func, bias, x, weight)
    packs = _conv_plan.PackedWeights(plan, weight)
    out, columns = plan.forward(x, weight, bias, packs, save_columns)
    return (out, columns) if save_columns else out


def _check_columns(
    func: str, columns: ArrayLike, x: NDArray[Any], plan: _conv_plan.ConvPlan
) -> NDArray[Any]:
    """The column matrices kept by the forward call: (N, C*kH*kW * OH*OW) of x's dtype."""
    columns = float_array(columns, "columns", func, 2, x.dtype)
    producer = func.removesuffix("_backward")
    shape = (x.shape[0], plan.column_rows * plan.out_hw[0] * plan.out_hw[1])
    why = f"(from {producer}(..., save_columns=True) on this input)"
    check_shape(columns.shape, shape, "columns", func, why)
    return columns


def _backward_operands(
    func: str,
    input: ArrayLike,
    weight: ArrayLike,
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    input_grad: bool,
    bias_grad: bool,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> tuple[NDArray[Any], NDArray[Any], _conv_plan.ConvPlan, bool, bool]:
    """A convolution backward call's checked input, weight, plan and flags."""
    x = image_batch(input, func)
    input_grad = flag(input_grad, "input_grad", func)
    bias_grad = flag(bias_grad, "bias_grad", func)
    weight, plan = _conv_operands(func, x, weight, stride, padding, dilation, groups)
    return x, weight, plan, input_grad, bias_grad


def conv2d_backward(
    grad_output: ArrayLike,
    input: ArrayLike,
    weight: ArrayLike,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    input_grad: bool = True,
    bias_grad: bool = True,
    columns: ArrayLike | None = None,
) -> ConvGradients:
    """Gradients of ``conv2d(input, weight, bias, stride, padding, dilation, groups)``.

    Parameters
    ----------
    grad_output : ndarray, shape (N, K, OH, OW)
        Gradient of the loss with respect to the convolution's output.
    input, weight, stride, padding, dilation, groups
        As given to ``conv2d``.
    input_grad : bool
        Compute the input gradient. The first layer of a network needs none: pass False to
        skip its cost (about half of the backward pass).
    bias_grad : bool
        Compute the bias gradient (False for a layer without bias).
    columns : ndarray, optional
        The column matrices returned by ``conv2d(..., save_columns=True)`` for this input:
        used instead of building them again.

    Returns
    -------
    (grad_input or None, grad_weight, grad_bias or None)
        Each summed over the batch in a fixed order: identical bits for any thread count.
    """
    func = "conv2d_backward"
    x, weight, plan, input_grad, bias_grad = _backward_operands(
        func, input, weight, stride, padding, input_grad, bias_grad, dilation, groups
    )
    grad_out = float_array(grad_output, "grad_output", func, 4, x.dtype)
    expected = (x.shape[0], weight.shape[0], *plan.out_hw)
    check_shape(grad_out.shape, expected, "grad_output", func, "(the shape of conv2d's output)")
    if columns is not None:
        columns = _check_columns(func, columns, x, plan)
    packs = _conv_plan.PackedWeights(plan, weight)
    return plan.backward(grad_out, x, packs, input_grad, bias_grad, columns)


def _unfold_geometry(
    func: str,
    in_hw: Sequence[int],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int],
    padding: int | Sequence[int],
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    kernel = positive_pair(kernel_size, "kernel_size", func)
    stride = positive_pair(stride, "stride", func)
    padding = non_negative_pair(padding, "padding", func)
    return kernel, stride, padding, window_output_hw(func, in_hw, kernel, stride, padding)


def im2col(
    input: ArrayLike,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
) -> NDArray[Any]:
    """Unfold every window of a batch into a row: the NumPy book's layout.

    Returns
    -------
    ndarray, shape (N*OH*OW, C*kH*kW)
        Row ``(n*OH + oh)*OW + ow`` holds the window of output pixel (oh, ow) of image n,
        ordered (c, i, j); cells in the padding are 0. ``conv2d`` equals
        ``im2col(x) @ weight.reshape(K, -1).T`` reshaped to (N, OH, OW, K) and transposed.
    """
    func = "im2col"
    x = image_batch(input, func)
    kernel, stride, padding, (oh, ow) = _unfold_geometry(
        func, x.shape[2:], kernel_size, stride, padding
    )
    col = np.empty((x.shape[0] * oh * ow, x.shape[1] * kernel[0] * kernel[1]), dtype=x.dtype)
    run_kernel(_conv.im2col, x, *kernel, *stride, *padding, oh, ow, col)
    return col


def col2im(
    col: ArrayLike,
    input_shape: Sequence[int],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
) -> NDArray[Any]:
    """Adjoint of ``im2col``: add every row back onto the window it came from.

    Parameters
    ----------
    col : ndarray, shape (N*OH*OW, C*kH*kW)
    input_shape : (N, C, H, W)
        Shape of the array ``col`` was unfolded from.

    Returns
    -------
    ndarray of shape ``input_shape``; overlapping windows add up, padding is dropped.
    """
    func = "col2im"
    shape = nchw_shape(input_shape, func)
    kernel, stride, padding, (oh, ow) = _unfold_geometry(
        func, shape[2:], kernel_size, stride, padding
    )
    col = float_array(col, "col", func, 2)
    expected = (shape[0] * oh * ow, shape[1] * kernel[0] * kernel[1])
    check_shape(col.shape, expected, "col", func, f"(im2col of an input of shape {shape})")
    x = np.empty(shape, dtype=col.dtype)
    run_kernel(_conv.col2im, col, *kernel, *stride, *padding, oh, ow, x)
    return x


# ------------------------------------------------------------------------------ pooling


def _pool_geometry(
    func: str,
    in_hw: Sequence[int],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None,
    padding: int | Sequence[int],
    prefix: str = "",
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Validated kernel, stride (default: the kernel), padding and (OH, OW) of a pool.
    prefix: of the argument names in messages ("pool_" for the fused op's pool)."""
    kernel, steps, pads = pool_window(kernel_size, stride, padding, func, prefix)
    names = ("pool kernel", "convolution output") if prefix else ("kernel", "input")
    return kernel, steps, pads, window_output_hw(func, in_hw, kernel, steps, pads, names)


def max_pool2d(
    input: ArrayLike,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    return_indices: bool = False,
) -> NDArray | tuple[NDArray, NDArray]:
    """2-D max pooling.

    Ties go to the first maximum in row-major order; a NaN wins (the last NaN of a window
    is taken); padding is never chosen. These are PyTorch's CPU rules.

    Parameters
    ----------
    input : ndarray, shape (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), default: kernel_size
    padding : int or (int, int), at most half the kernel size
    return_indices : bool
        Also return the argmax, for ``max_pool2d_backward``.

    Returns
    -------
    out : ndarray, shape (N, C, OH, OW), ``OH = floor((H + 2*padding - kH) / stride) + 1``
    indices : int64 ndarray, shape (N, C, OH, OW), only with ``return_indices``
        Flat index ``h*W + w`` of each maximum in its (H, W) plane, as PyTorch returns.
    """
    func = "max_pool2d"
    x = image_batch(input, func)
    kernel, steps, pads, out_hw = _pool_geometry(func, x.shape[2:], kernel_size, stride, padding)
    with_indices = flag(return_indices, "return_indices", func)
    out, indices = _ops.max_pool2d(x, kernel, steps, pads, out_hw)
    return (out, indices) if with_indices else out


def _check_indices(
    func: str, indices: ArrayLike, shape: Sequence[int], plane: int, plane_name: str
) -> NDArray[Any]:
    """Max-pool indices of the given shape, each a flat position in [0, plane), as int64.
    plane_name: what the message calls the plane (say, "H*W of input_shape (2, 3, 8, 8)")."""
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{func}: indices must be integers, got dtype {indices.dtype}")
    check_shape(indices.shape, shape, "indices", func, "(the shape of the pooled output)")
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        raise ValueError(
            f"{func}: indices must lie in [0, {plane}), {plane_name}; "
            f"got values in [{indices.min()}, {indices.max()}]"
        )
    return np.ascontiguousarray(indices, dtype=np.int64)


def max_pool2d_backward(
    grad_output: ArrayLike, indices: ArrayLike, input_shape: Sequence[int]
) -> NDArray:
    """Gradient of ``max_pool2d``: each output's gradient added to the input cell it took.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, OH, OW)
    indices : int ndarray, shape (N, C, OH, OW), from ``max_pool2d(..., return_indices=True)``
    input_shape : (N, C, H, W)
    """
    func = "max_pool2d_backward"
    shape = nchw_shape(input_shape, func)
    grad_out = float_array(grad_output, "grad_output", func, 4)
    if grad_out.shape[:2] != shape[:2]:
        raise ValueError(
            f"{func}: grad_output of shape {grad_out.shape} does not match input_shape {shape} "
            "in N and C"
        )
    plane = shape[2] * shape[3]
    flat = _check_indices(func, indices, grad_out.shape, plane, f"H*W of input_shape {shape}")
    return _ops.max_pool2d_backward(grad_out, flat, shape)


def avg_pool2d(
    input: ArrayLike,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    count_include_pad: bool = True,
) -> NDArray:
    """2-D average pooling (PyTorch's ``avg_pool2d`` without ceil_mode/divisor_override).

    Each output is the mean of its window; with ``count_include_pad`` (the default, as in
    PyTorch) padding cells count in the divisor as zeros, else only the cells of the input.
    Shapes as in ``max_pool2d``.
    """
    func = "avg_pool2d"
    x = image_batch(input, func)
    kernel, steps, pads, out_hw = _pool_geometry(func, x.shape[2:], kernel_size, stride, padding)
    include_pad = flag(count_include_pad, "count_include_pad", func)
    return _ops.avg_pool2d(x, kernel, steps, pads, out_hw, include_pad)


def avg_pool2d_backward(
    grad_output: ArrayLike,
    input_shape: Sequence[int],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    count_include_pad: bool = True,
) -> NDArray:
    """Gradient of ``avg_pool2d``: each output's gradient shared out over its window.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, OH, OW), that of ``avg_pool2d``'s output
    input_shape : (N, C, H, W)
    kernel_size, stride, padding, count_include_pad
        As given to ``avg_pool2d``.
    """
    func = "avg_pool2d_backward"
    shape = nchw_shape(input_shape, func)
    kernel, steps, pads, out_hw = _pool_geometry(func, shape[2:], kernel_size, stride, padding)
    grad_out = float_array(grad_output, "grad_output", func, 4)
    check_shape(
        grad_out.shape,
        (*shape[:2], *out_hw),
        "grad_output",
        func,
        "(the shape of avg_pool2d's output)",
    )
    include_pad = flag(count_include_pad, "count_include_pad", func)
    return _ops.avg_pool2d_backward(grad_out, shape, kernel, steps, pads, include_pad)


# --------------------------------------------------------------- conv -> relu -> max-pool


def conv2d_relu_max_pool2d(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    pool_kernel_size: int | Sequence[int] = 2,
    pool_stride: int | Sequence[int] | None = None,
    pool_padding: int | Sequence[int] = 0,
    *,
    save_columns: bool = False,
) -> tuple[NDArray[Any], NDArray[Any]] | tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None]:
    """``max_pool2d(relu(conv2d(input, weight, bias, stride, padding)), pool_kernel_size,
    pool_stride, pool_padding, return_indices=True)`` in one pass, with the same bits.

    Each image's convolution output stays in a per-thread buffer in cache and is pooled
    there: the full (N, K, OH, OW) activation is never written to memory.
    ``nn.Sequential`` runs Conv2d -> ReLU -> MaxPool2d this way.

    Parameters
    ----------
    input, weight, bias, stride, padding, save_columns
        As in ``conv2d``.
    pool_kernel_size, pool_stride, pool_padding
        As ``kernel_size``, ``stride`` and ``padding`` of ``max_pool2d``, over the
        convolution's (OH, OW) output.

    Returns
    -------
    (out, indices), or (out, indices, columns) with ``save_columns``
        ``out`` and ``indices`` as ``max_pool2d(..., return_indices=True)`` returns them:
        indices are flat ``oh*OW + ow`` positions in the convolution's output planes.
    """
    func = "conv2d_relu_max_pool2d"
    x = image_batch(input, func)
    save_columns = flag(save_columns, "save_columns", func)
    weight, plan = _conv_operands(func, x, weight, stride, padding)
    pool_kernel, pool_stride, pool_padding, pooled_hw = _pool_geometry(
        func, plan.out_hw, pool_kernel_size, pool_stride, pool_padding, prefix="pool_"
    )
    bias = _conv_bias(func, bias, x, weight)
    pool = _conv_plan.pool_plan(pool_kernel, pool_stride, pool_padding, pooled_hw)
    packs = _conv_plan.PackedWeights(plan, weight)
    out, indices, columns = plan.forward_relu_max_pool(pool, x, weight, bias, packs, save_columns)
    return (out, indices, columns) if save_columns else (out, indices)


def conv2d_relu_max_pool2d_backward(
    grad_output: ArrayLike,
    output: ArrayLike,
    indices: ArrayLike,
    input: ArrayLike,
    weight: ArrayLike,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    *,
    input_grad: bool = True,
    bias_grad: bool = True,
    columns: ArrayLike | None = None,
) -> ConvGradients:
    """Gradients of ``conv2d_relu_max_pool2d``, with the bits of ``max_pool2d_backward``,
    ``relu_backward`` and ``conv2d_backward`` run one after the other.

    Parameters
    ----------
    grad_output : ndarray, shape (N, K, POH, POW)
        Gradient of the loss with respect to the pooled output.
    output, indices
        The pooled output and indices ``conv2d_relu_max_pool2d`` returned.
    input, weight, stride, padding, input_grad, bias_grad, columns
        As in ``conv2d_backward``.

    Returns
    -------
    (grad_input or None, grad_weight, grad_bias or None)
    """
    func = "conv2d_relu_max_pool2d_backward"
    x, weight, plan, input_grad, bias_grad = _backward_operands(
        func, input, weight, stride, padding, input_grad, bias_grad
    )
    out = float_array(output, "output", func, 4, x.dtype)
    if out.shape[:2] != (x.shape[0], weight.shape[0]):
        raise ValueError(
            f"{func}: output has shape {out.shape}, expected (N, K) = "
            f"{(x.shape[0], weight.shape[0])} in front (the pooled output for this input)"
        )
    grad_out = float_array(grad_output, "grad_output", func, 4, x.dtype)
    why = "(the shape of output, the pooled output of the forward call)"
    check_shape(grad_out.shape, out.shape, "grad_output", func, why)
    (oh, ow) = plan.out_hw
    indices = _check_indices(
        func,
        indices,
        out.shape,
        oh * ow,
        f"OH*OW of the convolution's {(oh, ow)} output (are stride and padding those of the "
        "forward call?)",
    )
    if columns is not None:
        columns = _check_columns(func, columns, x, plan)
    packs = _conv_plan.PackedWeights(plan, weight)
    return plan.backward_relu_max_pool(
        grad_out, out, indices, x, packs, input_grad, bias_grad, columns
    )


# ------------------------------------------------------------------------------- linear


def _linear_operands(
    func: str, input: ArrayLike, weight: ArrayLike
) -> tuple[NDArray[Any], tuple[int, ...], NDArray[Any]]:
    """input as a 2-D (rows, in_features) array, its leading shape, and the weight."""
    if input is None or np.ndim(input) == 0:
        raise ValueError(f"{func}: input must have at least 1 dimension, got {input!r}")
    x = float_array(input, "input", func)
    weight = float_array(weight, "weight", func, 2, x.dtype)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{func}: input has {x.shape[-1]} features (last dim of shape {x.shape}) but weight "
            f"of shape {weight.shape} expects {weight.shape[1]}; weight must be "
            f"(out_features, in_features)"
        )
    fits_int32(func, in_features=weight.shape[1], out_features=weight.shape[0])
    return x.reshape(-1, weight.shape[1]), x.shape[:-1], weight


def linear(input: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None) -> NDArray:
    """``input . weight^T + bias``, as PyTorch's ``F.linear``.

    Parameters
    ----------
    input : ndarray, shape (..., in_features)
    weight : ndarray, shape (out_features, in_features)
    bias : ndarray, shape (out_features,), optional

    Returns
    -------
    ndarray, shape (..., out_features)
        Computed on fastcnn's threads with single-threaded GEMMs over fixed chunks of rows:
        the same bits for any thread count, and no second thread pool (NumPy's BLAS).
    """
    func = "linear"
    x, lead, w = _linear_operands(func, input, weight)
    b = None if bias is None else float_array(bias, "bias", func, 1, x.dtype)
    if b is not None:
        check_shape(b.shape, (w.shape[0],), "bias", func, "(one per output feature)")
    return _ops.linear_forward(x, w, b).reshape(*lead, w.shape[0])


def linear_backward(
    grad_output: ArrayLike,
    input: ArrayLike,
    weight: ArrayLike,
    *,
    input_grad: bool = True,
    bias_grad: bool = True,
) -> tuple[NDArray | None, NDArray, NDArray | None]:
    """Gradients of ``linear(input, weight, bias)``.

    Returns
    -------
    (grad_input or None, grad_weight, grad_bias or None)
        Weight and bias gradients are summed over every leading dimension of the input, in
        a fixed order: identical bits for any thread count.
    """
    func = "linear_backward"
    x, lead, w = _linear_operands(func, input, weight)
    want_x = flag(input_grad, "input_grad", func)
    want_b = flag(bias_grad, "bias_grad", func)
    out_features = w.shape[0]
    grad_out = float_array(grad_output, "grad_output", func, len(lead) + 1, x.dtype)
    check_shape(
        grad_out.shape, (*lead, out_features), "grad_output", func, "(the shape of linear's output)"
    )
    grad_x, grad_w, grad_b = _ops.linear_backward(
        x, w, grad_out.reshape(-1, out_features), want_x, want_b
    )
    if grad_x is not None:
        grad_x = grad_x.reshape(*lead, w.shape[1])
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------------- relu


def relu(input: ArrayLike) -> NDArray:
    """``max(input, 0)`` element-wise, in one pass on fastcnn's threads (NaN stays NaN)."""
    return _ops.relu(float_array(input, "input", "relu"))


def relu_backward(grad_output: ArrayLike, output: ArrayLike) -> NDArray:
    """Gradient of ``relu`` from its *output*: ``grad_output`` where ``output > 0`` (or NaN,
    whose gradient passes, as in PyTorch's threshold_backward), else 0."""
    func = "relu_backward"
    out = float_array(output, "output", func)
    grad = float_array(grad_output, "grad_output", func, out.ndim, out.dtype)
    check_shape(grad.shape, out.shape, "grad_output", func, "(the shape of relu's output)")
    return _ops.relu_backward(grad, out)


def add_relu(input: ArrayLike, other: ArrayLike) -> NDArray:
    """``relu(input + other)`` in one pass on fastcnn's threads: a residual block's end, the
    bits of NumPy's sum then ``relu``. The shapes must be equal (no broadcasting). Its
    gradient is ``relu_backward`` of the output, for both addends."""
    func = "add_relu"
    x = float_array(input, "input", func)
    y = float_array(other, "other", func, x.ndim, x.dtype)
    check_shape(y.shape, x.shape, "other", func, "(the input's shape: no broadcasting)")
    return _ops.add_relu(x, y)
