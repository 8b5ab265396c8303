"""Transforms on image arrays: Normalize, Pad, AvgDownsample2x2, Compose, and the random
augmentations RandomCrop, RandomHorizontalFlip and RandomAffine.

Each transform takes one image ``(C, H, W)`` or a whole batch ``(N, C, H, W)`` (the
deterministic ones any number of leading axes) and returns a new float32 array, so
``DataLoader`` applies it to a batch in one vectorised call. Names, arguments and semantics
follow torchvision where it has the transform.

Randomness: a random transform (a ``RandomTransform``) is called as ``transform(x, rng)``
with a ``numpy.random.Generator``, and draws each image's own parameters (crop offset, flip,
angle...) from it, all images' at once, so a batch is one NumPy gather whatever its size
(RandomAffine's nearest interpolation: one call of a compiled kernel, csrc/_augment.pyx).
``DataLoader`` passes a generator derived from its seed, the epoch and the batch index, so
the same seed gives the same augmented batches and a resumed run continues exactly. Without
``rng`` a random transform draws from fresh OS entropy (as torchvision draws from torch's
global generator): fine for a look at the data, not reproducible. ``Compose`` passes its
``rng`` on to the random transforms it holds; anything with ``needs_rng = True`` is given
one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn import _ops
from fastcnn._validation import fits_int32, flag, generator, integer, is_int, real

__all__ = [
    "AvgDownsample2x2",
    "Compose",
    "Normalize",
    "Pad",
    "RandomAffine",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomTransform",
]


def _check_image_array(x: ArrayLike, name: str, min_ndim: int = 3) -> NDArray[Any]:
    x = np.asarray(x)
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} expects images of shape (C, H, W) or (N, C, H, W), got shape {x.shape}"
        )
    return x


class Compose:
    """Apply ``transforms`` one after another: ``Compose([Pad(2), Normalize(0.1307, 0.3081)])``.

    ``compose(x, rng)`` hands ``rng`` to each transform with ``needs_rng`` (the random ones,
    one after another from the same generator) and calls the others as ``transform(x)``.
    """

    def __init__(self, transforms: Iterable[Callable[..., Any]]) -> None:
        self.transforms = list(transforms)
        for transform in self.transforms:
            if not callable(transform):
                raise TypeError(f"Compose takes callables, got {transform!r}")
        self.needs_rng = any(getattr(t, "needs_rng", False) for t in self.transforms)

    def __call__(self, x: Any, rng: np.random.Generator | int | None = None) -> Any:
        if self.needs_rng:
            rng = generator(rng, "Compose")
        for transform in self.transforms:
            x = transform(x, rng) if getattr(transform, "needs_rng", False) else transform(x)
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


# ------------------------------------------------------------------ random augmentations

PADDING_MODES = ("constant", "edge", "reflect", "symmetric")  # torchvision's, as np.pad's
INTERPOLATIONS = ("nearest", "bilinear")


def _batch_of_images(x: ArrayLike, owner: str) -> tuple[NDArray[np.float32], bool]:
    """``x`` as a float32 ``(N, C, H, W)`` batch, and whether it was one ``(C, H, W)`` image."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{owner} expects one image (C, H, W) or a batch (N, C, H, W), got shape "
            f"{x.shape}; add or remove axes to give it one of those"
        )
    if x.dtype.kind not in "uif":
        raise TypeError(f"{owner}: images must be a numeric array, got dtype {x.dtype}")
    single = x.ndim == 3
    batch = x[None] if single else x
    return batch.astype(np.float32, copy=False), single


def _pair(value: Any, name: str, owner: str, what: str) -> tuple[Any, Any]:
    """``value`` as a pair: a sequence of exactly two items, else a TypeError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{owner}: {name} must be {what}, got {value!r}")
    return value[0], value[1]


def _crop_size(size: Any) -> tuple[int, int]:
    """torchvision's crop ``size``: an int (a square), or (h, w); one-item sequences too."""
    what = "an int or a (height, width) pair of ints"
    if is_int(size):
        size = (size, size)
    elif isinstance(size, Sequence) and len(size) == 1:
        size = (size[0], size[0])
    height, width = _pair(size, "size", "RandomCrop", what)
    return (
        integer(height, "size", "RandomCrop", minimum=1, expected=what),
        integer(width, "size", "RandomCrop", minimum=1, expected=what),
    )


