"""Dropout: inverted dropout with a seeded generator."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._validation import float_input, generator, grad_like, real
from fastcnn.nn.module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``p`` in training, scaling the rest by 1/(1-p).

    The scaling keeps the expected value unchanged, so evaluation (``eval()``) is the
    identity. ``p=1`` zeroes everything, as in PyTorch.

    Parameters
    ----------
    p : float in [0, 1], default 0.5
    rng : np.random.Generator or int, optional
        Draws the masks; a seed makes them reproducible.
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.p = real(p, "p", "Dropout", 0, 1)
        self.rng = generator(rng, "Dropout")

    def forward(self, input: ArrayLike) -> NDArray:
        x = float_input(input, "Dropout")
        scale = self._mask(x) if self.training and self.p > 0 else None
        self._save_for_backward(shape=x.shape, dtype=x.dtype, scale=scale)
        return x if scale is None else x * scale

    def _mask(self, x: NDArray) -> NDArray:
        """0 where dropped, 1/(1-p) where kept, in the input's dtype."""
        if self.p == 1:
            return np.zeros(x.shape, dtype=x.dtype)
        keep = self.rng.random(x.shape) >= self.p
        return keep * x.dtype.type(1 / (1 - self.p))

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """The output gradient through the same mask as the last forward."""
        saved = self._saved()
        if not input_grad:
            return None
        grad = grad_like(grad_output, saved["shape"], saved["dtype"], "Dropout")
        return grad if saved["scale"] is None else grad * saved["scale"]

    def extra_repr(self) -> str:
        return f"p={self.p}"
