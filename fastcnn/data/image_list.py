"""ImageListDataset: images named in a text file of ``relative/path label`` lines."""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import NDArray

from fastcnn._validation import integer, is_int
from fastcnn.data.datasets import ArrayDataset

__all__ = ["ImageListDataset", "parse_image_list", "read_image"]

_MODES = {"L": 1, "RGB": 3}


def _import_pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError(
            "fastcnn decodes images with Pillow, which is not installed; "
            "install it with: pip install fastcnn[images]"
        ) from None
    return Image, UnidentifiedImageError


def parse_image_list(list_file: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """The ``(path, label, line_number)`` entries of an image-list file.

    Each non-blank line is ``relative/path label`` (the path may contain spaces: the label is
    the last field). Lines starting with ``#`` are comments.

    Raises
    ------
    ValueError
        A malformed line; the message gives the file and the line number.
    """
    entries = []
    with open(list_file, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = text.rsplit(maxsplit=1)
            try:
                label = int(fields[1]) if len(fields) == 2 else None
            except ValueError:
                label = None
            if label is None:
                raise ValueError(
                    f"{list_file}, line {number}: expected 'relative/path label' with an "
                    f"integer label, got {text!r}"
                )
            entries.append((fields[0], label, number))
    if not entries:
        raise ValueError(f"{list_file}: no 'relative/path label' lines found")
    return entries


def _check_labels(entries, list_file, num_classes):
    if num_classes is None:
        num_classes = max(label for _, label, _ in entries) + 1
    for _, label, number in entries:
        if not 0 <= label < num_classes:
            raise ValueError(
                f"{list_file}, line {number}: label {label} is outside [0, {num_classes}); "
                "labels must be 0 .. num_classes - 1"
            )
    return num_classes


def _decode(path, mode, size, where=None):
    """One image as float32 ``(C, H, W)`` in [0, 1]: converted to ``mode``, resized.

    ``where`` (e.g. the list file and line) starts the error messages, if given.
    """
    image_module, unidentified = _import_pillow()
    where = f"{where}: " if where else ""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}image file {path!r} does not exist")
    try:
        with image_module.open(path) as image:
            image = image.convert(mode)
            if image.size != (size[1], size[0]):  # Pillow sizes are (width, height)
                image = image.resize((size[1], size[0]), image_module.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
    except (unidentified, OSError, SyntaxError) as error:
        raise ValueError(f"{where}cannot read image {path!r}: {error}") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _check_size(size, owner):
    """``(height, width)`` as a tuple of two ints > 0."""
    pair = tuple(size) if isinstance(size, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(is_int(s) for s in pair):
        raise TypeError(f"{owner} size must be (height, width), a pair of ints, got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"{owner} size must be (height, width) > 0, got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_mode(mode, owner):
    if mode not in _MODES:
        raise ValueError(f"{owner} mode must be 'L' or 'RGB', got {mode!r}")
    return mode


def read_image(
    path: str | os.PathLike[str], size: tuple[int, int] = (28, 28), mode: str = "L"
) -> NDArray[np.float32]:
    """One image file, decoded as ``ImageListDataset`` decodes each of its images.

    Parameters
    ----------
    path : str or os.PathLike
        Any image file Pillow reads (PNG, JPEG, BMP, ...).
    size : (int, int)
        ``(height, width)`` the image is resized to (bilinear) unless it has that size.
    mode : {"L", "RGB"}
        Grayscale (1 channel) or colour (3 channels); the image is converted to it.

    Returns
    -------
    numpy.ndarray
        float32 ``(C, H, W)`` in [0, 1].

    Raises
    ------
    FileNotFoundError
        ``path`` is not a file.
    ValueError
        Pillow cannot read it (not an image, truncated, unreadable); the message names it.
    ImportError
        Pillow is not installed (``pip install fastcnn[images]``).
    """
    return _decode(
        os.fspath(path), _check_mode(mode, "read_image"), _check_size(size, "read_image")
    )


class ImageListDataset(ArrayDataset):
    """Images listed with their labels in a text file, the seed notebooks' format.

    Every image is decoded with Pillow when the dataset is built (so a bad file is reported at
    once, and batches are then gathered from one array as fast as MNIST's).

    Parameters
    ----------
    list_file : str or os.PathLike
        Text file of ``relative/path label`` lines (blank lines and ``#`` comments skipped).
    root : str or os.PathLike, optional
        Directory the paths are relative to; default: the list file's directory.
    size : (int, int)
        ``(height, width)`` every image is resized to (bilinear).
    mode : {"L", "RGB"}
        Grayscale (1 channel) or colour (3 channels).
    num_classes : int, optional
        Labels must lie in ``[0, num_classes)``; default: the largest label + 1.

    Attributes
    ----------
    images : numpy.ndarray
        float32 ``(N, C, H, W)`` in [0, 1].
    labels : numpy.ndarray
        int64 ``(N,)``.
    paths : list of str
        The resolved path of each image.
    """

    def __init__(
        self,
        list_file: str | os.PathLike[str],
        root: str | os.PathLike[str] | None = None,
        size: tuple[int, int] = (28, 28),
        mode: str = "L",
        num_classes: int | None = None,
    ) -> None:
        mode = _check_mode(mode, "ImageListDataset")
        size = _check_size(size, "ImageListDataset")
        if num_classes is not None:
            num_classes = integer(num_classes, "num_classes", "ImageListDataset", minimum=1)
        list_file = os.fspath(list_file)
        root = os.path.dirname(os.path.abspath(list_file)) if root is None else os.fspath(root)
        entries = parse_image_list(list_file)
        self.num_classes = _check_labels(entries, list_file, num_classes)
        self.paths = [os.path.join(root, path) for path, _, _ in entries]
        images = np.empty((len(entries), _MODES[mode], *size), dtype=np.float32)
        for i, (path, (_, _, number)) in enumerate(zip(self.paths, entries, strict=True)):
            images[i] = _decode(path, mode, size, f"{list_file}, line {number}")
        super().__init__(images, np.array([label for _, label, _ in entries], dtype=np.int64))
        self.list_file, self.mode, self.size = list_file, mode, size

    def __repr__(self):
        return (
            f"ImageListDataset({self.list_file!r}, size={len(self)}, mode={self.mode!r}, "
            f"image_size={self.size})"
        )
