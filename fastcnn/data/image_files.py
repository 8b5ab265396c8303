"""Images named on a command line: image files, directories of them and IDX files.

``load_images`` is what ``fastcnn predict`` reads: every image as a model of a given input
shape takes it, decoded as training decodes it (``image_list.read_image``: the same colour
conversion, the same bilinear resize; an IDX file scaled to [0, 1] as ``MNIST`` does), each
with a name to print beside its prediction.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from fastcnn._validation import positive_int
from fastcnn.data.idx import read_idx
from fastcnn.data.image_list import read_image

__all__ = ["IMAGE_EXTENSIONS", "image_files_in", "is_idx_file", "load_images"]

# torchvision's ImageFolder extensions: what a directory's image files are.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# MNIST's names end with -idx3-ubyte (images) or -idx1-ubyte (labels), gzipped or not.
_IDX_NAME = re.compile(r"[.-]idx\d+-ubyte(\.gz)?$", re.IGNORECASE)

_MODE_OF_CHANNELS = {1: "L", 3: "RGB"}


def is_idx_file(path: str | os.PathLike[str]) -> bool:
    """True for a name such as ``t10k-images-idx3-ubyte`` or ``digits.idx3-ubyte.gz``."""
    return _IDX_NAME.search(os.path.basename(os.fspath(path))) is not None


def image_files_in(directory: str | os.PathLike[str]) -> list[str]:
    """The image files of ``directory`` (by extension, any case), sorted by name; not recursive.

    Raises
    ------
    ValueError
        The directory holds no image file.
    """
    directory = os.fspath(directory)
    names = sorted(
        name
        for name in os.listdir(directory)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(directory, name))
    )
    if not names:
        raise ValueError(
            f"directory {directory!r} has no image files (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}; subdirectories are not searched)"
        )
    return [os.path.join(directory, name) for name in names]


def _check_shape(shape):
    if not isinstance(shape, (tuple, list)) or len(shape) != 3:
        raise TypeError(f"load_images: shape must be (channels, height, width), got {shape!r}")
    return tuple(positive_int(n, "shape", "load_images") for n in shape)


def _idx_images(path, shape):
    """An IDX file of uint8 ``(N, H, W)`` images, as float32 ``(N, 1, H, W)`` in [0, 1]."""
    _, array = read_idx(path)
    if array.ndim != 3:
        raise ValueError(
            f"{path}: holds {array.ndim}-D data of shape {array.shape}; expected (count, "
            "height, width) images such as MNIST's *-images-idx3-ubyte (a 1-D idx1 file "
            "holds labels)"
        )
    if array.dtype != np.uint8:
        raise ValueError(f"{path}: holds {array.dtype} values; expected uint8 pixels as MNIST's")
    if len(array) == 0:
        raise ValueError(f"{path}: holds no images (its shape is {array.shape})")
    found, wanted = (1, *array.shape[1:]), tuple(shape)
    if found != wanted:
        raise ValueError(
            f"{path}: holds {'x'.join(map(str, found))} images, but the model takes "
            f"{'x'.join(map(str, wanted))} images; IDX images are neither resized nor converted"
        )
    return (array[:, None] / np.float32(255)).astype(np.float32)


def _read_one(path, shape):
    """The names and images of one command-line path."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path!r} does not exist (expected an image file, a directory of images or an "
            "IDX file)"
        )
    if os.path.isdir(path):
        files = image_files_in(path)
    elif is_idx_file(path):
        images = _idx_images(path, shape)
        return [f"{path}[{i}]" for i in range(len(images))], images
    else:
        files = [path]
    channels, height, width = shape
    if channels not in _MODE_OF_CHANNELS:
        raise ValueError(
            f"{path}: image files decode to 1 (grayscale) or 3 (RGB) channels, but the model "
            f"takes {channels}; give it IDX files"
        )
    mode = _MODE_OF_CHANNELS[channels]
    return files, np.stack([read_image(file, (height, width), mode) for file in files])


def load_images(
    paths: Iterable[str | os.PathLike[str]], shape: Sequence[int]
) -> tuple[list[str], NDArray[np.float32]]:
    """Every image that ``paths`` names, as a model of input ``shape`` takes them.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        Any mix of image files (PNG, JPEG, ... : decoded with Pillow, converted to the
        model's colour mode and resized to its size as ``ImageListDataset`` does),
        directories (their image files, ``IMAGE_EXTENSIONS``, sorted by name, not
        recursive) and IDX files of uint8 ``(N, H, W)`` images (``is_idx_file`` names,
        optionally ``.gz``; of the model's size: they are not resized).
    shape : (int, int, int)
        The model's input ``(channels, height, width)``.

    Returns
    -------
    names : list of str
        One per image: the file's path (a directory's files joined to it), ``FILE[i]`` for
        the i-th image of an IDX file.
    images : numpy.ndarray
        float32 ``(N, C, H, W)`` in [0, 1], not normalised.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    ValueError
        No paths, a directory without images, a file that is not a readable image, a damaged
        IDX file or one that holds no images of the model's size; the message names the file.
    ImportError
        An image file is given but Pillow is not installed (``pip install fastcnn[images]``).
    """
    shape = _check_shape(shape)
    names: list[str] = []
    batches = []
    for path in paths:
        found, images = _read_one(os.fspath(path), shape)
        names += found
        batches.append(images)
    if not batches:
        raise ValueError("load_images: no paths given; name image files, directories or IDX files")
    return names, np.concatenate(batches)
