"""Transforms on image arrays: Normalize, Pad, AvgDownsample2x2, Compose.

Each transform takes one image ``(C, H, W)`` or a whole batch ``(N, C, H, W)`` (any number of
leading axes) and returns a new float32 array, so ``DataLoader`` applies it to a batch in one
vectorised call. Names and arguments follow torchvision where it has the transform.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._validation import integer, real

__all__ = ["AvgDownsample2x2", "Compose", "Normalize", "Pad"]


def _check_image_array(x: ArrayLike, name: str, min_ndim: int = 3) -> NDArray[Any]:
    x = np.asarray(x)
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} expects images of shape (C, H, W) or (N, C, H, W), got shape {x.shape}"
        )
    return x


class Compose:
    """Apply ``transforms`` one after another: ``Compose([Pad(2), Normalize(0.1307, 0.3081)])``."""

    def __init__(self, transforms: Iterable[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)
        for transform in self.transforms:
            if not callable(transform):
                raise TypeError(f"Compose takes callables, got {transform!r}")

    def __call__(self, x: Any) -> Any:
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class Normalize:
    """``(x - mean) / std`` per channel (torchvision's ``Normalize``).

    Parameters
    ----------
    mean, std : float or sequence of float
        One value for all channels, or one per channel. MNIST's are 0.1307 and 0.3081.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float32))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float32))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError(
                f"Normalize mean and std must be scalars or 1-d, got {mean!r}, {std!r}"
            )
        if np.any(self.std == 0):
            raise ValueError(f"Normalize std must be non-zero, got {std!r} (division by zero)")

    def __call__(self, x: ArrayLike) -> NDArray[np.float32]:
        x = _check_image_array(x, "Normalize")
        channels = x.shape[-3]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values.size not in (1, channels):
                raise ValueError(
                    f"Normalize has {values.size} {name} values but the images have "
                    f"{channels} channels; give one value or one per channel"
                )
        mean = self.mean.reshape(-1, 1, 1)
        std = self.std.reshape(-1, 1, 1)
        return ((x - mean) / std).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Pad:
    """Pad the last two axes by ``padding`` pixels on every side with ``fill`` (torchvision's
    ``Pad`` with an int padding): 28x28 MNIST -> 32x32 with ``Pad(2)``, LeNet-5's input size."""

    def __init__(self, padding: int, fill: float = 0.0) -> None:
        self.padding = integer(padding, "padding", "Pad", minimum=0)
        self.fill = real(fill, "fill", "Pad")

    def __call__(self, x: ArrayLike) -> NDArray[np.float32]:
        x = _check_image_array(x, "Pad")
        width = [(0, 0)] * (x.ndim - 2) + [(self.padding, self.padding)] * 2
        return np.pad(x.astype(np.float32, copy=False), width, constant_values=self.fill)

    def __repr__(self) -> str:
        return f"Pad(padding={self.padding}, fill={self.fill})"


class AvgDownsample2x2:
    """Halve height and width by averaging each 2x2 block (28x28 -> 14x14).

    Odd sizes drop the last row/column, as ``avg_pool2d(x, 2)`` does.
    """

    def __call__(self, x: ArrayLike) -> NDArray[np.float32]:
        x = _check_image_array(x, "AvgDownsample2x2")
        height, width = x.shape[-2] // 2, x.shape[-1] // 2
        if height == 0 or width == 0:
            raise ValueError(f"AvgDownsample2x2 needs images at least 2x2, got shape {x.shape}")
        blocks = x[..., : 2 * height, : 2 * width].reshape(*x.shape[:-2], height, 2, width, 2)
        return blocks.mean(axis=(-3, -1), dtype=np.float32)

    def __repr__(self) -> str:
        return "AvgDownsample2x2()"
