"""Datasets of (image, label) pairs: the base class, ArrayDataset, Subset, random_split,
filter_classes and one_hot.

Every dataset here holds its labels as an int64 array ``.labels`` and can hand a whole batch
over at once through ``gather(indices)``; array-backed datasets do that with one fancy-index
operation, which is what makes ``DataLoader`` fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastcnn._validation import integer, is_int, is_real

__all__ = ["ArrayDataset", "Dataset", "Subset", "filter_classes", "one_hot", "random_split"]

# A batch: images (N, C, H, W) float32 and labels (N,) int64.
Batch = tuple[NDArray[np.float32], NDArray[np.int64]]


def _check_int_index(index: Any, length: int, owner: str) -> int:
    if not is_int(index):
        raise TypeError(
            f"{owner} indices must be integers, got {type(index).__name__} {index!r}; "
            "use gather(indices) for a batch"
        )
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for {owner} of length {length}")
    return int(index) % length


def _as_index_array(indices: ArrayLike, length: int, owner: str) -> NDArray[np.int64]:
    """Indices as an int64 array, each checked against ``length`` (negatives count from the end)."""
    indices = np.asarray(indices)
    if indices.size == 0:
        return np.zeros(0, dtype=np.int64)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{owner} indices must be integers, got an array of dtype {indices.dtype}")
    indices = indices.astype(np.int64, copy=False)
    bad = (indices < -length) | (indices >= length)
    if bad.any():
        raise IndexError(f"index {indices[bad][0]} is out of range for {owner} of length {length}")
    return indices % length if (indices < 0).any() else indices


class Dataset:
    """Base class: a sized collection of ``(image, label)`` pairs.

    Subclasses implement ``__len__``, ``__getitem__`` (an int index -> ``(image, label)``,
    the image a float32 ``(C, H, W)`` array) and the ``labels`` attribute. ``gather`` has a
    per-item default that array-backed subclasses replace with one vectorised indexing step.
    """

    labels: NDArray[np.int64]

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[NDArray[np.float32], int]:
        raise NotImplementedError

    def gather(self, indices: ArrayLike) -> Batch:
        """A batch: ``(images (N, C, H, W) float32, labels (N,) int64)`` for ``indices``."""
        indices = _as_index_array(indices, len(self), type(self).__name__)
        items = [self[int(i)] for i in indices]
        if not items:
            raise ValueError("gather needs at least one index")
        images = np.stack([image for image, _ in items]).astype(np.float32, copy=False)
        labels = np.array([label for _, label in items], dtype=np.int64)
        return images, labels


class ArrayDataset(Dataset):
    """A dataset over two arrays: images ``(N, C, H, W)`` and integer labels ``(N,)``.

    Parameters
    ----------
    images : array_like
        ``(N, C, H, W)`` images (``(N, H, W)`` is taken as one channel). Stored as float32.
    labels : array_like
        ``(N,)`` integer class labels. Stored as int64.
    """

    def __init__(self, images: ArrayLike, labels: ArrayLike) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4:
            raise ValueError(
                f"ArrayDataset images must be (N, C, H, W) or (N, H, W), got shape {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise TypeError(
                f"ArrayDataset labels must be a 1-d integer array, got shape {labels.shape} "
                f"dtype {labels.dtype}"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"ArrayDataset has {len(images)} images but {len(labels)} labels; they must match"
            )
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[NDArray[np.float32], int]:
        index = _check_int_index(index, len(self), type(self).__name__)
        return self.images[index], int(self.labels[index])

    def gather(self, indices: ArrayLike) -> Batch:
        indices = _as_index_array(indices, len(self), type(self).__name__)
        return self.images[indices], self.labels[indices]

    def __repr__(self):
        return f"{type(self).__name__}(size={len(self)}, image_shape={self.images.shape[1:]})"


class Subset(Dataset):
    """The items of ``dataset`` at ``indices``, in that order (PyTorch's ``Subset``)."""

    def __init__(self, dataset: Dataset, indices: ArrayLike) -> None:
        self.dataset = dataset
        self.indices = _as_index_array(indices, len(dataset), type(dataset).__name__)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[NDArray[np.float32], int]:
        index = _check_int_index(index, len(self), "Subset")
        return self.dataset[int(self.indices[index])]

    @property
    def labels(self) -> NDArray[np.int64]:  # type: ignore[override]  # derived, read-only
        return self.dataset.labels[self.indices]

    def gather(self, indices: ArrayLike) -> Batch:
        indices = _as_index_array(indices, len(self), "Subset")
        return self.dataset.gather(self.indices[indices])

    def __repr__(self):
        return f"Subset(size={len(self)}, of={self.dataset!r})"


def _split_lengths(lengths, total):
    """Integer lengths from ints (summing to ``total``) or fractions (summing to 1), as torch."""
    is_sequence = isinstance(lengths, Iterable) and not isinstance(lengths, str)
    items = list(lengths) if is_sequence else None  # once: lengths may be a generator
    if items is None or not all(is_real(n) for n in items):
        raise TypeError(
            "random_split lengths must be a sequence of ints (summing to the dataset length) "
            f"or of fractions (summing to 1), got {type(lengths).__name__} {lengths!r}"
        )
    lengths = items
    if not lengths:
        raise ValueError("random_split needs at least one length")
    if all(is_int(n) for n in lengths):
        if any(n < 0 for n in lengths) or sum(lengths) != total:
            raise ValueError(
                f"random_split lengths {lengths} must be non-negative and sum to the dataset "
                f"length {total}"
            )
        return [int(n) for n in lengths]
    fractions = [float(f) for f in lengths]
    if any(not 0 <= f <= 1 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"random_split fractions {lengths} must each lie in [0, 1] and sum to 1 "
            "(or pass integer lengths summing to the dataset length)"
        )
    counts = [int(np.floor(total * f)) for f in fractions]
    for i in range(total - sum(counts)):  # the remainder, round-robin, as torch does
        counts[i % len(counts)] += 1
    return counts


def random_split(
    dataset: Dataset, lengths: Sequence[int] | Sequence[float], seed: int | None = None
) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random ``Subset``\\ s of the given lengths.

    Parameters
    ----------
    dataset : Dataset
    lengths : sequence of int or float
        Sizes summing to ``len(dataset)``, or fractions summing to 1 (the remainder of the
        rounding goes to the first subsets, as ``torch.utils.data.random_split`` does).
    seed : int or None
        Seed of ``np.random.default_rng``; the same seed gives the same split.
    """
    counts = _split_lengths(lengths, len(dataset))
    if seed is not None:
        seed = integer(seed, "seed", "random_split", minimum=0, expected="an int or None")
    order = np.random.default_rng(seed).permutation(len(dataset))
    bounds = np.cumsum([0, *counts])
    pairs = zip(bounds[:-1], bounds[1:], strict=True)
    return [Subset(dataset, order[start:stop]) for start, stop in pairs]


def filter_classes(dataset: Dataset, classes: Iterable[int]) -> Subset:
    """A ``Subset`` of the items whose label is in ``classes``; labels are kept as they are.

    >>> digits_0_to_4 = filter_classes(mnist, range(5))    # doctest: +SKIP
    """
    wanted = np.asarray(list(classes))
    if wanted.size == 0 or wanted.dtype.kind not in "iu":
        raise ValueError(
            f"filter_classes needs a non-empty list of integer classes, got {classes!r}"
        )
    labels = np.asarray(dataset.labels)
    missing = np.setdiff1d(wanted, labels)
    if missing.size == wanted.size:
        raise ValueError(
            f"none of the classes {wanted.tolist()} occurs in the dataset (its labels are "
            f"{np.unique(labels).tolist()})"
        )
    return Subset(dataset, np.flatnonzero(np.isin(labels, wanted)))


def one_hot(labels: ArrayLike, num_classes: int = -1, dtype: DTypeLike = np.int64) -> NDArray[Any]:
    """One-hot encode integer labels: ``(...,)`` -> ``(..., num_classes)``.

    As ``torch.nn.functional.one_hot``: ``num_classes=-1`` means ``labels.max() + 1`` and the
    result is int64 unless ``dtype`` says otherwise (pass ``np.float32`` for a loss target).
    """
    num_classes = integer(num_classes, "num_classes", "one_hot", minimum=-1)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"one_hot needs integer labels, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"one_hot labels must be >= 0, got {labels.min()}")
    if num_classes == -1:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and labels.max() >= num_classes:
        raise ValueError(
            f"one_hot label {labels.max()} is out of range for num_classes={num_classes}; "
            "labels must lie in [0, num_classes)"
        )
    encoded = np.zeros((*labels.shape, num_classes), dtype=dtype)
    np.put_along_axis(encoded, labels[..., None].astype(np.intp), 1, axis=-1)
    return encoded
