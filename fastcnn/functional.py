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

import numpy as np
from numpy.typing import ArrayLike, NDArray

import fastcnn._conv as _conv
import fastcnn._fused as _fused
from fastcnn import _isa, _ops
from fastcnn._ops import run_kernel
from fastcnn._threads import get_num_threads
from fastcnn._validation import (
    check_shape,
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

# Images per slice of the batch whose weight/bias gradients are summed together before the
# slices are added in order. Fixed, so the sums do not depend on the thread count (linear's
# chunk of rows is fastcnn._ops.LINEAR_CHUNK, for the same reason).
GRAD_CHUNK = 8


# ---------------------------------------------------------------------------- validation

# The window arithmetic and its check live in fastcnn/_validation.py, shared with the
# layers; output_size is public here, _output_hw is the convolution sections' name for it.
_output_hw = window_output_hw


# -------------------------------------------------------------------------- convolution


def _conv_geometry(func, x, weight, stride, padding):
    """Validated stride, padding and (OH, OW) of conv2d(x, weight)."""
    stride = positive_pair(stride, "stride", func)
    padding = non_negative_pair(padding, "padding", func)
    if min(weight.shape) < 1:
        raise ValueError(f"{func}: weight of shape {weight.shape} has an empty dimension")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{func}: input has {x.shape[1]} channels (shape {x.shape}) but weight of shape "
            f"{weight.shape} expects {weight.shape[1]}; weight must be "
            f"(out_channels, in_channels, kH, kW)"
        )
    out_hw = _output_hw(func, x.shape[2:], weight.shape[2:], stride, padding)
    q = weight.shape[1] * weight.shape[2] * weight.shape[3]
    fits_int32(func, **{"C*kH*kW": q, "OH*OW": out_hw[0] * out_hw[1]})
    return stride, padding, out_hw


# How conv2d computes an image (csrc/_conv_image.pxd's METHOD_* codes): im2col and a GEMM,
# or one of csrc/direct_conv.h's two direct kernels.
_GEMM, _ROWS, _FILTERS = 0, 1, 2


class MethodLimits:
    """Where each method measured fastest on one ISA copy of the kernels (fastcnn._isa),
    in the units of that copy's vector length VL. bench/README.md has the measurements.

    row_max_filters: the row kernel (stride 1, output rows of >= VL pixels) below this many
        filters; the filter kernel from VL // 2 filters; im2col and GEMM otherwise.
    row_grad_max_q, filter_grad_max_q: each direct kernel's weight gradient up to this
        C*kH*kW (above, im2col and GEMM), None for no limit.
    input_grad_min_channels, input_grad_max_pixels: a stride-1 input gradient by the filter
        kernel (the padded output gradient convolved with the flipped kernels) from this
        many input channels and up to this many input pixels (H*W; None: no limit); else
        im2col's adjoint (GEMM + col2im). None channels: always the adjoint.
    """

    def __init__(
        self,
        row_max_filters,
        row_grad_max_q,
        filter_grad_max_q,
        input_grad_min_channels,
        input_grad_max_pixels,
    ):
        self.row_max_filters = row_max_filters
        self.row_grad_max_q = row_grad_max_q
        self.filter_grad_max_q = filter_grad_max_q
        self.input_grad_min_channels = input_grad_min_channels
        self.input_grad_max_pixels = input_grad_max_pixels


