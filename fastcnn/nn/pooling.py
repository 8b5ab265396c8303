"""MaxPool2d and AvgPool2d: the layers over fastcnn's pooling kernels (``fastcnn._ops``);
AdaptiveAvgPool2d and AdaptiveMaxPool2d: the same kernels where the bins are one window
sliding without overlap, NumPy over the bins otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn import _ops
from fastcnn._validation import (
    flag,
    float_input,
    grad_like,
    input_ndim,
    is_int,
    non_empty_planes,
    pool_window,
    window_output_hw,
)
from fastcnn.nn.module import Module

__all__ = ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "MaxPool2d"]


class _Pool2d(Module):
    """Shared hyperparameter checks, input check and repr of the 2-D pools."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = pool_window(
            kernel_size, stride, padding, type(self).__name__
        )
        # Reported as given (an int stays an int), as PyTorch's repr does.
        self._given = (kernel_size, kernel_size if stride is None else stride, padding)

    def _input(self, input: ArrayLike) -> tuple[NDArray, tuple[int, int]]:
        """The input as a C-contiguous (N, C, H, W) float batch, and the output's (OH, OW)."""
        name = type(self).__name__
        x = float_input(input, name)
        input_ndim(x, name, (4,))
        non_empty_planes(x, name)
        out_hw = window_output_hw(name, x.shape[2:], self.kernel_size, self.stride, self.padding)
        return np.ascontiguousarray(x), out_hw

    def extra_repr(self) -> str:
        kernel_size, stride, padding = self._given
        return f"kernel_size={kernel_size}, stride={stride}, padding={padding}"


class MaxPool2d(_Pool2d):
    """2-D max pooling (PyTorch's CPU rules: ties go to the first maximum in row-major order,
    a NaN wins, padding is never chosen).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default: kernel_size
    padding : int or (int, int), default 0
        At most half the kernel size.

    Shape
    -----
    Input (N, C, H, W), output (N, C, OH, OW) with::

        OH = floor((H + 2 * padding[0] - kernel_size[0]) / stride[0]) + 1
    """

    def forward(self, input: ArrayLike) -> NDArray:
        x, out_hw = self._input(input)
        out, indices = _ops.max_pool2d(x, self.kernel_size, self.stride, self.padding, out_hw)
        self._save_for_backward(indices=indices, input_shape=x.shape, dtype=x.dtype)
        return out

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """The input gradient: each output's gradient added to the input cell it took."""
        saved = self._saved()
        if not input_grad:
            return None
        indices = saved["indices"]
        grad = grad_like(grad_output, indices.shape, saved["dtype"], "MaxPool2d")
        return _ops.max_pool2d_backward(grad, indices, saved["input_shape"])


class AvgPool2d(_Pool2d):
    """2-D average pooling.

    Parameters
    ----------
    kernel_size, stride, padding
        As in ``MaxPool2d``.
    count_include_pad : bool, default True
        Count padding cells (as zeros) in the divisor, as PyTorch does by default.
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = flag(count_include_pad, "count_include_pad", "AvgPool2d")

    def forward(self, input: ArrayLike) -> NDArray:
        x, out_hw = self._input(input)
        out = _ops.avg_pool2d(
            x, self.kernel_size, self.stride, self.padding, out_hw, self.count_include_pad
        )
        self._save_for_backward(input_shape=x.shape, output_shape=out.shape, dtype=x.dtype)
        return out

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """The input gradient: each output's gradient shared out over its window."""
        saved = self._saved()
        if not input_grad:
            return None
        grad = grad_like(grad_output, saved["output_shape"], saved["dtype"], "AvgPool2d")
        return _ops.avg_pool2d_backward(
            grad,
            saved["input_shape"],
            self.kernel_size,
            self.stride,
            self.padding,
            self.count_include_pad,
        )

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.count_include_pad else text + ", count_include_pad=False"


# ------------------------------------------------------------------- adaptive pooling

Pair = tuple[int, int]
OutputSize = int | None | Sequence[int | None]


def _adaptive_output_size(output_size: OutputSize, owner: str) -> tuple[int | None, int | None]:
    """``output_size`` as an (OH, OW) pair of ints >= 0 or None (None: the input's size)."""
    given = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(given) != 2 or not all(v is None or is_int(v) for v in given):
        raise TypeError(
            f"{owner}: output_size must be an int, None or a pair of them (None keeps that "
            f"dimension of the input), got {output_size!r}"
        )
    if any(v is not None and v < 0 for v in given):
        raise ValueError(f"{owner}: output_size must be >= 0, got {output_size!r}")
    height, width = (None if v is None else int(v) for v in given)
    return height, width


