"""Parameter: a learnable array and its gradient."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


class Parameter:
    """A learnable array of a Module.

    Layers also keep temporaries (the input cached for backward, say) as attributes; this type
    is how ``Module.parameters()`` tells the two apart, as ``torch.nn.Parameter`` does.

    Attributes
    ----------
    data : numpy.ndarray
        The values, updated in place by optimizers.
    grad : numpy.ndarray or None
        Sum of the gradients of every ``backward`` since the last ``zero_grad``; None before
        the first backward (or after ``zero_grad(set_to_none=True)``), as in PyTorch.
    """

    def __init__(self, data: ArrayLike, requires_grad: bool = True) -> None:
        data = np.asarray(data)
        if data.dtype.kind != "f":
            raise TypeError(
                f"Parameter data must be a floating array, got dtype {data.dtype}; "
                "convert it with .astype(np.float32)"
            )
        self.data = np.ascontiguousarray(data)
        self.grad: NDArray[Any] | None = None
        self.requires_grad = bool(requires_grad)

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