# AVX-512 (measured on a 2-core Cascade Lake VM, one thread): the row kernel's weight
# gradient, LeNet conv1 (Q = 25) 1.8 vs 2.4 ms per 256 images but a VGG layer (576) 22 vs
# 14 ms per 32; the filter kernel's, LeNet conv2 (150) 1.5 vs 3.8 ms, VGG layers (576,
# 1152) 66 vs 27 and 33 vs 11 ms (with the filter kernels of before their per-ISA tiles
# and blocked operands: not measured again, no such machine since).
# AVX2 (an AMD EPYC, Zen 3, one thread, 2026-12-01, ms): the filter kernel's forward pass
# and weight gradient beat GEMM on every case (VGG-128 forward 15.5 vs 20.2, weight
# gradient 15.4 vs 21.1); its input gradient won on small images (3x3, 32 -> 64 channels
# at 16x16: 15.1 vs 18.1 per 64 images with the weight gradient; 64 -> 128 at 8x8: 16.7
# vs 18.4) and lost on larger ones (VGG-64 at 32x32: 63.2 vs 60.5; VGG-128, 128 channels
# at 16x16: 35.5 vs 34.4) and with 6 channels (LeNet conv2: 7.3 vs 6.7); LeNet conv1 (6
# filters) ran 1.9 ms on the row kernel, 2.0 on the filter one.
# The baseline and portable copies are not tuned: they take AVX2's limits.
_AVX2_LIMITS = MethodLimits(
    row_max_filters=8,
    row_grad_max_q=32,
    filter_grad_max_q=None,
    input_grad_min_channels=16,
    input_grad_max_pixels=16 * 16,
)
METHOD_LIMITS = {
    "avx512": MethodLimits(
        row_max_filters=8,
        row_grad_max_q=32,
        filter_grad_max_q=256,
        input_grad_min_channels=8,
        input_grad_max_pixels=None,
    ),
    "avx2": _AVX2_LIMITS,
    "baseline": _AVX2_LIMITS,
    "portable": _AVX2_LIMITS,
}


def _limits():
    return METHOD_LIMITS[_isa.active()]


def _conv_method(weight, stride, out_w):
    """The fastest way measured to compute this convolution on the ISA copy that runs
    (MethodLimits): the row kernel, the filter kernel, or im2col and GEMM."""
    vector, limits = _isa.vector_length(weight.dtype), _limits()
    filters = weight.shape[0]
    if stride == (1, 1) and out_w >= vector and filters < limits.row_max_filters:
        return _ROWS
    if filters >= vector // 2:
        return _FILTERS
    return _GEMM


def _weight_grad_method(weight, stride, out_w):
    """How the weight gradient is computed: as the forward pass, but by im2col and GEMM
    where C*kH*kW is past the direct kernel's limit."""
    limits = _limits()
    method = _conv_method(weight, stride, out_w)
    max_q = limits.row_grad_max_q if method == _ROWS else limits.filter_grad_max_q
    if method != _GEMM and max_q is not None and weight[0].size > max_q:
        return _GEMM
    return method


