"""MaxPool2d and AvgPool2d: the layers over fastcnn's pooling kernels (``fastcnn._ops``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn import _ops
from fastcnn._validation import (
    flag,
    float_input,
    grad_like,
    input_ndim,
    non_empty_planes,
    pool_window,
    window_output_hw,
)
from fastcnn.nn.module import Module

__all__ = ["AvgPool2d", "MaxPool2d"]


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
