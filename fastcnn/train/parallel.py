"""fit's training steps on blocks of a batch: data-parallel on MPI ranks, and its replay.

- ``sharded_step``: the model is a ``DistributedDataParallel`` and the loader gives this rank
  its block of the global batch; ``backward`` averages the gradients over the ranks.
- ``block_step`` (``fit(..., accumulate=N)``): one process cuts each batch into the same N
  blocks, computes each block's gradient (the loss is the block's mean) and averages them
  in block order; the same float operations as N ranks, hence the same bits.

Both tally the batch from per-block rows (``block_totals``) added in block order, so the
history is the same too, and every rank sees a non-finite loss of any rank: they all stop
at the same batch, none is left waiting in a collective.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastcnn._data_parallel import (
    GradientBuffers,
    block_bounds,
    block_totals,
    ordered_mean,
    ordered_sum,
)
from fastcnn.distributed import DistributedDataParallel
from fastcnn.nn.module import Module
from fastcnn.optim.optimizer import Optimizer
from fastcnn.train.metrics import topk_correct


def _clear_gradients(model: Module, optimizer: Optimizer) -> None:
    """Each block's gradient starts from nothing (even for a parameter the optimizer lacks)."""
    optimizer.zero_grad()
    for param in model.parameters():
        param.grad = None


def _block_forward(model, loss_fn, images, labels, ks):
    """(loss or None for an empty block, the block's tally row)."""
    if len(labels) == 0:
        return None, block_totals(0.0, 0, [0] * len(ks))
    logits = model(images)
    loss = loss_fn(logits, labels)
    correct = [topk_correct(logits, labels, k) for k in ks]
    return loss, block_totals(loss, len(labels), correct)


def _finish(tally: Any, totals: np.ndarray) -> float:
    tally.add_totals(totals)
    return float(totals[0] / totals[1])


def block_step(
    model: Module, loss_fn: Any, optimizer: Optimizer, images, labels, tally, blocks: int
) -> float:
    """One step on a batch cut into ``blocks`` blocks; returns the batch's mean loss."""
    gradients = GradientBuffers(model.parameters())
    rows, flats = [], []
    for start, stop in block_bounds(len(labels), blocks):
        _clear_gradients(model, optimizer)
        loss, row = _block_forward(model, loss_fn, images[start:stop], labels[start:stop], tally.ks)
        rows.append(row)
        if loss is not None and math.isfinite(loss):
            model.backward(loss_fn.backward())
        flats.append(gradients.flatten())
    totals = ordered_sum(np.stack(rows))
    if math.isfinite(totals[0]):
        gradients.assign([ordered_mean(np.stack(group)) for group in zip(*flats, strict=True)])
        optimizer.step()
    return _finish(tally, totals)


def sharded_step(
    model: DistributedDataParallel, loss_fn: Any, optimizer: Optimizer, images, labels, tally
) -> float:
    """One step on this rank's block of the global batch; returns the global mean loss."""
    _clear_gradients(model, optimizer)
    loss, row = _block_forward(model, loss_fn, images, labels, tally.ks)
    totals = model.sum_in_rank_order(row)  # every rank learns of a non-finite loss
    if math.isfinite(totals[0]):
        if loss is None:
            model.reduce_gradients()  # an empty block still takes part, with zeros
        else:
            model.backward(loss_fn.backward())
        optimizer.step()
    return _finish(tally, totals)