def _blocked(matrix, groups):
    """A (rows, columns) matrix as direct_conv.h blocks the filter kernel's operands: zero
    columns appended up to KP, a multiple of ``groups``, then stored as KP/groups blocks of
    (rows, groups). Returned 2-D, (KP/groups * rows, groups)."""
    rows, columns = matrix.shape
    kp = -(-columns // groups) * groups
    padded = np.zeros((rows, kp), dtype=matrix.dtype)
    padded[:, :columns] = matrix
    return np.ascontiguousarray(
        padded.reshape(rows, kp // groups, groups).transpose(1, 0, 2)
    ).reshape(-1, groups)


def _filter_padding(count, dtype):
    """KP: ``count`` filters (or channels) rounded up to the filter kernel's block."""
    groups = _isa.group_width(dtype)
    return -(-count // groups) * groups


def _packed_weights(weight, method):
    """The weights as direct_conv.h's kernel for `method` wants them, as a 2-D array:
    rows: (ceil(K/4), C*kH*kW*4), four filters side by side; filters: the transposed
    weight (C*kH*kW, K) blocked by the kernel's group width (_blocked). Zeros past K."""
    k, q = weight.shape[0], weight[0].size
    if method == _ROWS:
        blocks = -(-k // 4)
        packed = np.zeros((blocks * 4, q), dtype=weight.dtype)
        packed[:k] = weight.reshape(k, q)
        return np.ascontiguousarray(packed.reshape(blocks, 4, q).transpose(0, 2, 1)).reshape(
            blocks, q * 4
        )
    if method == _FILTERS:
        return _blocked(weight.reshape(k, q).T, _isa.group_width(weight.dtype))
    return None


def _input_grad_packing(weight, stride, padding, in_hw):
    """The flipped kernels, channels swapped, packed for the filter kernel to compute the
    input gradient as a convolution of the padded output gradient, (K*kH*kW, C) blocked
    (_blocked); or None where im2col's adjoint (GEMM and col2im) is used instead: strides
    above 1, padding of a kernel's size or more, and layers outside MethodLimits'
    input_grad_min_channels and input_grad_max_pixels (in_hw: the input's (H, W))."""
    limits = _limits()
    min_channels, max_pixels = limits.input_grad_min_channels, limits.input_grad_max_pixels
    k, c, kh, kw = weight.shape
    if (
        stride != (1, 1)
        or padding[0] >= kh
        or padding[1] >= kw
        or min_channels is None
        or c < min_channels
        or (max_pixels is not None and in_hw[0] * in_hw[1] > max_pixels)
    ):
        return None
    flipped = weight[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(k * kh * kw, c)
    return _blocked(flipped, _isa.group_width(weight.dtype))


def _scratch_per_image(x, weight, padding, out_hw, method):
    """Workspace values one image needs: its column matrix, or its padded copy."""
    columns = weight[0].size * out_hw[0] * out_hw[1]
    if method == _GEMM:
        return columns
    padded = x.shape[1] * (x.shape[2] + 2 * padding[0]) * (x.shape[3] + 2 * padding[1])
    return max(columns, padded)


def conv2d(input, weight, bias=None, stride=1, padding=0, *, save_columns=False):
    """2-D convolution (cross-correlation, as in PyTorch) of a batch of images.

    Parameters
    ----------
    input : ndarray, shape (N, C, H, W)
    weight : ndarray, shape (K, C, kH, kW)
    bias : ndarray, shape (K,), optional
    stride, padding : int or (int, int)
        Zero padding is added on both sides.
    save_columns : bool
        Also return every image's im2col matrix, shape (N, C*kH*kW * OH*OW), for
        ``conv2d_backward(..., columns=...)``: the backward pass then skips rebuilding them,
        at the cost of keeping them in memory (what ``nn.Conv2d`` does while training).
        None is returned instead when the layer is computed without them: at stride 1
        with output rows of at least 16 float32 (8 float64) values, a direct kernel
        (csrc/direct_conv.h) convolves the image in place of im2col and GEMM.

    Returns
    -------
    ndarray, shape (N, K, OH, OW)
        ``OH = floor((H + 2*padding[0] - kH) / stride[0]) + 1``, likewise OW. With
        ``save_columns``, the pair ``(out, columns)``.
    """
    func = "conv2d"
    x = image_batch(input, func)
    save_columns = flag(save_columns, "save_columns", func)
    weight = float_array(weight, "weight", func, 4, x.dtype)
    stride, padding, (oh, ow) = _conv_geometry(func, x, weight, stride, padding)
    if bias is not None:
        bias = float_array(bias, "bias", func, 1, x.dtype)
        check_shape(bias.shape, (weight.shape[0],), "bias", func, "(one per output channel)")
    out = np.empty((x.shape[0], weight.shape[0], oh, ow), dtype=x.dtype)
    n_threads = get_num_threads()
    method = _conv_method(weight, stride, ow)
    keep = save_columns and method == _GEMM
    columns = np.empty((x.shape[0], weight[0].size * oh * ow), x.dtype) if keep else None
    workspace = _ops.workspace(
        1 if keep else n_threads, _scratch_per_image(x, weight, padding, (oh, ow), method), x.dtype
    )
    run_kernel(
        _conv.conv2d_forward,
        x,
        weight,
        bias,
        *stride,
        *padding,
        method,
        _packed_weights(weight, method),
        workspace,
        columns,
        out,
        n_threads=n_threads,
    )
    return (out, columns) if save_columns else out


def _check_columns(func, columns, x, weight, out_hw):
    """The column matrices kept by the forward call: (N, C*kH*kW * OH*OW) of x's dtype."""
    columns = float_array(columns, "columns", func, 2, x.dtype)
    producer = func.removesuffix("_backward")
    shape = (x.shape[0], weight[0].size * out_hw[0] * out_hw[1])
    check_shape(
        columns.shape,
        shape,
        "columns",
        func,
        f"(from {producer}(..., save_columns=True) on this input)",
    )
    return columns


def _backward_operands(func, input, weight, stride, padding, input_grad, bias_grad):
    """A convolution backward call's validated input, weight, stride, padding, (OH, OW)
    and flags."""
    x = image_batch(input, func)
    input_grad = flag(input_grad, "input_grad", func)
    bias_grad = flag(bias_grad, "bias_grad", func)
    weight = float_array(weight, "weight", func, 4, x.dtype)
    stride, padding, out_hw = _conv_geometry(func, x, weight, stride, padding)
    return x, weight, stride, padding, out_hw, input_grad, bias_grad


class _BackwardWork:
    """What a convolution's backward kernel needs besides its inputs: the weight-gradient
    method, the outputs, the per-chunk partial sums and the per-thread workspace; and the
    gradients afterwards, in the weight's own layout."""

    def __init__(self, x, weight, stride, padding, out_hw, input_grad, bias_grad, extra=0):
        n, k, q = x.shape[0], weight.shape[0], weight[0].size
        p = out_hw[0] * out_hw[1]
        self.weight = weight
        self.method = _weight_grad_method(weight, stride, out_hw[1])
        # the filter kernel's weight gradient is transposed, (Q, KP) with KP >= K
        self.kp = _filter_padding(k, x.dtype) if self.method == _FILTERS else 0
        w_size = q * self.kp if self.method == _FILTERS else k * q
        n_chunks = -(-n // GRAD_CHUNK)
        self.grad_x = np.empty_like(x) if input_grad else None
        self.grad_w = np.empty(w_size, dtype=x.dtype)
        self.grad_b = np.empty(k, dtype=x.dtype) if bias_grad else None
        self.w_chunks = np.empty((n_chunks, w_size), dtype=x.dtype)
        self.b_chunks = np.empty((n_chunks, k), dtype=x.dtype) if bias_grad else None
        # per thread: extra values for the caller, then the image's scratch (its column
        # matrix or padded copy), its output gradient transposed for the filter kernel, and
        # its column gradient when grad_x is wanted
        self.scratch = _scratch_per_image(x, weight, padding, out_hw, self.method)
        self.dx_packed = (
            _input_grad_packing(weight, stride, padding, x.shape[2:]) if input_grad else None
        )
        if self.dx_packed is None:
            dx_scratch = q * p if input_grad else 0
        else:  # the output gradient, padded by the kernel size less one less the padding
            kh, kw = weight.shape[2:]
            dx_scratch = k * (x.shape[2] + kh - 1) * (x.shape[3] + kw - 1)
        row = extra + self.scratch + p * self.kp + dx_scratch
        self.n_threads = get_num_threads()
        self.workspace = _ops.workspace(self.n_threads, row, x.dtype)
        self.weight_t = np.ascontiguousarray(weight.reshape(k, q).T)

    def kernel_args(self, columns):
        """The kernel's arguments from `method` on, but for the thread count."""
        return (
            self.method,
            self.kp,
            self.dx_packed,
            columns,
            GRAD_CHUNK,
            self.workspace,
            self.scratch,
            self.w_chunks,
            self.b_chunks,
            self.grad_x,
            self.grad_w,
            self.grad_b,
        )

    def gradients(self):
        """(grad_x, grad_w, grad_b), grad_w in the weight's shape."""
        k, q = self.weight.shape[0], self.weight[0].size
        grad_w = self.grad_w
        if self.method == _FILTERS:
            grad_w = np.ascontiguousarray(grad_w.reshape(q, self.kp)[:, :k].T)
        return self.grad_x, grad_w.reshape(self.weight.shape), self.grad_b


def conv2d_backward(
    grad_output,
    input,
    weight,
    stride=1,
    padding=0,
    *,
    input_grad=True,
    bias_grad=True,
    columns=None,
):
    """Gradients of ``conv2d(input, weight, bias, stride, padding)``.

    Parameters
    ----------
    grad_output : ndarray, shape (N, K, OH, OW)
        Gradient of the loss with respect to the convolution's output.
    input, weight, stride, padding
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
    x, weight, stride, padding, (oh, ow), input_grad, bias_grad = _backward_operands(
        func, input, weight, stride, padding, input_grad, bias_grad
    )
    grad_out = float_array(grad_output, "grad_output", func, 4, x.dtype)
    expected = (x.shape[0], weight.shape[0], oh, ow)
    check_shape(grad_out.shape, expected, "grad_output", func, "(the shape of conv2d's output)")
    if columns is not None:
        columns = _check_columns(func, columns, x, weight, (oh, ow))
    work = _BackwardWork(x, weight, stride, padding, (oh, ow), input_grad, bias_grad)
    run_kernel(
        _conv.conv2d_backward,
        x,
        work.weight_t,
        grad_out,
        *weight.shape[2:],
        *stride,
        *padding,
        *work.kernel_args(columns),
        n_threads=work.n_threads,
    )
    return work.gradients()


def _unfold_geometry(func, in_hw, kernel_size, stride, padding):
    kernel = positive_pair(kernel_size, "kernel_size", func)
    stride = positive_pair(stride, "stride", func)
    padding = non_negative_pair(padding, "padding", func)
    return kernel, stride, padding, _output_hw(func, in_hw, kernel, stride, padding)


def im2col(input, kernel_size, stride=1, padding=0):
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


def col2im(col, input_shape, kernel_size, stride=1, padding=0):
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


def _check_indices(func, indices, shape, plane, plane_name):
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
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    pool_kernel_size=2,
    pool_stride=None,
    pool_padding=0,
    *,
    save_columns=False,
):
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
    weight = float_array(weight, "weight", func, 4, x.dtype)
    stride, padding, (oh, ow) = _conv_geometry(func, x, weight, stride, padding)
    pool_kernel, pool_stride, pool_padding, (poh, pow_) = _pool_geometry(
        func, (oh, ow), pool_kernel_size, pool_stride, pool_padding, prefix="pool_"
    )
    if bias is not None:
        bias = float_array(bias, "bias", func, 1, x.dtype)
        check_shape(bias.shape, (weight.shape[0],), "bias", func, "(one per output channel)")
    n, k = x.shape[0], weight.shape[0]
    out = np.empty((n, k, poh, pow_), dtype=x.dtype)
    indices = np.empty(out.shape, dtype=np.int64)
    n_threads = get_num_threads()
    method = _conv_method(weight, stride, ow)
    keep = save_columns and method == _GEMM
    columns = np.empty((n, weight[0].size * oh * ow), x.dtype) if keep else None
    # per thread: the image's convolution output, and its scratch unless columns are kept
    scratch = 0 if keep else _scratch_per_image(x, weight, padding, (oh, ow), method)
    workspace = _ops.workspace(n_threads, k * oh * ow + scratch, x.dtype)
    run_kernel(
        _fused.conv2d_relu_max_pool2d_forward,
        x,
        weight,
        bias,
        *stride,
        *padding,
        oh,
        ow,
        *pool_kernel,
        *pool_stride,
        *pool_padding,
        method,
        _packed_weights(weight, method),
        workspace,
        columns,
        out,
        indices,
        n_threads=n_threads,
    )
    return (out, indices, columns) if save_columns else (out, indices)


def conv2d_relu_max_pool2d_backward(
    grad_output,
    output,
    indices,
    input,
    weight,
    stride=1,
    padding=0,
    *,
    input_grad=True,
    bias_grad=True,
    columns=None,
):
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
    x, weight, stride, padding, (oh, ow), input_grad, bias_grad = _backward_operands(
        func, input, weight, stride, padding, input_grad, bias_grad
    )
    out = float_array(output, "output", func, 4, x.dtype)
    if out.shape[:2] != (x.shape[0], weight.shape[0]):
        raise ValueError(
            f"{func}: output has shape {out.shape}, expected (N, K) = "
            f"{(x.shape[0], weight.shape[0])} in front (the pooled output for this input)"
        )
    grad_out = float_array(grad_output, "grad_output", func, 4, x.dtype)
    check_shape(
        grad_out.shape,
        out.shape,
        "grad_output",
        func,
        "(the shape of output, the pooled output of the forward call)",
    )
    indices = _check_indices(
        func,
        indices,
        out.shape,
        oh * ow,
        f"OH*OW of the convolution's {(oh, ow)} output (are stride and padding those of the "
        "forward call?)",
    )
    if columns is not None:
        columns = _check_columns(func, columns, x, weight, (oh, ow))
    # per thread: the image's output gradient (K*P) before conv2d_backward's workspace
    work = _BackwardWork(
        x, weight, stride, padding, (oh, ow), input_grad, bias_grad, extra=weight.shape[0] * oh * ow
    )
    run_kernel(
        _fused.conv2d_relu_max_pool2d_backward,
        x,
        work.weight_t,
        grad_out,
        out,
        indices,
        *weight.shape[2:],
        *stride,
        *padding,
        oh,
        ow,
        *work.kernel_args(columns),
        n_threads=work.n_threads,
    )
    return work.gradients()


# ------------------------------------------------------------------------------- linear


def _linear_operands(func, input, weight):
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
