"""Flatten: merge a range of dimensions into one."""

import numpy as np

from fastcnn._validation import grad_like, is_int
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

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not is_int(value):
                raise TypeError(
                    f"Flatten: {name} must be an int, got {type(value).__name__} {value!r}"
                )
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def _dims(self, ndim):
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

    def forward(self, input):
        x = np.asarray(input)
        output_shape = self._output_shape(x.shape)
        self._save_for_backward(input_shape=x.shape, output_shape=output_shape)
        return x.reshape(output_shape)

    def backward(self, grad_output, input_grad=True):
        saved = self._saved()
        if not input_grad:
            return None
        grad = grad_like(grad_output, saved["output_shape"], None, "Flatten")
        return grad.reshape(saved["input_shape"])

    def _output_shape(self, shape):
        if not shape:
            return (1,)
        start, end = self._dims(len(shape))
        merged = 1
        for size in shape[start : end + 1]:
            merged *= size
        return (*shape[:start], merged, *shape[end + 1 :])

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
