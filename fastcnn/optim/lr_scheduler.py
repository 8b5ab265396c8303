"""Learning-rate schedulers: StepLR and CosineAnnealingLR, as ``torch.optim.lr_scheduler``.

A scheduler rewrites ``group["lr"]`` of its optimizer's parameter groups each time its
``step()`` is called (once per epoch, after the epoch's ``optimizer.step()`` calls).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from fastcnn._validation import instance_of, integer, real
from fastcnn.optim.optimizer import Optimizer


class LRScheduler:
    """Base class of the schedulers; ``torch.optim.lr_scheduler.LRScheduler``.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose learning rates are scheduled.
    last_epoch : int, default -1
        Index of the last epoch; -1 starts a new schedule and records each group's
        ``lr`` as ``group["initial_lr"]``. Any other value resumes, and needs
        ``initial_lr`` in every group (a loaded optimizer state dict has it).

    Attributes
    ----------
    base_lrs : list of float
        The ``initial_lr`` of each group.
    last_epoch : int
        Incremented by each ``step()``; 0 right after construction.

    Notes
    -----
    Subclasses implement ``get_lr()``, the recursive formula PyTorch uses: it reads the
    groups' current ``lr``, so another change made to ``lr`` between steps carries over.
    Subclasses list their own hyperparameters in ``_hyperparameters`` for ``state_dict``.
    """

    _hyperparameters: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        owner = type(self).__name__
        instance_of(optimizer, "optimizer", owner, Optimizer, "a fastcnn.optim.Optimizer")
        last_epoch = integer(last_epoch, "last_epoch", owner, minimum=-1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for index, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{index}] when "
                        "resuming scheduler with last_epoch >= 0; load the optimizer's state "
                        "dict first, or pass last_epoch=-1 for a new schedule"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True
        self.step()
        self._is_initial = False

    def get_lr(self) -> list[float]:
        """The learning rate of each group for epoch ``last_epoch`` (called by ``step``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_lr")

    def get_last_lr(self) -> list[float]:
        """The learning rates the last ``step()`` set, one per parameter group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one epoch and set every group's ``lr``; call after ``optimizer.step()``."""
        if self._step_count == 1 and not self.optimizer._opt_called:
            warnings.warn(
                "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
                "You should call them in this order: `optimizer.step()` before "
                "`lr_scheduler.step()`. Failure to do this will result in skipping the "
                "first value of the learning rate schedule.",
                UserWarning,
                stacklevel=2,
            )
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (not the optimizer's) as a dict of plain values."""
        names = (*self._hyperparameters, "base_lrs", "last_epoch", "_step_count", "_last_lr")
        return {name: _copy_value(getattr(self, name)) for name in names}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by ``state_dict``.

        Raises
        ------
        ValueError
            If keys are missing or unknown, or ``base_lrs`` has a different number of
            groups than the optimizer.
        """
        expected = set(self.state_dict())
        if not isinstance(state_dict, dict) or set(state_dict) != expected:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict)
            raise ValueError(
                f"a {type(self).__name__} state dict has the keys {sorted(expected)}, got {got}"
            )
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"loaded scheduler state has {len(state_dict['base_lrs'])} base_lrs, but the "
                f"optimizer has {len(self.optimizer.param_groups)} parameter groups"
            )
        for name, value in state_dict.items():
            setattr(self, name, _copy_value(value))


class StepLR(LRScheduler):
    """Multiply the learning rate of each group by ``gamma`` every ``step_size`` epochs.

    ``lr = initial_lr * gamma ** (epoch // step_size)``, computed as PyTorch does by
    multiplying the current ``lr`` at each multiple of ``step_size``.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        Period of the decay, in epochs (>= 1).
    gamma : float, default 0.1
        Multiplicative factor of the decay.
    last_epoch : int, default -1
        See ``LRScheduler``.

    Examples
    --------
    >>> scheduler = StepLR(optimizer, step_size=30, gamma=0.1)  # doctest: +SKIP
    >>> for epoch in range(100):  # doctest: +SKIP
    ...     train_one_epoch(model, optimizer)
    ...     scheduler.step()
    """

    _hyperparameters = ("step_size", "gamma")

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.step_size = integer(step_size, "step_size", "StepLR", minimum=1)
        real(gamma, "gamma", "StepLR")  # kept as given, as PyTorch keeps it
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lrs
        return [lr * self.gamma for lr in lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing of the learning rate from ``initial_lr`` to ``eta_min`` over ``T_max``.

    Follows :math:`\eta_t = \eta_{min} + \frac{1}{2}(\eta_{max} - \eta_{min})
    (1 + \cos(\pi t / T_{max}))` through PyTorch's recursive update, which keeps going
    past ``T_max`` (back up to ``initial_lr`` at ``2 T_max``, and so on: no restarts).

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int
        Number of epochs of a half period (>= 1).
    eta_min : float, default 0
        Minimum learning rate.
    last_epoch : int, default -1
        See ``LRScheduler``.
    """

    _hyperparameters = ("T_max", "eta_min")

    def __init__(  # noqa: N803 (torch's name)
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        self.T_max = integer(T_max, "T_max", "CosineAnnealingLR", minimum=1)
        real(eta_min, "eta_min", "CosineAnnealingLR")  # kept as given, as PyTorch keeps it
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # torch.optim.lr_scheduler.CosineAnnealingLR.get_lr, branch for branch.
        groups = self.optimizer.param_groups
        epoch, period, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return [group["lr"] for group in groups]
        if (epoch - 1 - period) % (2 * period) == 0:
            # At the bottom of the cosine the ratio below is 0/0: step up by the increment.
            return [
                group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / period)) / 2
                for base_lr, group in zip(self.base_lrs, groups, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * epoch / period)) / (
            1 + math.cos(math.pi * (epoch - 1) / period)
        )
        return [ratio * (group["lr"] - eta_min) + eta_min for group in groups]


def _copy_value(value):
    return list(value) if isinstance(value, list) else value
