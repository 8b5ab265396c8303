"""fit, evaluate and predict: the training loop every seed notebook writes by hand."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import reprlib
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._grad_mode import no_grad
from fastcnn._validation import flag, instance_of, integer, real
from fastcnn.data.loader import DataLoader
from fastcnn.distributed import DistributedDataParallel
from fastcnn.nn.module import Module
from fastcnn.optim.lr_scheduler import LRScheduler
from fastcnn.optim.optimizer import Optimizer
from fastcnn.train.callbacks import Callback, Run
from fastcnn.train.checkpoint import restore_checkpoint, save_checkpoint
from fastcnn.train.history import History
from fastcnn.train.metrics import MetricLike, batch_sum, metric_functions
from fastcnn.train.parallel import block_step, clip_gradients, sharded_step
from fastcnn.train.progress import format_epoch_summary, make_progress
from fastcnn.train.schedule import check_one_cycle_length, resolve_interval, step_epoch_scheduler

__all__ = ["NonFiniteLossError", "evaluate", "fit", "predict"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; ``fit`` stopped.

    Attributes
    ----------
    epoch, batch : int
        Where it happened (1-based).
    loss : float
    """

    def __init__(self, message: str, epoch: int, batch: int, loss: float) -> None:
        super().__init__(message)
        self.epoch, self.batch, self.loss = epoch, batch, loss


def _check_model(owner, model):
    instance_of(model, "model", owner, Module, "a fastcnn.nn.Module")


def _check_reduction(owner, loss_fn):
    """A loop needs one loss per batch: refuse reduction='none', as torch's backward of a
    non-scalar loss does, rather than pick a reduction for the user."""
    if getattr(loss_fn, "reduction", None) == "none":
        raise ValueError(
            f"{owner}: loss_fn has reduction='none' (one loss per sample), but {owner} needs "
            "one loss per batch: pass a loss with reduction='mean' (the default) or 'sum'"
        )


def _check_loader(owner, name, loader, sized=False):
    """A TypeError unless ``loader`` can be iterated (and, if ``sized``, has a length)."""
    if not hasattr(loader, "__iter__") or (sized and not hasattr(loader, "__len__")):
        kind = "a DataLoader or a sized iterable" if sized else "an iterable"
        raise TypeError(
            f"{owner}: {name} must be {kind} of (images, labels) batches, "
            f"got {type(loader).__name__}"
        )


def _pairs(loader, name):
    """The batches of ``loader``, each checked to be an ``(images, labels)`` pair."""
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(
                f"{name} must yield (images, labels) pairs, got a batch of type "
                f"{type(batch).__name__}: {reprlib.repr(batch)}"
            )
        yield batch


@contextlib.contextmanager
def eval_mode(model: Module) -> Iterator[Module]:
    """Run the block with ``model.eval()``; restore the previous mode afterwards."""
    _check_model("eval_mode", model)
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class _Tally:
    """Sums over the batches of one pass: loss and metrics (weighted by batch size)."""

    def __init__(self, metrics):
        self.metrics = metrics  # {name: k or function}, from metric_functions
        self.count = 0
        self.loss_sum = 0.0
        self.sums = dict.fromkeys(metrics, 0)

    def add(self, logits, labels, loss):
        n = len(labels)
        self.count += n
        if loss is not None:
            self.loss_sum += loss * n
        for name, metric in self.metrics.items():
            self.sums[name] += batch_sum(name, metric, logits, labels)

    def add_totals(self, totals):
        """Add a batch tallied in blocks: (loss x count, count, each metric's sum)."""
        self.count += int(totals[1])
        self.loss_sum += float(totals[0])
        for i, name in enumerate(self.sums):
            total = totals[2 + i]
            self.sums[name] += int(total) if isinstance(self.metrics[name], int) else float(total)

    def values(self, with_loss=True):
        result = {"loss": self.loss_sum / self.count} if with_loss else {}
        result.update((name, total / self.count) for name, total in self.sums.items())
        return result


