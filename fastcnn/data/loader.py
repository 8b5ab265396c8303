"""DataLoader: mini-batches of a dataset, in a reproducible and resumable order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._data_parallel import block_bounds
from fastcnn._validation import flag, integer, is_int

__all__ = ["DataLoader"]


class DataLoader:
    """Iterate over ``dataset`` in mini-batches of float32 ``(N, C, H, W)`` images and int64
    labels, each batch a fresh C-contiguous array.

    Each ``iter(loader)`` is one epoch. With ``shuffle=True`` the order of epoch ``k`` is the
    permutation drawn from ``np.random.default_rng([seed, k])``: it depends only on the seed
    and the epoch number, so every run sees the same epochs, and a resumed run continues
    exactly (``set_epoch`` or ``load_state_dict`` picks the epoch). The epoch counter advances
    by one each time an iteration starts.

    Parameters
    ----------
    dataset : Dataset
        Anything with ``__len__`` and ``__getitem__``; a ``gather(indices)`` method (every
        fastcnn dataset has one) lets a batch be taken with one fancy-indexing step.
    batch_size : int
        Images per batch (> 0).
    shuffle : bool
        A new random order every epoch (True) or the dataset order (False).
    seed : int, optional
        Seed of the shuffling (>= 0); None draws one at random (saved by ``state_dict``).
    drop_last : bool
        Drop the last batch when it is smaller than ``batch_size``.
    transform : callable, optional
        Applied to each batch of images (e.g. ``fastcnn.data.Normalize``).
    shard : (int, int), optional
        ``(index, count)``: yield only block ``index`` of ``count`` contiguous blocks of every
        batch, for data-parallel training (``shard=(get_rank(), get_world_size())`` of
        ``fastcnn.distributed``). Every shard sees the same batches in the same order; a
        batch is cut as evenly as possible, the first blocks one item larger (as
        ``fit(..., accumulate=count)`` cuts it), so a batch smaller than ``count`` leaves
        the last shards an empty block. ``len(loader)`` is the number of global batches.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        transform: Callable[[NDArray[np.float32]], ArrayLike] | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                "DataLoader: dataset must have __len__ and __getitem__ (a fastcnn.data.Dataset "
                f"or a sequence of (image, label) pairs), got {type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError("DataLoader got an empty dataset")
        self.dataset = dataset
        self.batch_size = integer(batch_size, "batch_size", "DataLoader", minimum=1)
        self.shuffle = flag(shuffle, "shuffle", "DataLoader")
        self.drop_last = flag(drop_last, "drop_last", "DataLoader")
        if transform is not None and not callable(transform):
            raise TypeError(
                "DataLoader: transform must be callable (a function of a batch of images) or "
                f"None, got {transform!r}"
            )
        self.transform = transform
        self.shard = _check_shard(shard)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**63))
        # np.random.default_rng([seed, epoch]) needs a seed >= 0.
        self.seed = integer(seed, "seed", "DataLoader", minimum=0, expected="an int or None")
        self.epoch = 0

    def __len__(self) -> int:
        """Number of batches per epoch."""
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch number ``epoch`` (0-based), e.g. when resuming."""
        self.epoch = integer(epoch, "epoch", "DataLoader.set_epoch", minimum=0)

    def order(self, epoch: int) -> NDArray[np.int64]:
        """The indices of epoch ``epoch``, in the order they are visited."""
        if not self.shuffle:
            return np.arange(len(self.dataset))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint needs to continue the same sequence of epochs."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the sequence of epochs saved by ``state_dict``."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"DataLoader.load_state_dict: state must be a dict, got {type(state).__name__}"
            )
        expected = sorted(self.state_dict())
        if sorted(state, key=str) != expected:
            raise ValueError(
                f"DataLoader.load_state_dict: the state must have exactly the keys {expected} "
                f"(as DataLoader.state_dict() gives them), got {sorted(state, key=str)}"
            )
        owner = "DataLoader.load_state_dict"
        seed = integer(state["seed"], "seed", owner, minimum=0)
        self.epoch = integer(state["epoch"], "epoch", owner, minimum=0)
        self.seed = seed

    def _gather(self, indices):
        if len(indices) == 0:  # an empty shard of a small last batch: shaped as the others
            images, labels = self._gather(np.arange(1))
            return images[:0], labels[:0]
        gather = getattr(self.dataset, "gather", None)
        if gather is not None:
            images, labels = gather(indices)
        else:  # a plain sequence of (image, label) pairs
            items = [self.dataset[int(i)] for i in indices]
            images = np.stack([image for image, _ in items])
            labels = np.array([label for _, label in items])
        if self.transform is not None:
            images = self.transform(images)
        return np.ascontiguousarray(images, dtype=np.float32), np.asarray(labels, dtype=np.int64)

    def __iter__(self) -> Iterator[tuple[NDArray[np.float32], NDArray[np.int64]]]:
        order = self.order(self.epoch)
        self.epoch += 1
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]
            if self.shard is not None:
                index, count = self.shard
                first, stop = block_bounds(len(batch), count)[index]
                batch = batch[first:stop]
            yield self._gather(batch)

    def __repr__(self) -> str:
        return (
            f"DataLoader(dataset={self.dataset!r}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}"
            + ("" if self.shard is None else f", shard={self.shard}")
            + ")"
        )


def _check_shard(shard: object) -> tuple[int, int] | None:
    """``shard`` as an ``(index, count)`` pair with ``0 <= index < count``, or None."""
    if shard is None:
        return None
    if not (isinstance(shard, (tuple, list)) and len(shard) == 2 and all(is_int(v) for v in shard)):
        raise TypeError(
            "DataLoader: shard must be None or a pair of ints (index, count), e.g. "
            f"(fastcnn.distributed.get_rank(), fastcnn.distributed.get_world_size()), got {shard!r}"
        )
    index, count = int(shard[0]), int(shard[1])
    if not 0 <= index < count:
        raise ValueError(
            f"DataLoader: shard=(index, count) needs 0 <= index < count, got {shard!r}"
        )
    return index, count
