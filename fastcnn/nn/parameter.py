"""Parameter: a learnable array and its gradient."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray


class Parameter:
    """A learnable array of a Module.

    Layers also keep temporaries (the input cached for backward, say) as attributes; this type
    is how ``Module.parameters()`` tells the two apart, as ``torch.nn.Parameter`` does.

    Attributes
    ----------
    data : numpy.ndarray
        The values, updated in place by optimizers. Assigning a new array is allowed when it
        has the same shape and dtype (the layer's sizes and its other parameters depend on
        them): it is stored C-contiguous. ``to`` changes the dtype.
    grad : numpy.ndarray or None
        Sum of the gradients of every ``backward`` since the last ``zero_grad``; None before
        the first backward (or after ``zero_grad(set_to_none=True)``), as in PyTorch.
    """

    def __init__(self, data: ArrayLike, requires_grad: bool = True) -> None:
        self._data = _floating(data)
        self.grad: NDArray[Any] | None = None
        self.requires_grad = bool(requires_grad)

    @property
    def data(self) -> NDArray[Any]:
        return self._data

    @data.setter
    def data(self, value: ArrayLike) -> None:
        # The layers trust their parameters' shapes (checked at construction), and the
        # kernels read them as C-contiguous: a new array of another shape would reach them
        # unchecked.
        value = _floating(value)
        if value.shape != self._data.shape:
            raise ValueError(
                f"Parameter data must keep its shape {self._data.shape}, got an array of "
                f"shape {value.shape}; to change a layer's size, make a new layer"
            )
        if value.dtype != self._data.dtype:
            raise TypeError(
                f"Parameter data must keep its dtype {self._data.dtype}, got {value.dtype}; "
                f"convert the whole layer with .to(np.{value.dtype}), or assign "
                f"value.astype(np.{self._data.dtype})"
            )
        self._data = value

    def to(self, dtype: DTypeLike) -> Parameter:
        """Cast the values and the gradient to the floating ``dtype``, keeping this object
        (what ``Module.to`` does for each parameter); return self."""
        self._data = _floating(self._data.astype(dtype))
        if self.grad is not None:
            self.grad = self.grad.astype(dtype)
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.data.dtype

    def accumulate_grad(self, grad: ArrayLike) -> None:
        """Add ``grad`` to ``.grad`` (creating it on first use), as PyTorch's autograd does."""
        if not self.requires_grad:
            return
        shape = np.shape(grad)
        if shape != self.data.shape:
            # never broadcast: a (2,) gradient must not be added to every row of a (2, 2) one
            raise ValueError(
                f"gradient has shape {shape}, but the parameter has shape {self.data.shape}"
            )
        if self.grad is None:
            self.grad = np.array(grad, dtype=self.data.dtype, copy=True)
        else:
            self.grad += grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _floating(data: ArrayLike) -> NDArray[Any]:
    """``data`` as a C-contiguous floating array, else a TypeError."""
    array = np.asarray(data)
    if array.dtype.kind != "f":
        raise TypeError(
            f"Parameter data must be a floating array, got dtype {array.dtype}; "
            "convert it with .astype(np.float32)"
        )
    return np.ascontiguousarray(array)
