"""Callbacks of ``fit``: code run at fixed points of training, and able to stop it.

``fit(..., callbacks=[EarlyStopping(patience=3), ModelCheckpoint("run/best.npz")])``
calls, for each callback in order::

    on_train_begin(run)
    for each epoch:  on_epoch_begin(run, epoch)
                     on_batch_end(run, batch, logs)     # after each step
                     on_epoch_end(run, epoch, logs)     # after validation, before the checkpoint
    on_train_end(run)

``run`` is the ``Run`` of this ``fit`` call (model, optimizer, history, ...); setting
``run.stop_training = True`` ends training after the current epoch (Keras's name). A
callback with state to keep across ``resume=True`` returns it from ``state_dict`` (plain
JSON values) and takes it back in ``load_state_dict``: fit stores it in its checkpoint.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from fastcnn._validation import integer, real

if TYPE_CHECKING:
    from fastcnn.nn.module import Module
    from fastcnn.optim.lr_scheduler import LRScheduler
    from fastcnn.optim.optimizer import Optimizer
    from fastcnn.train.history import History

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "Run"]


class Run:
    """What ``fit`` shows its callbacks: the objects being trained and where training is.

    Attributes
    ----------
    model, optimizer, scheduler, train_loader
        As given to ``fit`` (the model unwrapped from a ``DistributedDataParallel``).
    history : History
        The records so far (the current epoch's is appended before ``on_epoch_end``).
    epochs : int
        The epoch ``fit`` trains up to.
    epoch : int
        The current epoch (1-based; 0 before the first).
    stop_training : bool
        Set it to True to end training after the current epoch.
    """

    def __init__(
        self,
        model: Module,
        optimizer: Optimizer,
        scheduler: LRScheduler | None,
        train_loader: object,
        history: History,
        epochs: int,
        *,
        series: set[str],
        extra: dict[str, Any] | None,
        checkpoint: str | os.PathLike[str] | None,
        writes: bool = True,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.writes = writes  # False on the MPI ranks but rank 0: they write no file
        self.train_loader, self.history, self.epochs = train_loader, history, epochs
        self.epoch = 0
        self.stop_training = False
        self.series = series  # the keys an epoch record can have
        self.extra, self.checkpoint = extra, checkpoint

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write the training checkpoint of the run as it is now (as ``fit`` writes its own;
        loadable by ``load_checkpoint``, ``restore_model`` and ``fastcnn eval``). Nothing on
        an MPI rank but rank 0."""
        from fastcnn.train.checkpoint import save_checkpoint

        if not self.writes:
            return
        save_checkpoint(
            path, self.model, self.optimizer, self.scheduler, self.train_loader, self.history,
            self.epoch, self.extra,
        )  # fmt: skip


class Callback:
    """Base class of ``fit``'s callbacks: every hook does nothing; override those needed."""

    def on_train_begin(self, run: Run) -> None:
        """Before the first epoch (of this call: after a resumed checkpoint is restored)."""

    def on_epoch_begin(self, run: Run, epoch: int) -> None:
        """Before epoch ``epoch`` (1-based) trains."""

    def on_batch_end(self, run: Run, batch: int, logs: dict[str, float]) -> None:
        """After training step ``batch`` (1-based); ``logs`` holds the running ``loss`` and
        metrics of the epoch so far."""

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        """After the epoch's validation; ``logs`` is its History record (``train_loss``,
        ``val_accuracy``, ``lr``, ...). Runs before fit writes its checkpoint."""

    def on_train_end(self, run: Run) -> None:
        """After the last epoch, or the one a callback stopped at (not after an error)."""

    def state_dict(self) -> dict[str, Any]:
        """What ``resume=True`` must restore, as JSON values; {} (the default): nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what ``state_dict`` returned."""


class _Monitor:
    """The best value so far of one History series, and whether a new value improves it."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float) -> None:
        if not isinstance(monitor, str):
            raise TypeError(f"{owner}: monitor must be a str such as 'val_loss', got {monitor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"{owner}: mode must be 'min' or 'max', got {mode!r}")
        self.owner, self.monitor, self.mode = owner, monitor, mode
        self.min_delta = real(min_delta, "min_delta", owner, low=0.0)
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0

    def check_series(self, run: Run) -> None:
        if self.monitor not in run.series:
            hint = ""
            if self.monitor.startswith("val_"):
                hint = " (validation values need fit(val_loader=...))"
            raise ValueError(
                f"{self.owner}: monitor {self.monitor!r} is not a series this run records"
                f"{hint}; choose one of {sorted(run.series)}"
            )

    def value(self, logs: dict[str, Any]) -> float | None:
        """The monitored value of an epoch, or None if it has none (not evaluated, NaN)."""
        value = logs.get(self.monitor)
        return None if value is None or math.isnan(value) else float(value)

    def improves(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


class _MonitoringCallback(Callback):
    """A callback that follows one monitored value (``_Monitor``): its best so far."""

    _monitor: _Monitor

    @property
    def best(self) -> float:
        return self._monitor.best

    @property
    def best_epoch(self) -> int:
        return self._monitor.best_epoch


class EarlyStopping(_MonitoringCallback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    As Keras's and Lightning's: an epoch improves on the best value so far if it is lower
    (``mode="min"``) or higher (``"max"``) by more than ``min_delta``; after ``patience``
    epochs in a row without improvement, training stops. Epochs without the value (no
    validation that epoch, see ``fit(eval_every=...)``) are not counted. A resumed run
    continues the count (the state is in fit's checkpoint) and a run that stopped stays
    stopped.

    Attributes
    ----------
    best : float
    best_epoch : int
    wait : int
        Epochs since the best one (among those with a value).
    stopped_epoch : int
        The epoch training stopped at, 0 if it did not.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int = 0,
        min_delta: float = 0.0,
    ) -> None:
        self._monitor = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience = integer(patience, "patience", "EarlyStopping", minimum=0)
        self.wait = 0
        self.stopped_epoch = 0

    def on_train_begin(self, run: Run) -> None:
        self._monitor.check_series(run)
        if self.stopped_epoch:  # restored from a run that had stopped
            run.stop_training = True

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        value = self._monitor.value(logs)
        if value is None:
            return
        if self._monitor.improves(value):
            self._monitor.best, self._monitor.best_epoch = value, epoch
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            run.stop_training = True

    def state_dict(self) -> dict[str, Any]:
        return {
            **self._monitor.state_dict(),
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._monitor.load_state_dict(state)
        self.wait, self.stopped_epoch = int(state["wait"]), int(state["stopped_epoch"])

    def __repr__(self) -> str:
        m = self._monitor
        return (
            f"EarlyStopping(monitor={m.monitor!r}, mode={m.mode!r}, patience={self.patience}, "
            f"min_delta={m.min_delta})"
        )


class ModelCheckpoint(_MonitoringCallback):
    """Keep the training checkpoint of the best epoch so far in ``path`` (e.g. ``best.npz``).

    After each epoch whose ``monitor`` value is the best yet (lower for ``mode="min"``,
    higher for ``"max"``), the run is written to ``path`` in the format of fit's own
    checkpoint (no pickle; atomically), so ``load_checkpoint``, ``restore_model``,
    ``fastcnn eval`` and ``fastcnn predict`` read it. As Keras's
    ``ModelCheckpoint(save_best_only=True)``. The best value survives ``resume=True``.

    Attributes
    ----------
    best : float
    best_epoch : int
        The epoch whose checkpoint ``path`` holds (0: none yet).
    """

    def __init__(
        self, path: str | os.PathLike[str], monitor: str = "val_loss", mode: str = "min"
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"ModelCheckpoint: path must be a str or os.PathLike such as 'run/best.npz', "
                f"got {type(path).__name__} {path!r}"
            )
        self.path = os.fspath(path)
        self._monitor = _Monitor("ModelCheckpoint", monitor, mode, 0.0)

    def on_train_begin(self, run: Run) -> None:
        self._monitor.check_series(run)
        own = run.checkpoint
        if own is not None and os.path.abspath(own) == os.path.abspath(self.path):
            raise ValueError(
                f"ModelCheckpoint: path {self.path!r} is fit's own checkpoint, which is "
                "rewritten every epoch; give the best checkpoint another name, e.g. 'best.npz'"
            )

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        value = self._monitor.value(logs)
        if value is not None and self._monitor.improves(value):
            self._monitor.best, self._monitor.best_epoch = value, epoch
            run.save_checkpoint(self.path)

    def state_dict(self) -> dict[str, Any]:
        return self._monitor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._monitor.load_state_dict(state)

    def __repr__(self) -> str:
        m = self._monitor
        return f"ModelCheckpoint({self.path!r}, monitor={m.monitor!r}, mode={m.mode!r})"
