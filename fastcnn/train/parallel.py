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
from fastcnn.nn.utils import clip_grad_norm_
from fastcnn.optim.optimizer import Optimizer
from fastcnn.train.metrics import batch_sum


def clip_gradients(model: Module, max_norm: float | None) -> None:
    """fit's clip_grad_norm: the gradient the optimizer is about to step with, clipped to
    ``max_norm`` (a no-op for None). On ranks and blocks it is their mean, the same
    everywhere, so every rank clips alike and accumulate keeps the ranks' bits."""
    if max_norm is not None:
        clip_grad_norm_(model.parameters(), max_norm)


def _clear_gradients(model: Module, optimizer: Optimizer) -> None:
    """Each block's gradient starts from nothing (even for a parameter the optimizer lacks)."""
    optimizer.zero_grad()
    for param in model.parameters():
        param.grad = None


def _block_forward(model, loss_fn, images, labels, metrics):
    """(loss or None for an empty block, the block's tally row); metrics as _Tally's."""
    if len(labels) == 0:
        return None, block_totals(0.0, 0, [0] * len(metrics))
    logits = model(images)
    loss = loss_fn(logits, labels)
    sums = [batch_sum(name, metric, logits, labels) for name, metric in metrics.items()]
    return loss, block_totals(loss, len(labels), sums)


def _finish(tally: Any, totals: np.ndarray) -> float:
    tally.add_totals(totals)
    return float(totals[0] / totals[1])


def block_step(
    model: Module,
    loss_fn: Any,
    optimizer: Optimizer,
    images,
    labels,
    tally,
    blocks: int,
    clip_grad_norm: float | None = None,
) -> float:
    """One step on a batch cut into ``blocks`` blocks; returns the batch's mean loss."""
    gradients = GradientBuffers(model.parameters())
    rows, flats = [], []
    for start, stop in block_bounds(len(labels), blocks):
        _clear_gradients(model, optimizer)
        loss, row = _block_forward(
            model, loss_fn, images[start:stop], labels[start:stop], tally.metrics
        )
        rows.append(row)
        if loss is not None and math.isfinite(loss):
            model.backward(loss_fn.backward())
        flats.append(gradients.flatten())
    totals = ordered_sum(np.stack(rows))
    if math.isfinite(totals[0]):
        gradients.assign([ordered_mean(np.stack(group)) for group in zip(*flats, strict=True)])
        clip_gradients(model, clip_grad_norm)
        optimizer.step()
    return _finish(tally, totals)


def sharded_step(
    model: DistributedDataParallel,
    loss_fn: Any,
    optimizer: Optimizer,
    images,
    labels,
    tally,
    clip_grad_norm: float | None = None,
) -> float:
    """One step on this rank's block of the global batch; returns the global mean loss."""
    _clear_gradients(model, optimizer)
    loss, row = _block_forward(model, loss_fn, images, labels, tally.metrics)
    totals = model.sum_in_rank_order(row)  # every rank learns of a non-finite loss
    if math.isfinite(totals[0]):
        if loss is None:
            model.reduce_gradients()  # an empty block still takes part, with zeros
        else:
            model.backward(loss_fn.backward())
        clip_gradients(model, clip_grad_norm)
        optimizer.step()
    return _finish(tally, totals)
