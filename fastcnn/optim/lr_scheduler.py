"""Learning-rate schedulers, as ``torch.optim.lr_scheduler``.

StepLR, MultiStepLR, LinearLR, CosineAnnealingLR, OneCycleLR, SequentialLR and
ReduceLROnPlateau. A scheduler rewrites ``group["lr"]`` of its optimizer's parameter groups
each time its ``step()`` is called: once per epoch, after the epoch's ``optimizer.step()``
calls, or after every ``optimizer.step()`` for the schedulers whose ``steps_per`` is
``"batch"`` (OneCycleLR). ``fastcnn.train.fit`` reads ``steps_per`` to step each one at its
own granularity.
"""

from __future__ import annotations

import bisect
import copy
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

from fastcnn._validation import flag, instance_of, integer, real
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
    A state dict holds only plain values (numbers, strings, lists, dicts), so
    ``fastcnn.save`` stores it in a checkpoint without pickle.

    ``steps_per`` says how often ``fastcnn.train.fit`` steps the scheduler: ``"epoch"``
    (after each epoch, the default) or ``"batch"`` (after each optimizer step: OneCycleLR).
    fit's ``scheduler_interval`` overrides it.
    """

    _hyperparameters: tuple[str, ...] = ()
    _state_names: tuple[str, ...] = ("base_lrs", "last_epoch", "_step_count", "_last_lr")
    steps_per: str = "epoch"

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
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        """The step every scheduler takes when built (SequentialLR repeats it at a switch)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
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
        self._update_lr()

    def _update_lr(self, epoch: int | None = None) -> None:
        """Set the groups' ``lr`` for the next epoch, or (``epoch`` given) for that epoch
        by the closed form where the scheduler has one, as PyTorch's ``_update_lr``."""
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            values = self._get_closed_form_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        """The lr at ``last_epoch`` from ``base_lrs`` (not from the current ``lr``); the
        schedulers without a closed form use ``get_lr``, as in PyTorch."""
        return self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (not the optimizer's) as a dict of plain values."""
        names = (*self._hyperparameters, *self._state_names)
        return {name: _copy_value(getattr(self, name)) for name in names}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by ``state_dict``.

        Raises
        ------
        ValueError
            If keys are missing or unknown, or a per-group list (``base_lrs``) has a
            different number of groups than the optimizer.
        """
        self._check_state_dict(state_dict)
        for name, value in state_dict.items():
            setattr(self, name, _copy_value(value))

    def _check_state_dict(self, state_dict):
        expected = set(self.state_dict())
        if not isinstance(state_dict, dict) or set(state_dict) != expected:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict)
            raise ValueError(
                f"a {type(self).__name__} state dict has the keys {sorted(expected)}, got {got}"
            )
        for name in ("base_lrs", "min_lrs"):
            if name in state_dict and len(state_dict[name]) != len(self.optimizer.param_groups):
                raise ValueError(
                    f"loaded scheduler state has {len(state_dict[name])} {name}, but the "
                    f"optimizer has {len(self.optimizer.param_groups)} parameter groups"
                )


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

    def _get_closed_form_lr(self) -> list[float]:
        return [
            base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs
        ]


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

    def _get_closed_form_lr(self) -> list[float]:
        return [
            self.eta_min
            + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
            for base_lr in self.base_lrs
        ]


class MultiStepLR(LRScheduler):
    """Multiply the learning rate of each group by ``gamma`` at each milestone epoch.

    ``lr = initial_lr * gamma ** (number of milestones <= epoch)``, computed as PyTorch does
    by multiplying the current ``lr`` when ``last_epoch`` reaches a milestone (by
    ``gamma ** n`` for a milestone listed ``n`` times).

    Parameters
    ----------
    optimizer : Optimizer
    milestones : sequence of int
        Epoch indices, in increasing order (a repeated one decays ``n`` times).
    gamma : float, default 0.1
        Multiplicative factor of the decay.
    last_epoch : int, default -1
        See ``LRScheduler``.
    """

    _hyperparameters = ("milestones", "gamma")

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        milestones = _milestones(milestones, "MultiStepLR", strictly=False)
        self.milestones = Counter(milestones)
        real(gamma, "gamma", "MultiStepLR")
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch not in self.milestones:
            return lrs
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in lrs]

    def _get_closed_form_lr(self) -> list[float]:
        milestones = sorted(self.milestones.elements())
        decays = bisect.bisect_right(milestones, self.last_epoch)
        return [base_lr * self.gamma**decays for base_lr in self.base_lrs]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``LRScheduler.load_state_dict``; ``milestones`` may come back as a plain dict."""
        super().load_state_dict(state_dict)
        self.milestones = Counter(self.milestones)


class LinearLR(LRScheduler):
    """Scale the learning rate by a factor going linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps (a warm-up, or a linear decay), then keep it.

    Parameters
    ----------
    optimizer : Optimizer
    start_factor : float, default 1/3
        Factor of the first epoch, in (0, 1].
    end_factor : float, default 1.0
        Factor from epoch ``total_iters`` on, in [0, 1].
    total_iters : int, default 5
        Number of steps the factor takes to go from start to end (>= 1).
    last_epoch : int, default -1
        See ``LRScheduler``.
    """

    _hyperparameters = ("start_factor", "end_factor", "total_iters")

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        real(start_factor, "start_factor", "LinearLR", 0.0, 1.0, low_open=True)
        real(end_factor, "end_factor", "LinearLR", 0.0, 1.0)
        self.start_factor, self.end_factor = start_factor, end_factor
        self.total_iters = integer(total_iters, "total_iters", "LinearLR", minimum=1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # torch.optim.lr_scheduler.LinearLR.get_lr, branch for branch.
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        start, end = self.start_factor, self.end_factor
        if self.last_epoch == 0:
            return [lr * start for lr in lrs]
        if self._is_initial or self.last_epoch > self.total_iters:
            return lrs
        ratio = 1.0 + (end - start) / (
            self.total_iters * start + (self.last_epoch - 1) * (end - start)
        )
        return [lr * ratio for lr in lrs]

    def _get_closed_form_lr(self) -> list[float]:
        start, end = self.start_factor, self.end_factor
        progress = min(self.total_iters, self.last_epoch) / self.total_iters
        return [base_lr * (start + (end - start) * progress) for base_lr in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, 2017): the learning rate rises from
    ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of the steps, then
    anneals to ``max_lr / (div_factor * final_div_factor)``; the momentum (SGD's and
    RMSprop's ``momentum``, Adam's ``beta1``) moves the other way between ``max_momentum``
    and ``base_momentum``. ``torch.optim.lr_scheduler.OneCycleLR``.

    Step it after every optimizer step (``steps_per = "batch"``: ``fit`` does), exactly
    ``total_steps`` times in all; one more raises.

    Parameters
    ----------
    optimizer : Optimizer
    max_lr : float or sequence of float
        Peak learning rate, per group if a sequence.
    total_steps : int, optional
        Number of steps of the cycle; else ``epochs * steps_per_epoch``.
    epochs, steps_per_epoch : int, optional
        Give both instead of ``total_steps``.
    pct_start : float, default 0.3
        Fraction of the steps spent increasing the learning rate, in [0, 1].
    anneal_strategy : {"cos", "linear"}, default "cos"
    cycle_momentum : bool, default True
        Cycle the momentum (the optimizer needs ``momentum`` or ``betas``).
    base_momentum, max_momentum : float or sequence of float, default 0.85, 0.95
        Momentum at the peak learning rate, and at the start and end.
    div_factor : float, default 25
        ``initial_lr = max_lr / div_factor``.
    final_div_factor : float, default 1e4
        ``min_lr = initial_lr / final_div_factor``.
    three_phase : bool, default False
        Go back down to ``initial_lr`` symmetrically before annealing to ``min_lr``.
    last_epoch : int, default -1
        Number of steps taken so far; see ``LRScheduler``.

    Notes
    -----
    As in PyTorch, construction writes ``initial_lr``, ``max_lr``, ``min_lr`` and (when
    cycling momentum) ``max_momentum`` and ``base_momentum`` into every parameter group, so
    they are saved in the optimizer's state dict.
    """

    _hyperparameters = (
        "total_steps",
        "_schedule_phases",
        "_anneal_func_type",
        "cycle_momentum",
        "use_beta1",
    )
    steps_per = "batch"

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.85,
        max_momentum: float | Sequence[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        owner = "OneCycleLR"
        instance_of(optimizer, "optimizer", owner, Optimizer, "a fastcnn.optim.Optimizer")
        self.total_steps = _total_steps(total_steps, epochs, steps_per_epoch)
        real(pct_start, "pct_start", owner, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"{owner}: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}"
            )
        self._anneal_func_type = anneal_strategy
        real(div_factor, "div_factor", owner, 0.0, low_open=True)
        real(final_div_factor, "final_div_factor", owner, 0.0, low_open=True)
        self._schedule_phases = _one_cycle_phases(
            self.total_steps, pct_start, flag(three_phase, "three_phase", owner)
        )
        groups = optimizer.param_groups
        max_lrs = _per_group(max_lr, "max_lr", owner, groups, positive=True)
        if last_epoch == -1:
            for group, peak in zip(groups, max_lrs, strict=True):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = flag(cycle_momentum, "cycle_momentum", owner)
        self.use_beta1 = "betas" in optimizer.defaults
        if self.cycle_momentum:
            self._set_up_momentum(optimizer, base_momentum, max_momentum, last_epoch)
        super().__init__(optimizer, last_epoch)

    def _set_up_momentum(self, optimizer, base_momentum, max_momentum, last_epoch):
        owner = "OneCycleLR"
        if "momentum" not in optimizer.defaults and not self.use_beta1:
            raise ValueError(
                f"{owner}: cycle_momentum=True needs an optimizer with a momentum or betas "
                f"hyperparameter, and {type(optimizer).__name__} has neither; pass "
                "cycle_momentum=False"
            )
        groups = optimizer.param_groups
        max_momentums = _per_group(max_momentum, "max_momentum", owner, groups)
        base_momentums = _per_group(base_momentum, "base_momentum", owner, groups)
        if last_epoch != -1:
            return  # resuming: the groups already hold them
        for group, top, base in zip(groups, max_momentums, base_momentums, strict=True):
            if self.use_beta1:
                group["betas"] = (top, *group["betas"][1:])
            else:
                group["momentum"] = top
            group["max_momentum"] = top
            group["base_momentum"] = base

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        # torch.optim.lr_scheduler.OneCycleLR.get_lr, including its side effect: it sets
        # each group's momentum (or beta1) for the same step.
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR: tried to step {step} times, but total_steps is "
                f"{self.total_steps}; build it with total_steps (or epochs and "
                "steps_per_epoch) covering every optimizer step of the run"
            )
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for index, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or index == len(self._schedule_phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct
                        )
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at the ``milestones`` epochs.

    ``schedulers[i]`` runs from ``milestones[i - 1]`` on; at a switch it starts from epoch 0
    of its own schedule (by its closed form, as in PyTorch). E.g. a linear warm-up then a
    cosine decay: ``SequentialLR(opt, [LinearLR(opt, 0.1, total_iters=5),
    CosineAnnealingLR(opt, T_max=45)], milestones=[5])``.

    Parameters
    ----------
    optimizer : Optimizer
    schedulers : sequence of LRScheduler
        Built on ``optimizer``; not ReduceLROnPlateau (its step needs a metric).
    milestones : sequence of int
        Strictly increasing epochs, one fewer than ``schedulers``.
    last_epoch : int, default -1

    Notes
    -----
    ``steps_per`` is ``"batch"`` when one of the schedulers steps per batch (OneCycleLR).
    Its state dict holds each scheduler's state dict under ``"_schedulers"``.
    """

    _state_names = ("_milestones", "last_epoch", "_last_lr")

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = -1,
    ) -> None:
        owner = "SequentialLR"
        instance_of(optimizer, "optimizer", owner, Optimizer, "a fastcnn.optim.Optimizer")
        self._schedulers = _sequence_schedulers(optimizer, schedulers)
        milestones = _milestones(milestones, owner, strictly=True)
        if len(milestones) != len(self._schedulers) - 1:
            raise ValueError(
                f"{owner}: milestones must have one entry fewer than schedulers (the epochs "
                f"where each next scheduler takes over): got {len(self._schedulers)} "
                f"schedulers and {len(milestones)} milestones"
            )
        self._milestones = milestones
        self.last_epoch = integer(last_epoch, "last_epoch", owner, minimum=-1) + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        _undo_initial_steps(self)  # each scheduler stepped once when it was built
        first = self._schedulers[bisect.bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @property
    def steps_per(self) -> str:  # type: ignore[override]
        batch = any(scheduler.steps_per == "batch" for scheduler in self._schedulers)
        return "batch" if batch else "epoch"

    def step(self) -> None:
        """Advance one epoch, stepping the scheduler whose turn it is."""
        self.last_epoch += 1
        index = bisect.bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)  # its first epoch
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """This scheduler's state, each inner scheduler's state dict under ``"_schedulers"``."""
        state = super().state_dict()
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by ``state_dict``, and each inner scheduler's."""
        self._check_state_dict(state_dict)
        inner = state_dict["_schedulers"]
        if not isinstance(inner, (list, tuple)) or len(inner) != len(self._schedulers):
            count = len(inner) if isinstance(inner, (list, tuple)) else type(inner).__name__
            raise ValueError(
                f"loaded SequentialLR state has {count} scheduler states, but this "
                f"SequentialLR has {len(self._schedulers)} schedulers"
            )
        for scheduler, state in zip(self._schedulers, inner, strict=True):
            scheduler.load_state_dict(state)
        for name, value in state_dict.items():
            if name != "_schedulers":  # the schedulers themselves stay
                setattr(self, name, _copy_value(value))

    def _get_closed_form_lr(self) -> list[float]:
        raise NotImplementedError("SequentialLR has no closed form")


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rate by ``factor`` when a monitored metric stops improving for
    ``patience`` epochs; ``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    ``step(metrics)`` takes the metric of the epoch (``fit`` passes the validation loss,
    or the training loss without a validation loader).

    Parameters
    ----------
    optimizer : Optimizer
    mode : {"min", "max"}, default "min"
        Whether the metric should go down (a loss) or up (an accuracy).
    factor : float, default 0.1
        ``new_lr = lr * factor``, in [0, 1).
    patience : int, default 10
        Epochs without improvement tolerated; the next one reduces the rate.
    threshold : float, default 1e-4
        How much better than the best a value must be to count as an improvement.
    threshold_mode : {"rel", "abs"}, default "rel"
        ``best * (1 - threshold)`` (``1 + threshold`` in max mode) or ``best - threshold``.
    cooldown : int, default 0
        Epochs to wait after a reduction before counting bad epochs again.
    min_lr : float or sequence of float, default 0
        Lower bound of the learning rate, per group if a sequence.
    eps : float, default 1e-8
        A reduction smaller than this is skipped.
    """

    _state_names = (
        "factor",
        "min_lrs",
        "default_min_lr",
        "patience",
        "cooldown",
        "eps",
        "last_epoch",
        "_last_lr",
        "mode",
        "threshold",
        "threshold_mode",
        "best",
        "cooldown_counter",
        "num_bad_epochs",
        "mode_worse",
    )

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0,
        eps: float = 1e-8,
    ) -> None:
        owner = "ReduceLROnPlateau"
        instance_of(optimizer, "optimizer", owner, Optimizer, "a fastcnn.optim.Optimizer")
        if not real(factor, "factor", owner, 0.0) < 1.0:
            raise ValueError(
                f"{owner}: factor must be < 1.0 (new_lr = lr * factor reduces the rate), "
                f"got {factor}"
            )
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group(min_lr, "min_lr", owner, optimizer.param_groups)
        else:
            self.default_min_lr = real(min_lr, "min_lr", owner, 0.0)
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = integer(patience, "patience", owner, minimum=0)
        self.cooldown = integer(cooldown, "cooldown", owner, minimum=0)
        real(eps, "eps", owner, 0.0)
        real(threshold, "threshold", owner, 0.0)
        self.eps, self.threshold = eps, threshold
        _check_plateau_modes(mode, threshold_mode)
        self.mode, self.threshold_mode = mode, threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: float) -> None:  # type: ignore[override]
        """End an epoch whose monitored value was ``metrics``; reduce the rate if due."""
        current = _metric_value(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):  # a group was added since construction
            if self.default_min_lr is None:
                raise ValueError(
                    f"ReduceLROnPlateau: the optimizer has {len(groups)} parameter groups but "
                    f"min_lr gave {len(self.min_lrs)} (a group was added); set the scheduler's "
                    "min_lrs to one value per group"
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs, strict=True):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def _is_better(self, value):
        best, threshold = self.best, self.threshold
        if self.mode == "min":
            return value < (
                best * (1.0 - threshold) if self.threshold_mode == "rel" else best - threshold
            )
        return value > (
            best * (threshold + 1.0) if self.threshold_mode == "rel" else best + threshold
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by ``state_dict``, checking its modes."""
        super().load_state_dict(state_dict)
        _check_plateau_modes(self.mode, self.threshold_mode)

    def get_lr(self) -> list[float]:
        raise NotImplementedError("ReduceLROnPlateau sets the lr in step(metrics)")


def _milestones(milestones, owner, strictly):
    """A list of ints >= 0 in increasing order (``strictly``: no repeats)."""
    if not isinstance(milestones, Sequence) or isinstance(milestones, str):
        raise TypeError(
            f"{owner}: milestones must be a list of epoch indices, got "
            f"{type(milestones).__name__} {milestones!r}"
        )
    values = [
        integer(value, f"milestones[{index}]", owner, minimum=0)
        for index, value in enumerate(milestones)
    ]
    for before, after in zip(values, values[1:], strict=False):
        if after < before or (strictly and after == before):
            order = "strictly increasing" if strictly else "increasing"
            raise ValueError(
                f"{owner}: milestones must be {order}, got {list(milestones)}; sort them"
            )
    return values


def _total_steps(total_steps, epochs, steps_per_epoch):
    owner = "OneCycleLR"
    if total_steps is not None:
        return integer(total_steps, "total_steps", owner, minimum=1, expected="an int or None")
    if epochs is None or steps_per_epoch is None:
        raise ValueError(
            f"{owner}: give total_steps, or both epochs and steps_per_epoch (the cycle's "
            "number of optimizer steps); got neither"
        )
    epochs = integer(epochs, "epochs", owner, minimum=1, expected="an int or None")
    per_epoch = integer(
        steps_per_epoch, "steps_per_epoch", owner, minimum=1, expected="an int or None"
    )
    return epochs * per_epoch


def _one_cycle_phases(total_steps, pct_start, three_phase):
    """The phases of OneCycleLR: end step and the group keys to go from and to (PyTorch's)."""

    def phase(end_step, lrs, momentums):
        return {
            "end_step": end_step,
            "start_lr": lrs[0],
            "end_lr": lrs[1],
            "start_momentum": momentums[0],
            "end_momentum": momentums[1],
        }

    up = phase(
        float(pct_start * total_steps) - 1,
        ("initial_lr", "max_lr"),
        ("max_momentum", "base_momentum"),
    )
    if not three_phase:
        down = ("max_lr", "min_lr"), ("base_momentum", "max_momentum")
        return [up, phase(total_steps - 1, *down)]
    return [
        up,
        phase(
            float(2 * pct_start * total_steps) - 2,
            ("max_lr", "initial_lr"),
            ("base_momentum", "max_momentum"),
        ),
        phase(total_steps - 1, ("initial_lr", "min_lr"), ("max_momentum", "max_momentum")),
    ]


def _per_group(value, name, owner, groups, positive=False):
    """One float per parameter group: ``value`` repeated, or a sequence of that length."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * len(groups)
    if len(values) != len(groups):
        raise ValueError(
            f"{owner}: {name} must be one number or one per parameter group: the optimizer "
            f"has {len(groups)} groups, got {len(values)} values"
        )
    for index, item in enumerate(values):
        label = name if not isinstance(value, (list, tuple)) else f"{name}[{index}]"
        real(item, label, owner, 0.0, low_open=positive)
    return values


def _sequence_schedulers(optimizer, schedulers):
    owner = "SequentialLR"
    if not isinstance(schedulers, Sequence) or isinstance(schedulers, str):
        raise TypeError(
            f"{owner}: schedulers must be a list of LRSchedulers, got {type(schedulers).__name__}"
        )
    if len(schedulers) == 0:
        raise ValueError(f"{owner}: schedulers must hold at least one scheduler, got none")
    for index, scheduler in enumerate(schedulers):
        name = f"schedulers[{index}]"
        instance_of(scheduler, name, owner, LRScheduler, "a fastcnn.optim.LRScheduler")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{owner}: {name} is a ReduceLROnPlateau, whose step needs the metric; "
                "use it on its own"
            )
        if scheduler.optimizer is not optimizer:
            raise ValueError(
                f"{owner}: {name} ({type(scheduler).__name__}) schedules another optimizer; "
                "build every scheduler on the optimizer given to SequentialLR"
            )
    return list(schedulers)


def _undo_initial_steps(scheduler):
    """Take back the step each (nested) scheduler took when built, as PyTorch's
    ``SequentialLR.recursive_undo``."""
    for inner in scheduler._schedulers:
        if isinstance(inner, SequentialLR):
            _undo_initial_steps(inner)
        else:
            inner.last_epoch -= 1


def _check_plateau_modes(mode, threshold_mode):
    if mode not in ("min", "max"):
        raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
    if threshold_mode not in ("rel", "abs"):
        raise ValueError(
            f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
        )


def _metric_value(metrics):
    try:
        value = float(metrics)
    except (TypeError, ValueError):
        raise TypeError(
            "ReduceLROnPlateau.step: metrics must be the epoch's monitored value (a number, "
            f"e.g. the validation loss), got {type(metrics).__name__} {metrics!r}"
        ) from None
    return value


def _copy_value(value):
    # Nested lists and dicts (OneCycleLR's phases, SequentialLR's states): never shared.
    return copy.deepcopy(value)