def evaluate(
    model: Module,
    loader: Iterable[Any],
    loss_fn: Module | None = None,
    metrics: MetricLike | Sequence[MetricLike] = ("accuracy", "top5"),
) -> dict[str, float]:
    """Loss and metrics of ``model`` over every batch of ``loader``, in eval mode.

    Parameters
    ----------
    model : Module
    loader : iterable of (images, labels)
        A ``DataLoader`` (or any iterable of batches).
    loss_fn : callable, optional
        If given, the mean loss is reported as ``"loss"``.
    metrics : sequence of str
        ``"accuracy"`` (top-1) and/or ``"topK"``.

    Returns
    -------
    dict
        ``{"loss": ..., "accuracy": ..., "top5": ...}`` (fractions in [0, 1]). The model's
        train/eval mode is restored afterwards.
    """
    _check_model("evaluate", model)
    _check_reduction("evaluate", loss_fn)
    _check_loader("evaluate", "loader", loader)
    functions = metric_functions(metrics)
    return _evaluate(model, _pairs(loader, "evaluate: loader"), loss_fn, functions)


def _evaluate(model, batches, loss_fn, metrics):
    """``evaluate`` on checked arguments; ``batches`` yields (images, labels) pairs."""
    tally = _Tally(metrics)
    with eval_mode(model), no_grad():  # nothing kept for a backward
        for images, labels in batches:
            logits = model(images)
            tally.add(logits, labels, None if loss_fn is None else loss_fn(logits, labels))
    if tally.count == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    return tally.values(with_loss=loss_fn is not None)


def predict(model: Module, x: ArrayLike, batch_size: int = 256) -> NDArray[np.floating]:
    """The model's outputs (logits) for the images ``x`` ``(N, C, H, W)``, in eval mode.

    Runs in batches of ``batch_size`` to bound memory; ``predict(...).argmax(1)`` gives the
    predicted classes.
    """
    _check_model("predict", model)
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"predict expects images of shape (N, C, H, W), got shape {x.shape}")
    batch_size = integer(batch_size, "batch_size", "predict", minimum=1)
    if len(x) == 0:
        raise ValueError("predict got no images (an array of shape (0, C, H, W))")
    with eval_mode(model), no_grad():
        outputs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(outputs)


def _train_step(model, loss_fn, optimizer, images, labels, clip_grad_norm=None):
    logits = model(images)
    loss = loss_fn(logits, labels)
    if math.isfinite(loss):
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        clip_gradients(model, clip_grad_norm)
        optimizer.step()
    return logits, loss


def _plain_step(model, loss_fn, optimizer, images, labels, tally, clip_grad_norm=None):
    logits, loss = _train_step(model, loss_fn, optimizer, images, labels, clip_grad_norm)
    tally.add(logits, labels, loss)
    return loss


def _step_function(model, accumulate, clip_grad_norm):
    """How ``fit`` takes a step: on this rank's block, on ``accumulate`` blocks, or whole;
    each clips the gradient it steps with (the ranks' or blocks' mean) to ``clip_grad_norm``."""
    if isinstance(model, DistributedDataParallel):
        return functools.partial(sharded_step, clip_grad_norm=clip_grad_norm)
    if accumulate > 1:
        return functools.partial(block_step, blocks=accumulate, clip_grad_norm=clip_grad_norm)
    return functools.partial(_plain_step, clip_grad_norm=clip_grad_norm)


def _non_finite(what, loss, epoch, batch, checkpoint):
    kept = ""
    if checkpoint is not None and os.path.exists(checkpoint):
        kept = f"; the last good checkpoint {os.fspath(checkpoint)!r} is kept"
    return NonFiniteLossError(
        f"{what} at epoch {epoch}, batch {batch}: training diverged. "
        f"Try a lower learning rate (e.g. a tenth of the current one){kept}",
        epoch,
        batch,
        loss,
    )


def _check_parameters_finite(model, state, batches):
    """The last step of an epoch can overflow the weights while its loss was still finite:
    never checkpoint such a model."""
    for name, param in model.named_parameters():
        if not np.isfinite(param.data).all():
            what = f"parameter {name!r} became non-finite (NaN or infinity)"
            raise _non_finite(what, math.nan, state.epoch, batches, state.checkpoint)


