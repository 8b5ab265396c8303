"""How ``fit`` steps a learning-rate scheduler: per batch or per epoch, and with which value.

A scheduler's ``steps_per`` ("epoch", or "batch" for OneCycleLR) says when; fit's
``scheduler_interval`` overrides it. ReduceLROnPlateau steps per epoch with the epoch's
validation loss (the training loss without a validation loader).
"""

from __future__ import annotations

import os
from typing import Any

from fastcnn.optim.lr_scheduler import LRScheduler, OneCycleLR, ReduceLROnPlateau
from fastcnn.train.checkpoint import IncompatibleCheckpointError


def resolve_interval(scheduler: LRScheduler | None, interval: str | None) -> str | None:
    """How often ``fit`` steps ``scheduler``: "batch" or "epoch" (None without one)."""
    if interval not in (None, "batch", "epoch"):
        raise ValueError(
            f"fit: scheduler_interval must be None (the scheduler's own steps_per), 'batch' "
            f"or 'epoch', got {interval!r}"
        )
    if scheduler is None:
        return None
    interval = scheduler.steps_per if interval is None else interval
    if interval == "batch" and isinstance(scheduler, ReduceLROnPlateau):
        raise ValueError(
            "fit: a ReduceLROnPlateau steps once per epoch with the epoch's loss; "
            "use scheduler_interval=None or 'epoch'"
        )
    return interval


def check_one_cycle_length(
    scheduler: LRScheduler | None,
    interval: str | None,
    remaining_epochs: int,
    train_loader: Any,
    resumed_from: str | os.PathLike[str] | None,
) -> None:
    """A OneCycleLR stepped per batch must last the run: refuse it before training (with
    ``IncompatibleCheckpointError`` when its state came from checkpoint ``resumed_from``)."""
    if not (isinstance(scheduler, OneCycleLR) and interval == "batch"):
        return
    batches = len(train_loader)
    needed = scheduler.last_epoch + remaining_epochs * batches
    if needed <= scheduler.total_steps:
        return
    if resumed_from is not None:
        raise IncompatibleCheckpointError(
            f"checkpoint {os.fspath(resumed_from)!r} holds a OneCycleLR of "
            f"{scheduler.total_steps} steps, {needed - scheduler.total_steps} too few for "
            "this run: resume with the epochs of the original run (the cycle spans them)"
        )
    raise ValueError(
        f"fit: the OneCycleLR has total_steps={scheduler.total_steps}, but this run "
        f"takes {needed} optimizer steps ({batches} batches per epoch); build it with "
        f"epochs=<fit's epochs> and steps_per_epoch={batches}"
    )


def step_epoch_scheduler(scheduler: LRScheduler, record: dict[str, Any], validating: bool) -> None:
    """The end-of-epoch step. ReduceLROnPlateau gets the validation loss when fit has a
    val_loader (and is not stepped after an epoch that ``eval_every`` leaves unvalidated:
    mixing in training losses would mislead its patience), else the training loss."""
    if isinstance(scheduler, ReduceLROnPlateau):
        if not validating:
            scheduler.step(record["train_loss"])
        elif "val_loss" in record:
            scheduler.step(record["val_loss"])
    else:
        scheduler.step()