def _crop_padding(padding: Any) -> tuple[int, int, int, int]:
    """torchvision's ``padding`` as (left, top, right, bottom): an int (every side), a pair
    (left/right, top/bottom) or four values (left, top, right, bottom)."""
    what = "None, an int, or a sequence of 2 or 4 ints"
    if is_int(padding):
        padding = [padding]
    if isinstance(padding, (str, bytes)) or not isinstance(padding, Sequence):
        raise TypeError(f"RandomCrop: padding must be {what}, got {padding!r}")
    if len(padding) not in (1, 2, 4):
        raise ValueError(f"RandomCrop: padding must have 1, 2 or 4 values, got {padding!r}")
    sides = [integer(p, "padding", "RandomCrop", expected=what) for p in padding]
    if min(sides) < 0:
        raise ValueError(
            f"RandomCrop: padding must be >= 0 on every side, got {padding!r} (to crop, use a "
            "smaller size)"
        )
    if len(sides) == 1:
        sides *= 4
    elif len(sides) == 2:
        sides *= 2
    left, top, right, bottom = sides
    return left, top, right, bottom


class RandomTransform:
    """Base of the random transforms: ``transform(x, rng)`` for one image or a batch.

    A subclass defines ``draw(rng, shape)``, every image's random parameters as arrays with
    one row per image, and ``apply(batch, params)``, the transform of an ``(N, C, H, W)``
    float32 batch with given parameters (one vectorised NumPy operation over the batch). So
    each image gets its own parameters, and ``apply`` can be checked against a reference.

    Parameters of ``__call__``
    --------------------------
    x : array (C, H, W) or (N, C, H, W)
    rng : numpy.random.Generator, int seed or None
        The randomness; None draws from fresh OS entropy (not reproducible).
    """

    needs_rng = True

    def __call__(self, x: ArrayLike, rng: np.random.Generator | int | None = None) -> NDArray:
        owner = type(self).__name__
        batch, single = _batch_of_images(x, owner)
        params = self.draw(generator(rng, owner), batch.shape)
        out = self.apply(batch, params)
        return out[0] if single else out

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, NDArray]:
        """The random parameters of a batch of ``shape`` (N, C, H, W), one row per image."""
        raise NotImplementedError

    def apply(self, batch: NDArray[np.float32], params: dict[str, NDArray]) -> NDArray:
        """The transform of an (N, C, H, W) float32 batch with the parameters ``params``."""
        raise NotImplementedError