def _train_epoch(model, loss_fn, optimizer, loader, state):
    """One pass over ``loader``; returns the epoch's train values."""
    tally = _Tally(state.metrics)
    batches = len(loader)
    batch = 0
    started = time.perf_counter()
    model.train()
    for batch, (images, labels) in enumerate(_pairs(loader, "fit: train_loader"), start=1):
        loss = state.train_step(model, loss_fn, optimizer, images, labels, tally)
        if not math.isfinite(loss):
            what = f"the training loss became {loss}"
            raise _non_finite(what, loss, state.epoch, batch, state.checkpoint)
        if state.batch_scheduler is not None:  # after every optimizer step (OneCycleLR)
            state.batch_scheduler.step()
        log = batch % state.log_every == 0 or batch == batches
        running = tally.values()
        if log:
            state.history.running.append(
                {"epoch": state.epoch, "batch": batch, "batches": batches, **running}
            )
        speed = tally.count / max(time.perf_counter() - started, 1e-9)
        state.reporter.update(batch, running, speed, log)
        for callback in state.callbacks:
            callback.on_batch_end(state.run, batch, running)
    if batch == 0:
        raise ValueError(
            "the training loader yielded no batches (drop_last=True with fewer items than "
            "batch_size?)"
        )
    _check_parameters_finite(model, state, batch)
    return tally.values()


class _RunState:
    """What one ``fit`` call carries from epoch to epoch."""

    def __init__(self, metrics, history, reporter, checkpoint, log_every, epochs, train_step):
        self.metrics, self.history, self.reporter = metrics, history, reporter
        self.checkpoint, self.log_every, self.epochs = checkpoint, log_every, epochs
        self.train_step = train_step
        self.epoch = 0
        self.batch_scheduler = None  # the scheduler, when it steps per batch
        self.eval_every = 1
        self.callbacks = []
        self.run = None

    def evaluates(self, epoch):
        """Whether epoch ``epoch`` is validated: every ``eval_every``-th, and the last."""
        return epoch % self.eval_every == 0 or epoch == self.epochs


def _check_fit_objects(model, loss_fn, optimizer, train_loader, val_loader, scheduler):
    """The objects ``fit`` calls methods of, checked before any work is done."""
    _check_model("fit", model)
    instance_of(
        loss_fn, "loss_fn", "fit", Module, "a fastcnn.nn.Module such as nn.CrossEntropyLoss()"
    )
    _check_reduction("fit", loss_fn)
    instance_of(optimizer, "optimizer", "fit", Optimizer, "a fastcnn.optim.Optimizer")
    if scheduler is not None:
        instance_of(
            scheduler, "scheduler", "fit", LRScheduler, "a fastcnn.optim.LRScheduler or None"
        )
    _check_loader("fit", "train_loader", train_loader, sized=True)
    if val_loader is not None:
        _check_loader("fit", "val_loader", val_loader)


def _check_fit_args(epochs, log_every, resume, checkpoint, eval_every, accumulate):
    integer(epochs, "epochs", "fit", minimum=0)
    integer(log_every, "log_every", "fit", minimum=1)
    integer(eval_every, "eval_every", "fit", minimum=1)
    integer(accumulate, "accumulate", "fit", minimum=1)
    if flag(resume, "resume", "fit") and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH (the file to resume from)")


def _check_data_parallel(model, train_loader, accumulate):
    """A DistributedDataParallel model trains on this rank's shard of every batch."""
    if not isinstance(model, DistributedDataParallel):
        return
    if accumulate != 1:
        raise ValueError(
            f"fit: accumulate={accumulate} with a DistributedDataParallel model: the ranks "
            "already split each batch; use accumulate=N in one process to replay N ranks"
        )
    expected = (model.rank, model.world_size)
    if isinstance(train_loader, DataLoader) and train_loader.shard != expected:
        raise ValueError(
            f"fit: a DistributedDataParallel model needs train_loader=DataLoader(..., "
            f"shard={expected}) (this rank's block of every batch), got shard="
            f"{train_loader.shard}"
        )


