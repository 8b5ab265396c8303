"""What data-parallel training on N ranks and its one-process replay (``fit(accumulate=N)``)
share, so that both run literally the same float operations.

- ``block_bounds``: how a global batch is cut into N contiguous blocks (rank r, or block r,
  takes block r), as ``np.array_split`` cuts: the first ``count % N`` blocks get one more
  item. A batch smaller than N leaves the last blocks empty.
- ``GradientBuffers``: a model's gradients as one flat array per dtype, in parameter order.
- ``ordered_mean``: the sum of the blocks' flat gradients in block order, then one division
  by N (an empty block adds zeros), as PyTorch's DDP divides by the world size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fastcnn.nn.parameter import Parameter


def block_bounds(count: int, blocks: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each of ``blocks`` contiguous blocks of ``count`` items."""
    size, extra = divmod(count, blocks)
    bounds, start = [], 0
    for index in range(blocks):
        stop = start + size + (1 if index < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def ordered_sum(stacked: NDArray[Any]) -> NDArray[Any]:
    """``stacked[0] + stacked[1] + ...`` along the first axis, in that order."""
    total = stacked[0].copy()
    for row in stacked[1:]:
        total += row
    return total


def ordered_mean(stacked: NDArray[Any]) -> NDArray[Any]:
    """The block-ordered sum of the rows of ``stacked``, divided by the number of rows."""
    total = ordered_sum(stacked)
    total /= total.dtype.type(len(stacked))
    return total


class GradientBuffers:
    """The gradients of ``parameters`` as one flat array per dtype (first-seen order)."""

    def __init__(self, parameters: Iterable[Parameter]) -> None:
        groups: dict[np.dtype[Any], list[Parameter]] = {}
        for param in parameters:
            if param.requires_grad:
                groups.setdefault(param.data.dtype, []).append(param)
        self.groups = list(groups.items())

    def sizes(self) -> list[int]:
        return [sum(p.data.size for p in params) for _, params in self.groups]

    def flatten(self) -> list[NDArray[Any]]:
        """One fresh array per dtype; a parameter without a gradient contributes zeros."""
        flats = []
        for (dtype, params), size in zip(self.groups, self.sizes(), strict=True):
            flat = np.zeros(size, dtype=dtype)
            offset = 0
            for param in params:
                if param.grad is not None:
                    flat[offset : offset + param.data.size] = np.ravel(param.grad)
                offset += param.data.size
            flats.append(flat)
        return flats

    def assign(self, flats: Sequence[NDArray[Any]]) -> None:
        """Set every parameter's ``.grad`` to its slice of ``flats`` (a copy)."""
        for (_, params), flat in zip(self.groups, flats, strict=True):
            offset = 0
            for param in params:
                size = param.data.size
                param.grad = flat[offset : offset + size].reshape(param.data.shape).copy()
                offset += size


def block_totals(loss: float, count: int, sums: Sequence[float]) -> NDArray[np.float64]:
    """One block's contribution to a batch's tally: (loss x count, count, each metric's sum
    over the block: top-k hits, or a metric function's mean x count)."""
    return np.array([loss * count if count else 0.0, count, *sums], dtype=np.float64)
