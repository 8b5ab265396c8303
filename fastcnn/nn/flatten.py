"""Flatten: merge a range of dimensions into one."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._validation import grad_like, integer, pass_through_dtype
from fastcnn.nn.module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """Merge dimensions ``start_dim`` to ``end_dim`` (inclusive) into one; a view, no copy
    for contiguous input.

    Parameters
    ----------
    start_dim : int, default 1
        The default keeps the batch dimension: (N, C, H, W) -> (N, C*H*W).
    end_dim : int, default -1
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = integer(start_dim, "start_dim", "Flatten")
        self.end_dim = integer(end_dim, "end_dim", "Flatten")

    def _dims(self, ndim: int) -> tuple[int, int]:
        """start_dim and end_dim as non-negative axes of an ``ndim``-D input."""
        low, high = -max(ndim, 1), max(ndim, 1) - 1
        for dim in (self.start_dim, self.end_dim):
            if not low <= dim <= high:
                raise IndexError(
                    f"Flatten: Dimension out of range (expected to be in range of [{low}, "
                    f"{high}], but got {dim}) for a {ndim}-D input"
                )
        start, end = self.start_dim % max(ndim, 1), self.end_dim % max(ndim, 1)
        if start > end:
            raise ValueError(
                f"Flatten: start_dim cannot come after end_dim (start_dim={self.start_dim}, "
                f"end_dim={self.end_dim} for a {ndim}-D input)"
            )
        return start, end

    def forward(self, input: ArrayLike) -> NDArray:
        x = np.asarray(input)
        output_shape = self._output_shape(x.shape)
        self._save_for_backward(
            input_shape=x.shape, output_shape=output_shape, dtype=pass_through_dtype(x)
        )
        return x.reshape(output_shape)

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """The output gradient in the input's shape (and dtype, for a float input)."""
        saved = self._saved()
        if not input_grad:
            return None
        grad = grad_like(grad_output, saved["output_shape"], saved["dtype"], "Flatten")
        return grad.reshape(saved["input_shape"])

    def _output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not shape:
            return (1,)
        start, end = self._dims(len(shape))
        merged = 1
        for size in shape[start : end + 1]:
            merged *= size
        return (*shape[:start], merged, *shape[end + 1 :])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
