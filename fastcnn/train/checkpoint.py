"""Checkpoints of a training run: everything needed to continue it bit for bit.

A checkpoint is written with ``fastcnn.save`` (a temporary file renamed into place, so a
crash never leaves a half-written one) and holds the model's and optimizer's state dicts, the
scheduler's, the number of finished epochs, the history, the train loader's shuffling state
and the state of every random generator inside the model (Dropout's masks).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fastcnn.train.history import History

if TYPE_CHECKING:
    from fastcnn.nn.module import Module
    from fastcnn.optim.lr_scheduler import LRScheduler
    from fastcnn.optim.optimizer import Optimizer
    from fastcnn.train.callbacks import Callback

PathT = str | os.PathLike[str]

__all__ = [
    "IncompatibleCheckpointError",
    "load_checkpoint",
    "restore_checkpoint",
    "save_checkpoint",
]

FORMAT = "fastcnn-training-checkpoint"


class IncompatibleCheckpointError(ValueError):
    """A readable fastcnn file that cannot restore this run.

    It is not a training checkpoint (bare weights, say), or it was saved from another model,
    optimizer or scheduler setting. The message names the file and what differs. A damaged
    file raises ``fastcnn.CheckpointError`` instead, a missing one ``FileNotFoundError``.
    A ValueError, as it was before it had its own type.
    """


def _generators(model):
    """(dotted attribute name, Generator) for every np.random.Generator held by a module."""
    for prefix, module in model.named_modules():
        for name, value in sorted(vars(module).items()):
            if isinstance(value, np.random.Generator):
                yield (f"{prefix}.{name}" if prefix else name), value


def generator_states(model: Module) -> str:
    """The bit-generator state of every generator in ``model``, as a JSON string."""
    return json.dumps({name: rng.bit_generator.state for name, rng in _generators(model)})


def set_generator_states(model: Module, text: str, path: str) -> None:
    """Give the generators of ``model`` the states ``generator_states`` saved as ``text``."""
    states = json.loads(text)
    generators = dict(_generators(model))
    if set(states) != set(generators):
        raise IncompatibleCheckpointError(
            f"checkpoint {path!r} has random generators {sorted(states)} but the model has "
            f"{sorted(generators)}: it was saved from a different model"
        )
    for name, state in states.items():
        generators[name].bit_generator.state = state


def callback_states(callbacks: Sequence[Callback]) -> dict[str, Any]:
    """``{"<position>.<class name>": state}`` of the callbacks that have state to keep."""
    states = {}
    for position, callback in enumerate(callbacks):
        state = callback.state_dict()
        if state:
            states[f"{position}.{type(callback).__name__}"] = state
    return states


def _restore_callbacks(state, callbacks, path):
    saved = json.loads(state.get("callbacks", "{}"))
    own = callback_states(callbacks)
    if set(saved) != set(own):
        raise IncompatibleCheckpointError(
            f"checkpoint {path!r} has the state of callbacks {sorted(saved)} but fit was "
            f"given callbacks with state {sorted(own)}; resume with the same callbacks, in "
            "the same order, as the original run"
        )
    for position, callback in enumerate(callbacks):
        key = f"{position}.{type(callback).__name__}"
        if key in saved:
            callback.load_state_dict(saved[key])


def save_checkpoint(
    path: PathT,
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    loader: object,
    history: History,
    epoch: int,
    extra: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
) -> None:
    """Write the state of a run after ``epoch`` finished epochs to ``path`` (atomically),
    with the state of each of ``callbacks`` that has one."""
    from fastcnn.io import save

    state = {
        "format": FORMAT,
        "model_class": type(model).__name__,
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": json.dumps(history.to_dict()),
        "rng_states": generator_states(model),
        "extra": {} if extra is None else dict(extra),
    }
    if callbacks:
        state["callbacks"] = json.dumps(callback_states(callbacks))
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if hasattr(loader, "state_dict"):
        state["train_loader"] = loader.state_dict()
    save(state, path)


def load_checkpoint(path: PathT) -> dict[str, Any]:
    """Read a checkpoint written by ``fit`` and check it is one.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    fastcnn.io.CheckpointError
        The file is damaged or not a fastcnn checkpoint.
    IncompatibleCheckpointError
        A valid fastcnn file that is not a training checkpoint (e.g. bare weights).
    """
    from fastcnn.io import load

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist")
    state = load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise IncompatibleCheckpointError(
            f"{os.fspath(path)!r} is not a training checkpoint written by fastcnn.train.fit "
            "(no 'format' entry); load weights with fastcnn.load and model.load_state_dict"
        )
    return state


def _load_into(what, target, state, path):
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise IncompatibleCheckpointError(
            f"checkpoint {path!r}: its {what} state does not fit: {error}"
        ) from None


def restore_model(
    path: PathT, model: Module, state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Load the model weights of checkpoint ``path`` into ``model``, checking its class.

    ``state``, when given, is what ``load_checkpoint(path)`` returned (the file is then not
    read again). Returns that state.

    Raises
    ------
    IncompatibleCheckpointError
        The checkpoint was saved from another model class, or its weights do not fit.
    """
    path = os.fspath(path)
    state = load_checkpoint(path) if state is None else state
    saved_class, own_class = state["model_class"], type(model).__name__
    if saved_class != own_class:
        raise IncompatibleCheckpointError(
            f"checkpoint {path!r} was saved from a model of class {saved_class}; it cannot be "
            f"loaded into one of class {own_class}. Build a model of class {saved_class} (or "
            "start a new run)"
        )
    _load_into("model", model, state["model"], path)
    return state


def restore_checkpoint(
    path: PathT,
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    loader: object,
    callbacks: Sequence[Callback] = (),
) -> tuple[int, History]:
    """Put a run back where checkpoint ``path`` left it (and its callbacks' state).

    Returns
    -------
    epoch : int
        Number of finished epochs.
    history : History

    Raises
    ------
    IncompatibleCheckpointError
        The checkpoint does not fit the model, optimizer, scheduler, callbacks or its random
        generators.
    """
    path = os.fspath(path)
    state = restore_model(path, model)
    set_generator_states(model, state["rng_states"], path)
    _load_into("optimizer", optimizer, state["optimizer"], path)
    if (scheduler is None) != ("scheduler" not in state):
        had = "has" if "scheduler" in state else "has no"
        raise IncompatibleCheckpointError(
            f"checkpoint {path!r} {had} learning-rate scheduler state; resume with the same "
            "scheduler setting as the original run"
        )
    if scheduler is not None:
        _load_into("scheduler", scheduler, state["scheduler"], path)
    _restore_callbacks(state, callbacks, path)
    if "train_loader" in state and hasattr(loader, "load_state_dict"):
        loader.load_state_dict(state["train_loader"])
    return int(state["epoch"]), History.from_dict(json.loads(state["history"]))
