"""Dropout and Dropout2d: inverted dropout with a seeded generator."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._validation import flag, float_input, generator, grad_like, real
from fastcnn.nn.module import Module

__all__ = ["Dropout", "Dropout2d"]


def _keep_scale(
    rng: np.random.Generator, p: float, shape: tuple[int, ...], dtype: np.dtype
) -> NDArray:
    """0 where dropped (probability ``p``), 1/(1-p) where kept, in ``dtype``."""
    if p == 1:
        return np.zeros(shape, dtype=dtype)
    keep = rng.random(shape) >= p
    return keep * dtype.type(1 / (1 - p))


def _scaled(x: NDArray, scale: NDArray, out: NDArray | None = None) -> NDArray:
    """``x * scale``, into ``out`` if given; a dropped +-inf or NaN gives NaN, as in torch,
    without NumPy's warning."""
    with np.errstate(invalid="ignore"):
        return np.multiply(x, scale, out=out)


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
        return x if scale is None else _scaled(x, scale)

    def _mask(self, x: NDArray) -> NDArray:
        """0 where dropped, 1/(1-p) where kept, in the input's dtype."""
        return _keep_scale(self.rng, self.p, x.shape, x.dtype)

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """The output gradient through the same mask as the last forward."""
        saved = self._saved()
        if not input_grad:
            return None
        grad = grad_like(grad_output, saved["shape"], saved["dtype"], "Dropout")
        return grad if saved["scale"] is None else grad * saved["scale"]

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2d(Module):
    """Zero each whole channel with probability ``p`` in training, scaling the rest by
    1/(1-p); the identity in evaluation.

    The input is (N, C, H, W), or one (C, H, W) image: each of its N * C (or C) planes is
    kept or dropped as a whole, as after a convolution neighbouring pixels are too
    correlated for element-wise dropout to regularise. (torch 2.13 still reads a 3-D input
    as (N, C, L), with a warning that it will read it as (C, H, W); fastcnn does so now.)

    Parameters
    ----------
    p : float in [0, 1], default 0.5
    inplace : bool, default False
        Scale the input array in place and return it, as torch's ``inplace``.
    rng : np.random.Generator or int, optional
        Draws the masks; a seed makes them reproducible.
    """

    def __init__(
        self, p: float = 0.5, inplace: bool = False, *, rng: np.random.Generator | int | None = None
    ) -> None:
        super().__init__()
        self.p = real(p, "p", "Dropout2d", 0, 1)
        self.inplace = flag(inplace, "inplace", "Dropout2d")
        self.rng = generator(rng, "Dropout2d")

    def forward(self, input: ArrayLike) -> NDArray:
        x = float_input(input, "Dropout2d")
        if x.ndim not in (3, 4):
            raise ValueError(
                f"Dropout2d: expected a 4-D (N, C, H, W) or 3-D (C, H, W) input, got shape "
                f"{x.shape} (use Dropout to drop single elements)"
            )
        if self.inplace and not x.flags.writeable:
            raise ValueError(
                "Dropout2d(inplace=True): the input array is read-only: pass a writable array "
                "(x.copy()) or use inplace=False"
            )
        scale = None
        if self.training and self.p > 0:
            # one draw per plane, broadcast over its pixels
            scale = _keep_scale(self.rng, self.p, x.shape[:-2] + (1, 1), x.dtype)
        self._save_for_backward(shape=x.shape, dtype=x.dtype, scale=scale)
        if scale is None:
            return x
        return _scaled(x, scale, out=x if self.inplace else None)

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """The output gradient through the same channel mask as the forward."""
        saved = self._saved()
        if not input_grad:
            return None
        grad = grad_like(grad_output, saved["shape"], saved["dtype"], "Dropout2d")
        return grad if saved["scale"] is None else grad * saved["scale"]

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