def _bins(size: int, count: int) -> list[slice]:
    """PyTorch's adaptive bins along one axis: bin i covers
    [floor(i * size / count), ceil((i + 1) * size / count)); neighbours may overlap."""
    return [slice(i * size // count, -(-(i + 1) * size // count)) for i in range(count)]


def _even_kernel(in_hw: tuple[int, ...], out_hw: Pair) -> Pair | None:
    """The kernel (= stride) of the plain pool with the same bins, when the output size
    divides the input's (then every bin is one window); else None."""
    if min(out_hw) < 1 or in_hw[0] % out_hw[0] or in_hw[1] % out_hw[1]:
        return None
    return in_hw[0] // out_hw[0], in_hw[1] // out_hw[1]


def _first_max_or_last_nan(windows: NDArray) -> NDArray:
    """The index along the last axis that PyTorch's CPU max-pool takes: the first maximum,
    or the last NaN if there is one (NaN propagates)."""
    chosen = np.argmax(windows, axis=-1)
    nan = np.isnan(windows)
    if nan.any():
        last_nan = windows.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
        chosen = np.where(nan.any(axis=-1), last_nan, chosen)
    return chosen


class _AdaptivePool2d(Module):
    """The output-size check, input check and repr of the adaptive pools."""

    def __init__(self, output_size: OutputSize) -> None:
        super().__init__()
        self._sizes = _adaptive_output_size(output_size, type(self).__name__)
        self.output_size = output_size  # as given, for the repr (PyTorch's)

    def _input(self, input: ArrayLike) -> tuple[NDArray, Pair, bool]:
        """The input as a C-contiguous (N, C, H, W) batch (one image of (C, H, W) input,
        as PyTorch accepts), the output's (OH, OW), and whether the input was unbatched."""
        name = type(self).__name__
        x = float_input(input, name)
        input_ndim(x, name, (3, 4))
        if min(x.shape[-3:]) < 1:
            raise ValueError(
                f"{name}: input of shape {x.shape} has an empty channel or spatial dimension"
            )
        height, width = self._sizes
        out_hw = (
            x.shape[-2] if height is None else height,
            x.shape[-1] if width is None else width,
        )
        unbatched = x.ndim == 3
        return np.ascontiguousarray(x[None] if unbatched else x), out_hw, unbatched

    def _save(self, x: NDArray, out: NDArray, unbatched: bool, **values: Any) -> None:
        """Keep what backward needs: the batch forms' shapes, the dtype, ``values``."""
        self._save_for_backward(
            input_shape=x.shape,
            output_shape=out.shape,
            unbatched=unbatched,
            dtype=x.dtype,
            **values,
        )

    def _grad(self, grad_output: ArrayLike, saved: dict[str, Any]) -> NDArray:
        """The output gradient, checked against the shape of the output as returned, as an
        (N, C, OH, OW) batch."""
        batch_shape = saved["output_shape"]
        shape = batch_shape[1:] if saved["unbatched"] else batch_shape
        grad = grad_like(grad_output, shape, saved["dtype"], type(self).__name__)
        return grad.reshape(batch_shape)

    @staticmethod
    def _unbatch(array: NDArray, unbatched: bool) -> NDArray:
        """The one image of a batch made from unbatched input, else the batch."""
        return array[0] if unbatched else array

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """2-D average pooling to a fixed output size, whatever the input's: output (i, j) is
    the mean of PyTorch's bin i of the rows and bin j of the columns (see ``_bins``).

    Parameters
    ----------
    output_size : int, None or a pair of them
        (OH, OW); an int means (n, n), None keeps that dimension of the input. 1 is global
        average pooling, as ResNet and MobileNet end with.

    Shape
    -----
    Input (N, C, H, W) or (C, H, W), output (N, C, OH, OW) or (C, OH, OW).
    """

    def forward(self, input: ArrayLike) -> NDArray:
        x, out_hw, unbatched = self._input(input)
        kernel = _even_kernel(x.shape[2:], out_hw)
        if out_hw == (1, 1):  # global average pooling: one reduction
            out = x.mean(axis=(2, 3), keepdims=True)
        elif kernel is not None:
            out = _ops.avg_pool2d(x, kernel, kernel, (0, 0), out_hw, True)
        else:
            out = _bin_means(x, out_hw)
        self._save(x, out, unbatched)
        return self._unbatch(out, unbatched)

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """The input gradient: each output's gradient shared out over its bin."""
        saved = self._saved()
        if not input_grad:
            return None
        grad = self._grad(grad_output, saved)
        input_shape = saved["input_shape"]
        out_hw = grad.shape[2:]
        kernel = _even_kernel(input_shape[2:], out_hw)
        if out_hw == (1, 1):
            plane = input_shape[2] * input_shape[3]
            grad_x = np.broadcast_to(grad / plane, input_shape).copy()
        elif kernel is not None:
            grad_x = _ops.avg_pool2d_backward(grad, input_shape, kernel, kernel, (0, 0), True)
        else:
            grad_x = _bin_means_backward(grad, input_shape)
        return self._unbatch(grad_x, saved["unbatched"])


def _bin_means(x: NDArray, out_hw: Pair) -> NDArray:
    """Each bin's mean, as the mean over its columns of the means over its rows: OH + OW
    vectorised slices, not a loop over pixels."""
    (n, c, height, width), (out_h, out_w) = x.shape, out_hw
    row_means = np.empty((n, c, out_h, width), x.dtype)
    for i, rows in enumerate(_bins(height, out_h)):
        row_means[:, :, i] = x[:, :, rows].mean(axis=2)
    out = np.empty((n, c, out_h, out_w), x.dtype)
    for j, cols in enumerate(_bins(width, out_w)):
        out[:, :, :, j] = row_means[:, :, :, cols].mean(axis=3)
    return out


def _bin_means_backward(grad: NDArray, input_shape: tuple[int, ...]) -> NDArray:
    """The adjoint of ``_bin_means``: the two steps backwards, each output's gradient
    divided by its bin's width, then each row mean's by its bin's height."""
    (n, c, height, width), (out_h, out_w) = input_shape, grad.shape[2:]
    grad_row_means = np.zeros((n, c, out_h, width), grad.dtype)
    for j, cols in enumerate(_bins(width, out_w)):
        grad_row_means[:, :, :, cols] += grad[:, :, :, j : j + 1] / (cols.stop - cols.start)
    grad_x = np.zeros(input_shape, grad.dtype)
    for i, rows in enumerate(_bins(height, out_h)):
        grad_x[:, :, rows] += grad_row_means[:, :, i : i + 1] / (rows.stop - rows.start)
    return grad_x


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """2-D max pooling to a fixed output size, over PyTorch's bins (as
    ``AdaptiveAvgPool2d``), with PyTorch's CPU rules: the first maximum in row-major order,
    or the last NaN of a bin that holds one.

    Parameters
    ----------
    output_size : int, None or a pair of them
        As in ``AdaptiveAvgPool2d``.
    return_indices : bool, default False
        Also return, per output, the index ``h * W + w`` of the input cell it took (int64),
        as ``torch.nn.AdaptiveMaxPool2d`` does.
    """

    def __init__(self, output_size: OutputSize, return_indices: bool = False) -> None:
        super().__init__(output_size)
        self.return_indices = flag(return_indices, "return_indices", type(self).__name__)

    def forward(self, input: ArrayLike) -> NDArray | tuple[NDArray, NDArray]:
        x, out_hw, unbatched = self._input(input)
        kernel = _even_kernel(x.shape[2:], out_hw)
        if out_hw == (1, 1):  # global max pooling: one reduction over each plane
            planes = x.reshape(*x.shape[:2], x.shape[2] * x.shape[3])
            chosen = _first_max_or_last_nan(planes)[:, :, None]
            out = np.take_along_axis(planes, chosen, axis=2)[:, :, :, None]
            indices = chosen[:, :, :, None]
        elif kernel is not None:
            out, indices = _ops.max_pool2d(x, kernel, kernel, (0, 0), out_hw)
        else:
            out, indices = _bin_maxima(x, out_hw)
        self._save(x, out, unbatched, indices=indices)
        out, indices = self._unbatch(out, unbatched), self._unbatch(indices, unbatched)
        return (out, indices) if self.return_indices else out

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """The input gradient: each output's gradient added to the input cell it took."""
        saved = self._saved()
        if not input_grad:
            return None
        grad = self._grad(grad_output, saved)
        indices = np.ascontiguousarray(saved["indices"])
        grad_x = _ops.max_pool2d_backward(grad, indices, saved["input_shape"])
        return self._unbatch(grad_x, saved["unbatched"])


def _bin_maxima(x: NDArray, out_hw: Pair) -> tuple[NDArray, NDArray]:
    """Each bin's maximum and the index h * W + w it is at; one vectorised slice per bin."""
    (n, c, height, width), (out_h, out_w) = x.shape, out_hw
    out = np.empty((n, c, out_h, out_w), x.dtype)
    indices = np.empty((n, c, out_h, out_w), np.int64)
    for i, rows in enumerate(_bins(height, out_h)):
        for j, cols in enumerate(_bins(width, out_w)):
            bin_width = cols.stop - cols.start
            windows = x[:, :, rows, cols].reshape(n, c, (rows.stop - rows.start) * bin_width)
            chosen = _first_max_or_last_nan(windows)
            out[:, :, i, j] = np.take_along_axis(windows, chosen[:, :, None], axis=2)[:, :, 0]
            row, col = rows.start + chosen // bin_width, cols.start + chosen % bin_width
            indices[:, :, i, j] = row * width + col
    return out, indices