class RandomCrop(RandomTransform):
    """Crop each image at its own random place (torchvision's ``RandomCrop``).

    The image is first padded by ``padding``; with ``pad_if_needed`` a side still smaller
    than ``size`` is then padded on both ends by the shortfall (as torchvision does). Each
    image's top-left corner is uniform over every position where the crop fits.

    Parameters
    ----------
    size : int or (height, width)
    padding : int or sequence of 2 or 4 ints, optional
        Every side; (left/right, top/bottom); or (left, top, right, bottom).
    pad_if_needed : bool
    fill : float
        The value of constant padding.
    padding_mode : {'constant', 'edge', 'reflect', 'symmetric'}
        As torchvision (and ``np.pad``): reflect mirrors without repeating the edge pixel.

    ``RandomCrop(32, padding=4)`` is the usual CIFAR-10 augmentation.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        pad_if_needed: bool = False,
        fill: float = 0,
        padding_mode: str = "constant",
    ) -> None:
        self.size = _crop_size(size)
        self.padding = None if padding is None else _crop_padding(padding)
        self.pad_if_needed = flag(pad_if_needed, "pad_if_needed", "RandomCrop")
        self.fill = real(fill, "fill", "RandomCrop")
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"RandomCrop: padding_mode must be one of {', '.join(PADDING_MODES)}, got "
                f"{padding_mode!r}"
            )
        self.padding_mode = padding_mode

    def _pad_widths(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) padding of a height x width image, refusing a crop that
        does not fit in the padded image or reflect padding wider than the image."""
        left, top, right, bottom = self.padding or (0, 0, 0, 0)
        too_wide = max(left, right) >= width or max(top, bottom) >= height
        if self.padding_mode == "reflect" and too_wide:  # np.pad would reflect twice
            raise ValueError(
                f"RandomCrop: reflect padding {self.padding} must be smaller than the image "
                f"size {(height, width)}; use less padding or padding_mode='symmetric'"
            )
        crop_height, crop_width = self.size
        if self.pad_if_needed:  # torchvision pads both ends by the shortfall
            short = max(0, crop_width - (width + left + right))
            left, right = left + short, right + short
            short = max(0, crop_height - (height + top + bottom))
            top, bottom = top + short, bottom + short
        padded = (height + top + bottom, width + left + right)
        if crop_height > padded[0] or crop_width > padded[1]:
            raise ValueError(
                f"RandomCrop: crop size {self.size} is larger than the padded image size "
                f"{padded} (image {(height, width)}, padding {self.padding}); use a smaller "
                "size, more padding or pad_if_needed=True"
            )
        return left, top, right, bottom

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, NDArray]:
        left, top, right, bottom = self._pad_widths(shape[-2], shape[-1])
        free_rows = shape[-2] + top + bottom - self.size[0]
        free_columns = shape[-1] + left + right - self.size[1]
        return {
            "top": rng.integers(0, free_rows + 1, size=shape[0]),
            "left": rng.integers(0, free_columns + 1, size=shape[0]),
        }

    def apply(self, batch: NDArray[np.float32], params: dict[str, NDArray]) -> NDArray:
        left, top, right, bottom = self._pad_widths(batch.shape[-2], batch.shape[-1])
        if left or top or right or bottom:
            widths = ((0, 0), (0, 0), (top, bottom), (left, right))
            if self.padding_mode == "constant":
                batch = np.pad(batch, widths, constant_values=self.fill)
            else:
                batch = np.pad(batch, widths, mode=self.padding_mode)  # type: ignore[call-overload]
        windows = np.lib.stride_tricks.sliding_window_view(batch, self.size, axis=(2, 3))
        # One gather: image n's window at (top[n], left[n]), all channels -> (N, C, h, w).
        return windows[np.arange(len(batch)), :, params["top"], params["left"]]

    def __repr__(self) -> str:
        return (
            f"RandomCrop(size={self.size}, padding={self.padding}, "
            f"pad_if_needed={self.pad_if_needed}, fill={self.fill}, "
            f"padding_mode={self.padding_mode!r})"
        )


class RandomHorizontalFlip(RandomTransform):
    """Mirror each image left to right with probability ``p`` (torchvision's)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = real(p, "p", "RandomHorizontalFlip", 0.0, 1.0)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, NDArray]:
        return {"flip": rng.random(shape[0]) < self.p}  # torch.rand(1) < p, per image

    def apply(self, batch: NDArray[np.float32], params: dict[str, NDArray]) -> NDArray:
        return np.where(params["flip"][:, None, None, None], batch[..., ::-1], batch)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


AFFINE_PARAMETERS = ("angle", "translate_x", "translate_y", "scale")  # RandomAffine.draw's


def _check_per_image(params: dict[str, NDArray], key: str, count: int) -> None:
    """Refuse a ``params[key]`` without one value per image of a batch of ``count`` (the
    nearest kernel reads ``count`` values: a shorter array must not reach it)."""
    values = np.asarray(params[key])
    if values.shape != (count,):
        raise ValueError(
            f"RandomAffine.apply: params[{key!r}] must have shape ({count},), one value per "
            f"image of the batch, got shape {values.shape}; draw them with "
            "draw(rng, batch.shape)"
        )


def _symmetric_range(value: Any, name: str, owner: str) -> tuple[float, float]:
    """torchvision's ``degrees``: a number d >= 0 for (-d, d), or (min, max) with min <= max."""
    if is_int(value) or isinstance(value, float):
        d = real(value, name, owner, 0.0)
        return -d, d
    low, high = _pair(value, name, owner, "a number >= 0 or a (min, max) pair of numbers")
    low, high = real(low, name, owner), real(high, name, owner)
    if low > high:
        raise ValueError(f"{owner}: {name} (min, max) must have min <= max, got {value!r}")
    return low, high


