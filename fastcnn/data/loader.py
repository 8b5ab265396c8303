"""DataLoader: mini-batches of a dataset, in a reproducible and resumable order, each
prepared in a background thread while the caller works on the one before."""

from __future__ import annotations

import queue
import sys
import threading
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

    A random transform (one with ``needs_rng``, e.g. ``RandomCrop`` or a ``Compose`` holding
    one) is called as ``transform(images, rng)`` with batch ``b`` of epoch ``k`` given the
    generator ``default_rng(SeedSequence([seed, k], spawn_key=(b,)))``, a stream independent
    of the shuffling's: the augmented batches too depend only on the seed, the epoch and the
    batch, so they are the same in every run and a resumed run continues bit for bit.

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
        Applied to each batch of images (e.g. ``fastcnn.data.Normalize``); labels are left
        as they are.
    prefetch : bool
        Prepare each batch (gather and transform) in one background thread while the caller
        computes on the previous one (True), or only when asked for (False, the default).
        The batches are the same bits either way. fastcnn's kernels release the GIL, so a
        training step and the next batch's preparation can run at once; at most one batch
        waits ready. An exception in the thread is raised in the caller, with its traceback;
        a loop that stops early (``break``, an exception) stops the thread when the iterator
        is closed or dropped. Off by default because it measured slower where the kernels
        already use every core: LeNet-5 at batch 64 with RandomAffine on 2 cores and 2
        kernel threads took 8.3 ms a batch with the thread, 5.2 ms without
        (bench/bench_augment.py). Turn it on when the kernels leave a core free (fewer
        threads than cores) and the transform is thread-safe.
    shard : (int, int), optional
        ``(index, count)``: yield only block ``index`` of ``count`` contiguous blocks of every
        batch, for data-parallel training (``shard=(get_rank(), get_world_size())`` of
        ``fastcnn.distributed``). Every shard sees the same batches in the same order; a
        batch is cut as evenly as possible, the first blocks one item larger (as
        ``fit(..., accumulate=count)`` cuts it), so a batch smaller than ``count`` leaves
        the last shards an empty block. ``len(loader)`` is the number of global batches.
        A random transform is applied to the whole batch, then the block is cut, so
        each image gets the augmentation it gets in one process.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        transform: Callable[..., ArrayLike] | None = None,
        prefetch: bool = False,
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
        self.prefetch = flag(prefetch, "prefetch", "DataLoader")
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

    def augmentation_rng(self, epoch: int, batch: int) -> np.random.Generator:
        """The generator a random transform gets for batch ``batch`` of epoch ``epoch``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch], spawn_key=(batch,)))

    def _batch(self, order, epoch, batch):
        indices = order[batch * self.batch_size : (batch + 1) * self.batch_size]
        random = getattr(self.transform, "needs_rng", False)
        block = slice(None)
        if self.shard is not None:
            index, count = self.shard
            first, stop = block_bounds(len(indices), count)[index]
            if random:  # the whole batch's draws, as one process makes them; then the block
                block = slice(first, stop)
            else:
                indices = indices[first:stop]
        empty = len(indices) == 0  # an empty shard of a small last batch
        images, labels = self._gather(order[:1] if empty else indices)
        if random:
            images = self.transform(images, self.augmentation_rng(epoch, batch))
        elif self.transform is not None:
            images = self.transform(images)
        images, labels = (images[:0], labels[:0]) if empty else (images[block], labels[block])
        return np.ascontiguousarray(images, dtype=np.float32), np.asarray(labels, dtype=np.int64)

    def _gather(self, indices):
        gather = getattr(self.dataset, "gather", None)
        if gather is not None:
            images, labels = gather(indices)
        else:  # a plain sequence of (image, label) pairs
            items = [self.dataset[int(i)] for i in indices]
            images = np.stack([image for image, _ in items])
            labels = np.array([label for _, label in items])
        return images, labels

    def __iter__(self) -> Iterator[tuple[NDArray[np.float32], NDArray[np.int64]]]:
        epoch = self.epoch
        order = self.order(epoch)
        self.epoch += 1

        def make_batch(batch):
            return self._batch(order, epoch, batch)

        if self.prefetch:
            yield from _prefetched(make_batch, len(self))
        else:
            for batch in range(len(self)):
                yield make_batch(batch)

    def __repr__(self) -> str:
        return (
            f"DataLoader(dataset={self.dataset!r}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}"
            + ("" if self.shard is None else f", shard={self.shard}")
            + ")"
        )


def _prefetched(make_batch: Callable[[int], Any], count: int) -> Iterator[Any]:
    """``make_batch(0)``, ..., ``make_batch(count - 1)``, each made in one background thread
    while the caller works on the one before.

    The queue holds one finished batch, so the thread is at most two batches ahead (one
    waiting, one being made). When the caller stops early (this generator is closed or
    garbage-collected), the ``finally`` sets ``stop`` and empties the queue: the thread's
    pending ``put`` then succeeds, it sees ``stop`` and ends.
    """
    ready: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work() -> None:
        for batch in range(count):
            item: tuple[Any, BaseException | None]
            try:
                item = (make_batch(batch), None)
            except BaseException as error:  # handed to the caller, raised there
                item = (None, error)
            ready.put(item)
            if stop.is_set() or item[1] is not None:
                return

    # A daemon: an iterator left unfinished until exit must not keep the interpreter alive.
    thread = threading.Thread(target=work, name="fastcnn-DataLoader-prefetch", daemon=True)
    thread.start()
    try:
        for _ in range(count):
            images_and_labels, error = ready.get()
            if error is not None:
                raise error  # its traceback still shows where in the thread it happened
            yield images_and_labels
    finally:
        stop.set()
        # At interpreter exit a daemon thread may already be frozen: then do not wait for it.
        while thread.is_alive() and not sys.is_finalizing():
            try:
                ready.get(timeout=0.01)  # free the thread's pending put
            except queue.Empty:
                pass


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
