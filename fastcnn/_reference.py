"""Pure-NumPy twins of the compiled kernels, written from the definitions: the specification.

Slow and obvious on purpose: each function states its maths directly (sums over the kernel
window, loops over output positions) and shares no code with the kernels, so tests that
compare the two check the kernels against the maths.

The functions have ``fastcnn.functional``'s names, positional arguments in its order and
its results, but none of its checks or conveniences: the arguments are already valid,
every one is required (``bias`` may be None), and ``kernel``, ``stride`` and ``padding`` are
(h, w) pairs. Where they differ: ``max_pool2d`` always returns ``(out, index)``;
``conv2d`` has no ``save_columns`` and ``conv2d_backward`` no ``columns`` (they are the
compiled path's scratch); the fused ``conv2d_relu_max_pool2d`` has no twin (its tests
compare it with the three functions here, one after the other). ``batch_norm_train``,
``batch_norm_eval`` and ``batch_norm_backward`` twin the BatchNorm layers' kernels (there is
no ``functional`` batch norm); they return the statistics and weight gradients in float64.
``affine_nearest`` twins ``data.RandomAffine``'s nearest-pixel kernel: it is the transform's
NumPy path from before the kernel, the same operations in the same order, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]  # float32 or float64, NCHW where 4-D
Pair = tuple[int, int]  # (h, w)
Shape = tuple[int, ...]


def _pad(x: Array, padding: Pair) -> Array:
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _window_view(xp: Array, kernel: Pair, stride: Pair, out_hw: Sequence[int]) -> Array:
    """xp[n, c, oh*SH + i, ow*SW + j] as an array indexed [n, c, oh, ow, i, j]."""
    windows = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=(2, 3))
    return windows[:, :, :: stride[0], :: stride[1]][:, :, : out_hw[0], : out_hw[1]]


def _dilated_windows(
    xp: Array, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Sequence[int]
) -> Array:
    """xp[n, c, oh*SH + i*DH, ow*SW + j*DW] as an array indexed [n, c, oh, ow, i, j]."""
    span = [dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
    windows = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))
    windows = windows[..., :: dilation[0], :: dilation[1]]
    return windows[:, :, :: stride[0], :: stride[1]][:, :, : out_hw[0], : out_hw[1]]


def _conv_out_hw(
    x: Array, kernel: Sequence[int], stride: Pair, padding: Pair, dilation: Pair
) -> list[int]:
    """floor((H + 2*PH - DH*(kH - 1) - 1) / SH) + 1, likewise W."""
    return [
        (x.shape[2 + a] + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
        for a in (0, 1)
    ]


def conv2d(
    x: Array,
    weight: Array,
    bias: Array | None,
    stride: Pair,
    padding: Pair,
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> Array:
    """out[n, k, oh, ow] = b[k] + sum_{c,i,j} xpad[n, g*Cg + c, oh*SH + i*DH, ow*SW + j*DW]
    * w[k, c, i, j], where g = k // (K/groups) is filter k's group and Cg = C/groups.
    (dilation and groups may be left out: 1, as ``functional.conv2d``'s defaults.)"""
    kernel = weight.shape[2:]
    out_hw = _conv_out_hw(x, kernel, stride, padding, dilation)
    windows = _dilated_windows(_pad(x, padding), kernel, stride, dilation, out_hw)
    cg, kg = x.shape[1] // groups, weight.shape[0] // groups
    out = np.concatenate(
        [
            np.einsum(
                "nchwij,kcij->nkhw",
                windows[:, g * cg : (g + 1) * cg],
                weight[g * kg : (g + 1) * kg],
            )
            for g in range(groups)
        ],
        axis=1,
    )
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out.astype(x.dtype)


def conv2d_backward(
    grad_out: Array,
    x: Array,
    weight: Array,
    stride: Pair,
    padding: Pair,
    input_grad: bool = True,
    bias_grad: bool = True,
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> tuple[Array | None, Array, Array | None]:
    """Gradients of conv2d by the chain rule, group by group, one kernel offset (i, j) at
    a time."""
    kernel = weight.shape[2:]
    out_hw = grad_out.shape[2:]
    xp = _pad(x, padding)
    windows = _dilated_windows(xp, kernel, stride, dilation, out_hw)
    cg, kg = x.shape[1] // groups, weight.shape[0] // groups
    grad_w = np.empty_like(weight)
    for g in range(groups):
        filters, channels = slice(g * kg, (g + 1) * kg), slice(g * cg, (g + 1) * cg)
        grad_w[filters] = np.einsum("nkhw,nchwij->kcij", grad_out[:, filters], windows[:, channels])
    grad_b = grad_out.sum(axis=(0, 2, 3)).astype(x.dtype) if bias_grad else None
    grad_x = None
    if input_grad:
        grad_xp = np.zeros_like(xp)
        for g in range(groups):
            filters, channels = slice(g * kg, (g + 1) * kg), slice(g * cg, (g + 1) * cg)
            for i in range(kernel[0]):
                for j in range(kernel[1]):
                    top, left = i * dilation[0], j * dilation[1]
                    rows = slice(top, top + stride[0] * out_hw[0], stride[0])
                    cols = slice(left, left + stride[1] * out_hw[1], stride[1])
                    grad_xp[:, channels, rows, cols] += np.einsum(
                        "nkhw,kc->nchw", grad_out[:, filters], weight[filters, :, i, j]
                    )
        ph, pw = padding
        grad_x = grad_xp[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]].copy()
    return grad_x, grad_w, grad_b


def im2col(x: Array, kernel: Pair, stride: Pair, padding: Pair) -> Array:
    """col[(n*OH + oh)*OW + ow, (c*FH + i)*FW + j] = xpad[n, c, oh*SH + i, ow*SW + j]"""
    n, c = x.shape[:2]
    out_hw = [_out_size(x.shape[2 + a], kernel[a], stride[a], padding[a]) for a in (0, 1)]
    windows = _window_view(_pad(x, padding), kernel, stride, out_hw)  # n c oh ow i j
    rows = n * out_hw[0] * out_hw[1]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(rows, c * kernel[0] * kernel[1]).copy()


def col2im(col: Array, input_shape: Shape, kernel: Pair, stride: Pair, padding: Pair) -> Array:
    """The adjoint of im2col: every entry of col added back onto the input cell it came from."""
    n, c, h, w = input_shape
    ph, pw = padding
    out_hw = [_out_size(input_shape[2 + a], kernel[a], stride[a], padding[a]) for a in (0, 1)]
    blocks = col.reshape(n, out_hw[0], out_hw[1], c, kernel[0], kernel[1])
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=col.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = slice(i, i + stride[0] * out_hw[0], stride[0])
            cols = slice(j, j + stride[1] * out_hw[1], stride[1])
            xp[:, :, rows, cols] += blocks[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return xp[:, :, ph : ph + h, pw : pw + w].copy()


def _windows_in_bounds(
    shape: Shape, kernel: Pair, stride: Pair, padding: Pair
) -> Iterator[tuple[int, int, slice, slice, int]]:
    """For each output (oh, ow): the slice of rows and columns of x its window covers."""
    h, w = shape[2:]
    out_hw = [_out_size(shape[2 + a], kernel[a], stride[a], padding[a]) for a in (0, 1)]
    for oh in range(out_hw[0]):
        for ow in range(out_hw[1]):
            h0, w0 = oh * stride[0] - padding[0], ow * stride[1] - padding[1]
            rows = slice(max(h0, 0), min(h0 + kernel[0], h))
            cols = slice(max(w0, 0), min(w0 + kernel[1], w))
            # the window's extent in the padded input (for count_include_pad)
            padded = (min(h0 + kernel[0], h + padding[0]) - h0) * (
                min(w0 + kernel[1], w + padding[1]) - w0
            )
            yield oh, ow, rows, cols, padded


def max_pool2d(x: Array, kernel: Pair, stride: Pair, padding: Pair) -> tuple[Array, Array]:
    """out = max over the window (never padding); index = h*W + w of the first maximum, or
    of the last NaN if the window holds one (PyTorch's CPU rules)."""
    n, c, h, w = x.shape
    out_hw = [_out_size(x.shape[2 + a], kernel[a], stride[a], padding[a]) for a in (0, 1)]
    out = np.empty((n, c, *out_hw), dtype=x.dtype)
    index = np.empty((n, c, *out_hw), dtype=np.int64)
    for oh, ow, rows, cols, _ in _windows_in_bounds(x.shape, kernel, stride, padding):
        width = cols.stop - cols.start
        window = x[:, :, rows, cols].reshape(n, c, (rows.stop - rows.start) * width)
        flat = np.argmax(window, axis=2)  # first maximum
        nan = np.isnan(window)
        last_nan = window.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
        flat = np.where(nan.any(axis=2), last_nan, flat)
        index[:, :, oh, ow] = (rows.start + flat // width) * w + cols.start + flat % width
        out[:, :, oh, ow] = np.take_along_axis(window, flat[:, :, None], axis=2)[:, :, 0]
    return out, index


def max_pool2d_backward(grad_out: Array, index: Array, input_shape: Shape) -> Array:
    """grad_x[n, c].flat[index[n, c, oh, ow]] += grad_out[n, c, oh, ow]"""
    n, c, h, w = input_shape
    grad_x = np.zeros((n * c, h * w), dtype=grad_out.dtype)
    rows = np.repeat(np.arange(n * c), index.shape[2] * index.shape[3])
    np.add.at(grad_x, (rows, index.reshape(-1)), grad_out.reshape(-1))
    return grad_x.reshape(input_shape)


def avg_pool2d(
    x: Array, kernel: Pair, stride: Pair, padding: Pair, count_include_pad: bool = True
) -> Array:
    """out = sum over the window / (window size in the padded input, or cells of x)"""
    n, c = x.shape[:2]
    out_hw = [_out_size(x.shape[2 + a], kernel[a], stride[a], padding[a]) for a in (0, 1)]
    out = np.empty((n, c, *out_hw), dtype=x.dtype)
    for oh, ow, rows, cols, padded in _windows_in_bounds(x.shape, kernel, stride, padding):
        window = x[:, :, rows, cols]
        divisor = padded if count_include_pad else window.shape[2] * window.shape[3]
        out[:, :, oh, ow] = window.sum(axis=(2, 3)) / divisor
    return out


def avg_pool2d_backward(
    grad_out: Array,
    input_shape: Shape,
    kernel: Pair,
    stride: Pair,
    padding: Pair,
    count_include_pad: bool = True,
) -> Array:
    """grad_x[cells of each window] += grad_out / divisor"""
    grad_x = np.zeros(input_shape, dtype=grad_out.dtype)
    for oh, ow, rows, cols, padded in _windows_in_bounds(input_shape, kernel, stride, padding):
        cells = (rows.stop - rows.start) * (cols.stop - cols.start)
        divisor = padded if count_include_pad else cells
        grad_x[:, :, rows, cols] += (grad_out[:, :, oh, ow] / divisor)[:, :, None, None]
    return grad_x


def linear(x: Array, weight: Array, bias: Array | None) -> Array:
    """y[..., o] = b[o] + sum_i x[..., i] * w[o, i]"""
    out = np.einsum("...i,oi->...o", x, weight)
    return (out if bias is None else out + bias).astype(x.dtype)


def linear_backward(
    grad_out: Array, x: Array, weight: Array, input_grad: bool = True, bias_grad: bool = True
) -> tuple[Array | None, Array, Array | None]:
    """dx = g . w;  dw[o, i] = sum over rows of g[., o] x[., i];  db = sum over rows of g"""
    rows_g = grad_out.reshape(-1, weight.shape[0])
    rows_x = x.reshape(-1, weight.shape[1])
    grad_w = np.einsum("no,ni->oi", rows_g, rows_x).astype(x.dtype)
    grad_b = rows_g.sum(axis=0).astype(x.dtype) if bias_grad else None
    grad_x = np.einsum("...o,oi->...i", grad_out, weight).astype(x.dtype) if input_grad else None
    return grad_x, grad_w, grad_b


def relu(x: Array) -> Array:
    """max(x, 0), NaN kept"""
    return np.where(x <= 0, np.zeros_like(x), x)


def relu_backward(grad_out: Array, out: Array) -> Array:
    """grad where out is not <= 0 (positive or NaN), else 0"""
    return np.where(out <= 0, np.zeros_like(grad_out), grad_out)


def add(a: Array, b: Array) -> Array:
    """a + b"""
    return a + b


def add_relu(a: Array, b: Array) -> Array:
    """relu(a + b)"""
    return relu(a + b)


# ------------------------------------------------ activations and Dropout2d of fastcnn.nn
# Element by element with Python's math module, from the definitions (and, at the kinks,
# torch's gradient conventions); the layers use vectorised NumPy/SciPy instead.


def _elementwise(fn: Any, x: Array) -> Array:
    return np.array([fn(float(v)) for v in x.ravel()], dtype=x.dtype).reshape(x.shape)


def leaky_relu(x: Array, negative_slope: float) -> Array:
    """x if x > 0 else negative_slope * x"""
    return _elementwise(lambda v: v if v > 0 else negative_slope * v, x)


def leaky_relu_backward(grad_out: Array, x: Array, negative_slope: float) -> Array:
    """g where x > 0, else g * negative_slope (at 0 too, as torch)"""
    return grad_out * _elementwise(lambda v: 1.0 if v > 0 else negative_slope, x)


def elu(x: Array, alpha: float) -> Array:
    """x if x > 0 else alpha * (e^x - 1)"""
    return _elementwise(lambda v: v if v > 0 else alpha * math.expm1(v), x)


def elu_backward(grad_out: Array, x: Array, alpha: float) -> Array:
    """g where x > 0, else g * alpha * e^x (alpha at 0, as torch)"""
    return grad_out * _elementwise(lambda v: 1.0 if v > 0 else alpha * math.exp(v), x)


def _normal_cdf(v: float) -> float:
    return 0.5 * math.erfc(-v / math.sqrt(2))


def _normal_pdf(v: float) -> float:
    return math.exp(-v * v / 2) / math.sqrt(2 * math.pi)


def _tanh_inner(v: float) -> float:
    return math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)


def gelu(x: Array, approximate: str) -> Array:
    """x * Phi(x), or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) for 'tanh'"""
    if approximate == "tanh":
        return _elementwise(lambda v: 0.5 * v * (1 + math.tanh(_tanh_inner(v))), x)
    return _elementwise(lambda v: v * _normal_cdf(v), x)


def gelu_backward(grad_out: Array, x: Array, approximate: str) -> Array:
    """g * d/dx of gelu: Phi(x) + x phi(x), or the tanh form's derivative"""

    def tanh_form(v: float) -> float:
        t = math.tanh(_tanh_inner(v))
        inner = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * v * v)
        return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * inner

    def exact(v: float) -> float:
        return _normal_cdf(v) + v * _normal_pdf(v)

    return grad_out * _elementwise(tanh_form if approximate == "tanh" else exact, x)


def hardswish(x: Array) -> Array:
    """x * min(max(x + 3, 0), 6) / 6"""
    return _elementwise(lambda v: v * min(max(v + 3, 0.0), 6.0) / 6, x)


def hardswish_backward(grad_out: Array, x: Array) -> Array:
    """g * (0 for x <= -3, x / 3 + 1/2 for -3 < x < 3, 1 for x >= 3), torch's kinks"""
    return grad_out * _elementwise(lambda v: 0.0 if v <= -3 else v / 3 + 0.5 if v < 3 else 1.0, x)


def dropout2d(x: Array, keep: Array, p: float) -> Array:
    """Each plane x[n, c] (x[c] for one image) times keep[n, c] / (1 - p)"""
    out = np.empty_like(x)
    for plane in np.ndindex(*x.shape[:-2]):
        out[plane] = x[plane] * (keep[plane] / (1 - p))
    return out


# ------------------------------------------------ adaptive pooling and normalisation
# torch.nn.functional's names (fastcnn.functional has no such functions: the layers of
# fastcnn.nn are their only checked entry points). Inputs are (N, C, H, W) batches for the
# pools; output_size is an (OH, OW) pair of ints.


def _adaptive_bin(index: int, size: int, count: int) -> range:
    """The cells of bin ``index`` of ``count`` over ``size``:
    [floor(index * size / count), ceil((index + 1) * size / count))"""
    # a quotient of small ints is never within float rounding of an integer it is not
    return range(int(np.floor(index * size / count)), int(np.ceil((index + 1) * size / count)))


def _adaptive_bins(
    input_hw: Sequence[int], output_size: Pair
) -> Iterator[tuple[int, int, range, range]]:
    """(i, j, rows, cols) of every output (i, j) of an adaptive pool."""
    for i in range(output_size[0]):
        for j in range(output_size[1]):
            yield (
                i,
                j,
                _adaptive_bin(i, input_hw[0], output_size[0]),
                _adaptive_bin(j, input_hw[1], output_size[1]),
            )


def adaptive_avg_pool2d(x: Array, output_size: Pair) -> Array:
    """out[n, c, i, j] = sum of x[n, c] over bin (i, j) / its number of cells"""
    out = np.empty((*x.shape[:2], *output_size), dtype=x.dtype)
    for i, j, rows, cols in _adaptive_bins(x.shape[2:], output_size):
        window = x[:, :, rows.start : rows.stop, cols.start : cols.stop]
        out[:, :, i, j] = window.sum(axis=(2, 3)) / (len(rows) * len(cols))
    return out


def adaptive_avg_pool2d_backward(grad_out: Array, input_shape: Shape) -> Array:
    """grad_x[cells of bin (i, j)] += grad_out[i, j] / its number of cells"""
    grad_x = np.zeros(input_shape, dtype=grad_out.dtype)
    for i, j, rows, cols in _adaptive_bins(input_shape[2:], grad_out.shape[2:]):
        share = grad_out[:, :, i, j] / (len(rows) * len(cols))
        grad_x[:, :, rows.start : rows.stop, cols.start : cols.stop] += share[:, :, None, None]
    return grad_x


def adaptive_max_pool2d(x: Array, output_size: Pair) -> tuple[Array, Array]:
    """out = max over bin (i, j); index = h*W + w of the cell taken, scanning the bin in
    row-major order and taking a value greater than the best so far, or any NaN (PyTorch's
    CPU loop: the first maximum, or the last NaN). Its backward is max_pool2d_backward's."""
    n, c, _, width = x.shape
    out = np.empty((n, c, *output_size), dtype=x.dtype)
    index = np.empty((n, c, *output_size), dtype=np.int64)
    for i, j, rows, cols in _adaptive_bins(x.shape[2:], output_size):
        for image, channel in np.ndindex(n, c):
            best, taken = -np.inf, rows.start * width + cols.start
            for h in rows:
                for w in cols:
                    value = x[image, channel, h, w]
                    if value > best or np.isnan(value):
                        best, taken = value, h * width + w
            out[image, channel, i, j], index[image, channel, i, j] = best, taken
    return out, index


def group_norm(
    x: Array, num_groups: int, weight: Array | None, bias: Array | None, eps: float
) -> Array:
    """Per sample n and group g of C / num_groups consecutive channels, with the mean and
    the biased variance of its values (in float64):
    out[n, c, ...] = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]"""
    n, channels = x.shape[:2]
    per_group = channels // num_groups
    out: Array = np.empty(x.shape, dtype=np.float64)
    for image in range(n):
        for group in range(num_groups):
            values = x[image, group * per_group : (group + 1) * per_group].astype(np.float64)
            mean = values.sum() / values.size
            var = ((values - mean) ** 2).sum() / values.size
            out[image, group * per_group : (group + 1) * per_group] = (values - mean) / np.sqrt(
                var + eps
            )
    per_channel = (1, channels) + (1,) * (x.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(per_channel)
    if bias is not None:
        out = out + bias.reshape(per_channel)
    return out.astype(x.dtype)


def layer_norm(
    x: Array, normalized_shape: Shape, weight: Array | None, bias: Array | None, eps: float
) -> Array:
    """Per sample (each index of the leading dims), over its trailing normalized_shape
    values, with their mean and biased variance (in float64):
    out = (x - mean) / sqrt(var + eps) * weight + bias (weight, bias of normalized_shape)"""
    size = int(np.prod(normalized_shape))
    rows = x.reshape(x.size // size, size).astype(np.float64)
    out: Array = np.empty(rows.shape, dtype=np.float64)
    for r, values in enumerate(rows):
        mean = values.sum() / size
        var = ((values - mean) ** 2).sum() / size
        out[r] = (values - mean) / np.sqrt(var + eps)
    out = out.reshape(x.shape)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out.astype(x.dtype)


def _channel_values(x: Array, channel: int) -> Array:
    """x[:, channel, ...] as float64: the values one BatchNorm channel normalises over."""
    return x[:, channel].astype(np.float64)


def batch_norm_train(
    x: Array, weight: Array | None, bias: Array | None, eps: float
) -> tuple[Array, Array, Array]:
    """(out, mean, var) with the batch's statistics: per channel c, over n and the
    trailing dims, mean and biased variance (in float64) and
    out[:, c] = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]"""
    channels = x.shape[1]
    mean, var = np.empty(channels), np.empty(channels)
    out: Array = np.empty(x.shape, dtype=np.float64)
    for c in range(channels):
        values = _channel_values(x, c)
        mean[c] = values.sum() / values.size
        var[c] = ((values - mean[c]) ** 2).sum() / values.size
        out[:, c] = (values - mean[c]) / np.sqrt(var[c] + eps)
        out[:, c] = out[:, c] * (1 if weight is None else weight[c])
        out[:, c] = out[:, c] + (0 if bias is None else bias[c])
    return out.astype(x.dtype), mean, var


def batch_norm_eval(
    x: Array, mean: Array, var: Array, weight: Array | None, bias: Array | None, eps: float
) -> Array:
    """out[:, c] = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c], with the given
    (running) statistics, in float64"""
    out: Array = np.empty(x.shape, dtype=np.float64)
    for c in range(x.shape[1]):
        out[:, c] = (_channel_values(x, c) - mean[c]) / np.sqrt(np.float64(var[c]) + eps)
        out[:, c] = out[:, c] * (1 if weight is None else weight[c])
        out[:, c] = out[:, c] + (0 if bias is None else bias[c])
    return out.astype(x.dtype)


def batch_norm_backward(
    grad_out: Array,
    x: Array,
    mean: Array,
    var: Array,
    weight: Array | None,
    eps: float,
    batch_stats: bool,
) -> tuple[Array, Array, Array]:
    """(grad_x, grad_weight, grad_bias) of out = x_hat * weight + bias, x_hat =
    (x - mean) / sqrt(var + eps), per channel over M = N * (trailing sizes) values:
    grad_bias = sum(g), grad_weight = sum(g * x_hat); grad_x = weight * g / sqrt(var + eps),
    and with batch_stats (mean and var are the batch's, functions of x) the chain rule
    through them: weight / sqrt(var + eps) * (g - sum(g) / M - x_hat * sum(g * x_hat) / M)"""
    channels = x.shape[1]
    grad_x: Array = np.empty(x.shape, dtype=np.float64)
    grad_weight, grad_bias = np.empty(channels), np.empty(channels)
    for c in range(channels):
        g, values = _channel_values(grad_out, c), _channel_values(x, c)
        std = np.sqrt(np.float64(var[c]) + eps)
        x_hat = (values - mean[c]) / std
        grad_bias[c], grad_weight[c] = g.sum(), (g * x_hat).sum()
        scale = (1 if weight is None else weight[c]) / std
        if batch_stats:
            grad_x[:, c] = scale * (g - g.sum() / g.size - x_hat * (g * x_hat).sum() / g.size)
        else:
            grad_x[:, c] = scale * g
    return grad_x.astype(x.dtype), grad_weight, grad_bias


# ------------------------------------------------------------------------- augmentation


def affine_nearest(
    x: Array,
    cos_over_scale: Array,
    sin_over_scale: Array,
    translate_x: Array,
    translate_y: Array,
    fill: float,
) -> Array:
    """RandomAffine's nearest-pixel resampling of the float32 (N, C, H, W) x: output pixel
    (r, c) of image n is x[n, :, rint(row), rint(col)], or ``fill`` where that is outside
    the image, at the inverse-transformed position, computed in float64 as
    dx = (c - centre_x) - translate_x[n], dy = (r - centre_y) - translate_y[n],
    row = (-sin * dx + cos * dy) + centre_y, col = (cos * dx + sin * dy) + centre_x, with
    cos and sin the image's cos_over_scale and sin_over_scale and the centre
    ((H - 1) / 2, (W - 1) / 2)"""
    n, _, height, width = x.shape
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    cos, sin = cos_over_scale[:, None, None], sin_over_scale[:, None, None]
    dx = np.arange(width)[None, None, :] - centre_x - translate_x[:, None, None]
    dy = np.arange(height)[None, :, None] - centre_y - translate_y[:, None, None]
    rows = np.rint(-sin * dx + cos * dy + centre_y)  # (N, H, W)
    columns = np.rint(cos * dx + sin * dy + centre_x)
    inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width)
    rows, columns = (np.where(inside, p, 0).astype(np.intp) for p in (rows, columns))
    pixels = x[np.arange(n)[:, None, None], :, rows, columns]  # (N, H, W, C)
    out = np.where(inside[..., None], pixels, np.float32(fill))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