def fit(
    model: Module,
    loss_fn: Module,
    optimizer: Optimizer,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    epochs: int = 1,
    scheduler: LRScheduler | None = None,
    metrics: MetricLike | Sequence[MetricLike] = ("accuracy", "top5"),
    progress: bool | str = True,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    log_every: int = 100,
    extra: dict[str, Any] | None = None,
    scheduler_interval: str | None = None,
    clip_grad_norm: float | None = None,
    callbacks: Sequence[Callback] = (),
    eval_every: int = 1,
    accumulate: int = 1,
) -> History:
    """Train ``model`` for ``epochs`` epochs; return the ``History``.

    Each epoch: ``model.train()``, then for every batch forward, loss, ``zero_grad``,
    backward, (``clip_grad_norm_``), ``step`` (and ``scheduler.step()`` if it steps per
    batch); then evaluation on ``val_loader`` (in eval mode), ``scheduler.step()`` if it
    steps per epoch, the callbacks' ``on_epoch_end`` and, if ``checkpoint`` is set, a
    checkpoint.

    Parameters
    ----------
    model : Module
    loss_fn : Module
        E.g. ``fastcnn.nn.CrossEntropyLoss()``, with ``reduction="mean"`` (or ``"sum"``): a
        ``"none"`` loss is refused (ValueError), as torch's backward refuses a non-scalar.
    optimizer : Optimizer
    train_loader : DataLoader
        Iterated once per epoch (a ``DataLoader`` shuffles each epoch differently, and
        reproducibly for a seed; its state is checkpointed so a resumed run continues with the
        same order).
    val_loader : DataLoader, optional
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    scheduler : LRScheduler, optional
        Stepped after every optimizer step if it steps per batch (its ``steps_per`` is
        ``"batch"``: OneCycleLR), else once per epoch after validation. A
        ``ReduceLROnPlateau`` gets the epoch's validation loss (the training loss without
        ``val_loader``; with ``eval_every`` > 1 it is stepped after the validated epochs
        only).
    metrics : sequence of str or callable
        ``"accuracy"`` (top-1) and ``"topK"`` names, and functions ``fn(logits, labels)``
        returning the batch's mean as a float (its ``__name__`` names the series:
        ``train_<name>``, ``val_<name>``); each is averaged over the images of the epoch.
    progress : bool or {"tqdm", "text"}
        True: a tqdm bar if tqdm is installed, else plain text lines; False: silent.
    checkpoint : str or os.PathLike, optional
        Written after every epoch (atomically): model, optimizer, scheduler, epoch, history,
        the loader's shuffling state and every random generator inside the model.
    resume : bool
        Continue from ``checkpoint``: the result is bit for bit that of a run never stopped.
    log_every : int
        Record (and print, in text mode) the running loss and metrics every this many batches.
    extra : dict, optional
        Saved in the checkpoint under ``"extra"`` (e.g. how to rebuild the model).
    scheduler_interval : {None, "batch", "epoch"}
        Overrides the scheduler's ``steps_per``: e.g. ``"batch"`` for a CosineAnnealingLR
        whose ``T_max`` counts optimizer steps.
    clip_grad_norm : float, optional
        Clip the gradients to this total 2-norm (``fastcnn.nn.utils.clip_grad_norm_`` over
        ``model.parameters()``) before every optimizer step.
    callbacks : sequence of Callback
        E.g. ``EarlyStopping``, ``ModelCheckpoint`` (``fastcnn.train.callbacks``); their
        state is saved in the checkpoint and restored by ``resume``.
    eval_every : int
        Validate every this many epochs, and after the last one. The records of the other
        epochs have no ``val_`` values (``history["val_loss"]`` gives NaN for them).
    accumulate : int
        Cut each batch into this many contiguous blocks, compute each block's gradient (its
        loss the block's mean) and step once with their mean, added in block order: the bits
        of ``accumulate`` MPI ranks (``fastcnn.distributed``), and big batches on little
        memory. BatchNorm's running statistics are updated by every block.

    With a ``fastcnn.distributed.DistributedDataParallel`` model (and a train loader with
    ``shard=(rank, world_size)``), every rank trains its block of each batch; only rank 0
    shows progress and writes the checkpoint, which holds the unwrapped model.

    Returns
    -------
    History

    Raises
    ------
    TypeError, ValueError
        A wrong argument (checked before any work is done): the message names it.
    NonFiniteLossError
        The loss became NaN or infinite; the message gives the epoch and batch. The last
        checkpoint (of the last finished epoch) is left as it was.
    FileNotFoundError, fastcnn.CheckpointError, IncompatibleCheckpointError
        With ``resume``: no checkpoint, a damaged one, or one of another model, optimizer
        or scheduler setting.
    """
    _check_fit_objects(model, loss_fn, optimizer, train_loader, val_loader, scheduler)
    functions = metric_functions(metrics)
    names = tuple(functions)
    _check_fit_args(epochs, log_every, resume, checkpoint, eval_every, accumulate)
    _check_data_parallel(model, train_loader, accumulate)
    callbacks = _check_callbacks(callbacks)
    interval = resolve_interval(scheduler, scheduler_interval)
    if clip_grad_norm is not None:
        real(clip_grad_norm, "clip_grad_norm", "fit", 0.0, low_open=True)
    # Checkpoints hold the unwrapped model (they load without MPI); rank 0 alone writes.
    parallel = isinstance(model, DistributedDataParallel)
    saved_model = model.module if parallel else model
    main_rank = not parallel or model.rank == 0
    history = History(names)
    start = 0
    if resume:
        assert checkpoint is not None  # _check_fit_args refused resume=True without one
        start, history = restore_checkpoint(
            checkpoint, saved_model, optimizer, scheduler, train_loader, callbacks
        )
    resumed_from = checkpoint if resume else None
    check_one_cycle_length(scheduler, interval, epochs - start, train_loader, resumed_from)
    reporter = make_progress(progress if main_rank else False, names)
    train_step = _step_function(model, accumulate, clip_grad_norm)
    state = _RunState(functions, history, reporter, checkpoint, log_every, epochs, train_step)
    state.batch_scheduler = scheduler if interval == "batch" else None
    state.eval_every, state.callbacks = eval_every, callbacks
    state.run = run = Run(
        saved_model, optimizer, scheduler, train_loader, history, epochs,
        series=_series(names, val_loader is not None), extra=extra, checkpoint=checkpoint,
        writes=main_rank,
    )  # fmt: skip
    for callback in callbacks:
        callback.on_train_begin(run)
    for epoch in range(start + 1, epochs + 1):
        if run.stop_training:
            break
        state.epoch = run.epoch = epoch
        try:
            _run_epoch(model, loss_fn, optimizer, train_loader, val_loader, scheduler, state)
        except BaseException:
            reporter.abort()
            raise
        if checkpoint is not None and main_rank:
            save_checkpoint(
                checkpoint, saved_model, optimizer, scheduler, train_loader, history, epoch,
                extra, callbacks,
            )  # fmt: skip
        state.reporter.end_epoch(format_epoch_summary(history.epochs[-1], names, epochs))
    for callback in callbacks:
        callback.on_train_end(run)
    return history