class RandomAffine(RandomTransform):
    """Rotate, shift and scale each image by its own random amounts (torchvision's
    ``RandomAffine`` without shear, about the image centre).

    Per image: an angle uniform in ``degrees``; with ``translate=(a, b)`` a shift of
    ``round(uniform(-a * W, a * W))`` columns and ``round(uniform(-b * H, b * H))`` rows; with
    ``scale=(lo, hi)`` a zoom uniform in it. Each output pixel takes the value of the input
    at the inverse-transformed position, as torchvision's tensor path computes it
    (``affine_grid`` + ``grid_sample``, ``align_corners=False``): ``interpolation='nearest'``
    (torchvision's default) takes the nearest pixel, ``'bilinear'`` blends the four around
    it. Positions outside the image give ``fill``; with bilinear, a pixel partly outside is
    ``value * inside + (1 - inside) * fill``, torchvision's blend. Nearest runs a compiled
    kernel over the whole batch; bilinear is one NumPy gather of every image's four source
    pixels per output pixel.

    Parameters
    ----------
    degrees : float or (min, max)
        A number d >= 0 means (-d, d); 0 for no rotation.
    translate : (float, float), optional
        Largest shift as a fraction of the width and of the height, each in [0, 1].
    scale : (float, float), optional
        Range of the zoom factor, both > 0 (None: no zoom).
    interpolation : {'nearest', 'bilinear'}
    fill : float
        Value of the pixels from outside the image.

    ``RandomAffine(10, translate=(0.1, 0.1))`` is a usual MNIST augmentation.
    """

    def __init__(
        self,
        degrees: float | Sequence[float],
        translate: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        *,
        interpolation: str = "nearest",
        fill: float = 0,
    ) -> None:
        owner = "RandomAffine"
        self.degrees = _symmetric_range(degrees, "degrees", owner)
        self.translate = None
        if translate is not None:
            pair = _pair(translate, "translate", owner, "None or a pair of fractions")
            self.translate = tuple(real(t, "translate", owner, 0.0, 1.0) for t in pair)
        self.scale = None
        if scale is not None:
            pair = _pair(scale, "scale", owner, "None or a (min, max) pair of numbers")
            low, high = (real(s, "scale", owner, 0.0, low_open=True) for s in pair)
            if low > high:
                raise ValueError(
                    f"RandomAffine: scale (min, max) must have min <= max, got {scale!r}"
                )
            self.scale = (low, high)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                "RandomAffine: interpolation must be 'nearest' or 'bilinear', got "
                f"{interpolation!r}"
            )
        self.interpolation = interpolation
        self.fill = real(fill, "fill", owner)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, NDArray]:
        n, height, width = shape[0], shape[-2], shape[-1]
        params = {"angle": rng.uniform(*self.degrees, size=n)}
        shift_x = shift_y = np.zeros(n)
        if self.translate is not None:
            most_x, most_y = self.translate[0] * width, self.translate[1] * height
            shift_x = np.rint(rng.uniform(-most_x, most_x, size=n))
            shift_y = np.rint(rng.uniform(-most_y, most_y, size=n))
        params["translate_x"], params["translate_y"] = shift_x, shift_y
        params["scale"] = np.ones(n) if self.scale is None else rng.uniform(*self.scale, size=n)
        return params

    def apply(self, batch: NDArray[np.float32], params: dict[str, NDArray]) -> NDArray:
        if np.ndim(batch) != 4:
            raise ValueError(
                f"RandomAffine.apply expects a batch (N, C, H, W), got shape {np.shape(batch)}; "
                "call the transform itself for one image (C, H, W)"
            )
        for key in AFFINE_PARAMETERS:
            _check_per_image(params, key, len(batch))
        if self.interpolation == "nearest":
            # The compiled kernel (csrc/_augment.pyx), bit for bit its NumPy twin
            # fastcnn._reference.affine_nearest: that took most of a LeNet-5 training step.
            # Each image's coefficients as _source_positions computes them, then widened to
            # float64 (exact: NumPy's promotion in the products widens them the same way).
            # The kernel counts pixels of a row or column in C ints.
            fits_int32("RandomAffine", height=batch.shape[2], width=batch.shape[3])
            coefficients = (
                *self._inverse_rotation(params),
                params["translate_x"],
                params["translate_y"],
            )
            cos, sin, shift_x, shift_y = (np.ascontiguousarray(v, np.float64) for v in coefficients)
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            fill = float(np.float32(self.fill))
            return _ops.affine_nearest(batch, cos, sin, shift_x, shift_y, fill)
        source_y, source_x = self._source_positions(batch.shape, params)
        top, left = np.floor(source_y), np.floor(source_x)
        dy, dx = source_y - top, source_x - left
        corners = [
            (top, left, (1 - dy) * (1 - dx)),
            (top, left + 1, (1 - dy) * dx),
            (top + 1, left, dy * (1 - dx)),
            (top + 1, left + 1, dy * dx),
        ]
        return self._sample(batch, corners)

    @staticmethod
    def _inverse_rotation(params: dict[str, NDArray]) -> tuple[NDArray, NDArray]:
        """Every image's (cos, sin) of its angle over its scale: torchvision's inverse matrix
        is [[cos, sin], [-sin, cos]] of these (the trig in NumPy for the kernel too)."""
        radians = np.deg2rad(params["angle"])
        return np.cos(radians) / params["scale"], np.sin(radians) / params["scale"]

    @classmethod
    def _source_positions(
        cls, shape: tuple[int, ...], params: dict[str, NDArray]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(row, column) in the input of every output pixel, arrays of shape (N, H, W):
        the inverse matrix applied about the centre ((H - 1) / 2, (W - 1) / 2) to the output
        position minus the translation (the nearest kernel computes the same, per pixel)."""
        _, _, height, width = shape
        centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
        cos, sin = (v[:, None, None] for v in cls._inverse_rotation(params))
        x = np.arange(width)[None, None, :] - centre_x - params["translate_x"][:, None, None]
        y = np.arange(height)[None, :, None] - centre_y - params["translate_y"][:, None, None]
        return -sin * x + cos * y + centre_y, cos * x + sin * y + centre_x

    def _sample(
        self, batch: NDArray[np.float32], corners: list[tuple[NDArray, NDArray, NDArray]]
    ) -> NDArray:
        """Sum over ``corners`` (row, column, weight) of weight * pixel, pixels outside the
        image counting as 0, blended with ``fill`` as torchvision does: one gather."""
        n, channels, height, width = batch.shape
        rows = np.stack([c[0] for c in corners], axis=1)  # (N, K, H, W)
        columns = np.stack([c[1] for c in corners], axis=1)
        inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width)
        weights = np.stack([c[2] for c in corners], axis=1) * inside
        flat_index = np.clip(rows, 0, height - 1).astype(np.intp) * width + np.clip(
            columns, 0, width - 1
        ).astype(np.intp)
        pixels = np.take_along_axis(
            batch.reshape(n, channels, height * width), flat_index.reshape(n, 1, -1), axis=2
        ).reshape(n, channels, *rows.shape[1:])
        weights = weights.astype(np.float32)[:, None]  # (N, 1, K, H, W)
        values = (pixels * weights).sum(axis=2)
        coverage = weights.sum(axis=2)  # grid_sample of a channel of ones
        return values * coverage + (1 - coverage) * np.float32(self.fill)

    def __repr__(self) -> str:
        return (
            f"RandomAffine(degrees={self.degrees}, translate={self.translate}, "
            f"scale={self.scale}, interpolation={self.interpolation!r}, fill={self.fill})"
        )