def _series(metrics, validates):
    """The keys of fit's epoch records (what a callback may monitor)."""
    splits = ("train", "val") if validates else ("train",)
    return {"lr", "seconds"} | {f"{s}_{m}" for s in splits for m in ("loss", *metrics)}


def _check_callbacks(callbacks):
    """``fit(callbacks=...)`` as a list, each checked to be a Callback."""
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            "fit: callbacks must be a list of fastcnn.train.Callback objects, got "
            f"{type(callbacks).__name__}; wrap a single callback in a list"
        )
    for callback in callbacks:
        instance_of(callback, "each of callbacks", "fit", Callback, "a fastcnn.train.Callback")
    return list(callbacks)


def _run_epoch(model, loss_fn, optimizer, train_loader, val_loader, scheduler, state):
    started = time.perf_counter()
    state.reporter.start_epoch(state.epoch, state.epochs, len(train_loader))
    for callback in state.callbacks:
        callback.on_epoch_begin(state.run, state.epoch)
    lr = optimizer.param_groups[0]["lr"]
    record = {"epoch": state.epoch}
    record.update(
        (f"train_{k}", v)
        for k, v in _train_epoch(model, loss_fn, optimizer, train_loader, state).items()
    )
    if val_loader is not None and state.evaluates(state.epoch):
        values = _evaluate(model, _pairs(val_loader, "fit: val_loader"), loss_fn, state.metrics)
        record.update((f"val_{k}", v) for k, v in values.items())
    if scheduler is not None and state.batch_scheduler is None:
        step_epoch_scheduler(scheduler, record, validating=val_loader is not None)
    record.update(lr=lr, seconds=time.perf_counter() - started)
    state.history.epochs.append(record)
    for callback in state.callbacks:
        callback.on_epoch_end(state.run, state.epoch, record)
