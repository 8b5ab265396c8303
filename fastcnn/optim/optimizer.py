"""Optimizer: the base class of every fastcnn optimizer (``torch.optim.Optimizer``'s API).

The base class owns everything that is not maths: parameter groups and their validation,
per-parameter state, ``zero_grad``, the ``step`` loop and ``state_dict``/``load_state_dict``.
A subclass supplies its hyperparameter checks and one per-parameter update, ``_update``
(tinygrad's ``_step``, Chainer's update rule), so each optimizer file holds only its maths.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from fastcnn._validation import flag, number
from fastcnn.nn.parameter import Parameter

# What an optimizer takes: Parameters, or parameter groups (dicts with "params").
ParamsT = Iterable[Parameter] | Iterable[dict[str, Any]]


def check_non_negative(value: Any, name: str, owner: str, torch_message: str) -> None:
    """Refuse a hyperparameter that is not a real number (TypeError) or not >= 0 (ValueError;
    NaN fails, as in PyTorch).

    ``torch_message`` is PyTorch's text, e.g. ``"Invalid learning rate"``; the ValueError is
    ``"Invalid learning rate: -1"``, word for word PyTorch's.
    """
    number(value, name, owner)
    if not 0.0 <= value:  # written this way so that NaN is rejected too
        raise ValueError(f"{torch_message}: {value}")


def lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start += weight * (end - start)`` in place, with PyTorch's two-sided formula.

    PyTorch's CPU ``lerp`` uses ``end - (end - start) * (1 - weight)`` when
    ``|weight| >= 0.5``, which is more accurate there; doing the same keeps float32
    results equal to PyTorch's.
    """
    difference = end - start
    if abs(weight) < 0.5:
        difference *= weight
        start += difference
    else:
        difference *= 1 - weight
        np.subtract(end, difference, out=start)


class Optimizer:
    """Base class of all optimizers; PyTorch's ``torch.optim.Optimizer`` API.

    Parameters
    ----------
    params : iterable of Parameter or iterable of dict
        The parameters to optimize, or parameter groups: dicts with a ``"params"`` entry
        and any hyperparameters that should differ from ``defaults`` for that group.
    defaults : dict
        Default hyperparameters, used by every group that does not set its own.

    Attributes
    ----------
    defaults : dict
    param_groups : list of dict
        One dict per group: ``"params"`` (list of Parameter) and every hyperparameter.
        Schedulers change ``group["lr"]`` here.
    state : dict
        Per-parameter state (momentum buffers, moment estimates, step counts), keyed by
        the Parameter object, created lazily on the first ``step`` that updates it.

    Notes
    -----
    Subclasses implement ``_check_group(group)`` (hyperparameter validation; the names of
    their True/False hyperparameters go in ``_flags``),
    ``_update(param, grad, state, group)`` (the maths, in place on ``param.data``) and
    ``_state_keys(group)`` (the state entries a parameter has after its first step, so a
    state dict from another optimizer is refused at load time).

    Unlike PyTorch, the hyperparameters of every parameter group are validated (PyTorch
    checks only the constructor's arguments), and a parameter listed twice in one group is
    an error rather than a warning.
    """

    _flags: tuple[str, ...] = ()  # the True/False hyperparameters, checked in every group

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self._check_group(defaults)  # the constructor's arguments, as PyTorch checks them
        self.defaults = dict(defaults)
        self.state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._opt_called = False  # set by step(); schedulers read it to warn, as PyTorch's
        param_groups = _as_param_groups(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        for group in param_groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            lines.extend(f"    {key}: {group[key]}" for key in sorted(group) if key != "params")
        lines.append(")")
        return "\n".join(lines)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (a dict with ``"params"``), e.g. to train a new layer.

        Hyperparameters missing from the group are taken from ``defaults``.

        Raises
        ------
        TypeError
            If ``param_group`` is not a dict, or its params are not Parameters in an
            ordered collection.
        ValueError
            If a hyperparameter is invalid (``Invalid learning rate: -1``), the group has
            no ``"params"``, or a parameter is already optimized (in this group or another).
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("a parameter group must have a 'params' entry (a list of Parameters)")
        group["params"] = _as_parameter_list(group["params"])
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._check_group(group)
        _check_no_duplicates(group["params"], self.param_groups)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradient of every parameter.

        Parameters
        ----------
        set_to_none : bool, default True
            Set ``.grad`` to None (frees memory; the next backward allocates it), as
            PyTorch does by default; with False, fill the existing arrays with zeros.
        """
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.fill(0)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; parameters whose grad is None are skipped.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; called first, its result returned.

        Returns
        -------
        loss : object or None
            What ``closure`` returned, or None without a closure.
        """
        loss = closure() if closure is not None else None
        self._opt_called = True
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                _check_grad(param)
                self._update(param, param.grad, self.state[param], group)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state, in PyTorch's layout, as a snapshot (arrays are copied).

        Returns
        -------
        dict
            ``{"state": {index: {name: value}}, "param_groups": [group, ...]}``. Parameters
            are numbered in the order of ``param_groups`` (0, 1, ... across all groups); each
            group lists the indices of its parameters under ``"params"``. Only parameters
            that have state appear under ``"state"``.
        """
        index_of: dict[int, int] = {}  # id(parameter) -> its index
        groups = []
        for group in self.param_groups:
            packed = {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}
            packed["params"] = [index_of.setdefault(id(p), len(index_of)) for p in group["params"]]
            groups.append(packed)
        state = {
            index_of[id(param)]: _copy_state(param_state)
            for param, param_state in self.state.items()
            if param_state and id(param) in index_of
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by ``state_dict`` (possibly after ``fastcnn.save``/``load``).

        Everything is checked before anything changes: the number of groups and of
        parameters per group, the hyperparameters each group needs and their values, and
        the names and shapes of every state entry. State arrays are copied and cast to
        their parameter's dtype.

        Raises
        ------
        ValueError
            If the state dict was saved from a different model or optimizer; the message
            names the group or parameter and what differs.
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict)
            raise ValueError(
                "an optimizer state dict is a dict with exactly the keys 'state' and "
                f"'param_groups' (from Optimizer.state_dict()), got {keys}"
            )
        saved_groups = state_dict["param_groups"]
        self._check_saved_groups(saved_groups)
        owner: dict[Any, tuple[Parameter, dict[str, Any]]] = {}  # saved index -> (p, group)
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            owner.update(
                (i, (p, group)) for i, p in zip(saved["params"], group["params"], strict=True)
            )
        new_state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        for index, saved_param_state in state_dict["state"].items():
            if index not in owner:
                raise ValueError(
                    f"loaded state dict has state for parameter {index!r}, which is in no "
                    "parameter group of the loaded state dict"
                )
            param, group = owner[index]
            new_state[param] = self._restore_param_state(index, param, saved_param_state, group)
        self.state = new_state
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            restored = {key: copy.deepcopy(value) for key, value in saved.items()}
            for key, value in restored.items():
                # JSON-based checkpoints give back lists; keep e.g. betas a tuple.
                if isinstance(group.get(key), tuple) and isinstance(value, list):
                    restored[key] = tuple(value)
            restored["params"] = group["params"]
            group.clear()
            group.update(restored)

    # -- hooks for subclasses ------------------------------------------------------------

    def _check_group(self, group):
        """Validate the hyperparameters of ``group``; subclasses extend this."""
        owner = type(self).__name__
        check_non_negative(group["lr"], "lr", owner, "Invalid learning rate")
        if "weight_decay" in group:  # every optimizer here has one
            check_non_negative(
                group["weight_decay"], "weight_decay", owner, "Invalid weight_decay value"
            )
        for name in self._flags:
            flag(group[name], name, owner)

    def _update(self, param, grad, state, group):
        """Update ``param.data`` in place from ``grad``; ``state`` is this parameter's dict."""
        raise NotImplementedError(f"{type(self).__name__} must implement _update")

    def _state_keys(self, group):
        """Names of the state entries of a parameter of ``group`` after a step."""
        raise NotImplementedError(f"{type(self).__name__} must implement _state_keys")

    # -- load_state_dict checks ----------------------------------------------------------

    def _check_saved_groups(self, saved_groups):
        if not isinstance(saved_groups, list) or len(saved_groups) != len(self.param_groups):
            count = len(saved_groups) if isinstance(saved_groups, list) else saved_groups
            raise ValueError(
                "loaded state dict has a different number of parameter groups: "
                f"{count} saved, {len(self.param_groups)} in this optimizer"
            )
        for index, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if not isinstance(saved, dict):
                raise ValueError(
                    f"loaded parameter group {index} must be a dict, got {type(saved).__name__}"
                )
            if len(saved.get("params", ())) != len(group["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group that doesn't match the size "
                    f"of optimizer's group: group {index} has {len(saved.get('params', ()))} "
                    f"parameters saved, {len(group['params'])} in this optimizer"
                )
            missing = sorted(set(self.defaults) - set(saved))
            if missing:
                raise ValueError(
                    f"loaded parameter group {index} lacks the hyperparameters {missing} of "
                    f"{type(self).__name__}: was it saved from a different optimizer?"
                )
            self._check_group(saved)

    def _restore_param_state(self, index, param, saved_state, group):
        if not isinstance(saved_state, dict):
            raise ValueError(
                f"state of parameter {index} must be a dict, got {type(saved_state).__name__}"
            )
        expected = self._state_keys(group)
        if saved_state and set(saved_state) != expected:
            raise ValueError(
                f"state of parameter {index} has entries {sorted(saved_state)}, but "
                f"{type(self).__name__} with these settings keeps {sorted(expected)}: was it "
                "saved from a different optimizer or with different settings?"
            )
        restored = {}
        for name, value in saved_state.items():
            if name == "step":
                restored[name] = _as_step_count(index, value)
                continue
            value = np.asarray(value)
            if value.shape != param.shape:
                raise ValueError(
                    f"state {name!r} of parameter {index} has shape {value.shape}, but the "
                    f"parameter has shape {param.shape}: the state dict was saved from a "
                    "different model"
                )
            restored[name] = np.array(value, dtype=param.dtype, copy=True)
        return restored


def _as_param_groups(params):
    if isinstance(params, (Parameter, np.ndarray)):
        raise TypeError(
            "params argument given to the optimizer should be an iterable of Parameters or "
            f"dicts, but got {type(params).__name__}"
        )
    if isinstance(params, (set, frozenset)):
        raise TypeError(_UNORDERED_MESSAGE)
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            "params argument given to the optimizer should be an iterable of Parameters or "
            f"dicts, but got {type(params).__name__}"
        ) from None
    if not items or all(isinstance(item, dict) for item in items):
        return items
    if any(isinstance(item, dict) for item in items):
        raise TypeError("params must be all Parameters or all parameter-group dicts, not a mix")
    return [{"params": items}]


_UNORDERED_MESSAGE = (
    "optimizer parameters need to be organized in ordered collections, but the ordering of "
    "tensors in sets will change between runs. Please use a list instead."
)


def _as_parameter_list(params):
    if isinstance(params, Parameter):
        return [params]
    if isinstance(params, (set, frozenset)):
        raise TypeError(_UNORDERED_MESSAGE)
    params = list(params)
    for param in params:
        if not isinstance(param, Parameter):
            raise TypeError(
                "optimizer can only optimize Parameters (fastcnn.nn.Parameter), but one of "
                f"the params is {type(param).__module__}.{type(param).__name__}"
            )
    return params


def _check_no_duplicates(params, existing_groups):
    seen = set()
    for param in params:
        if id(param) in seen:
            raise ValueError(
                f"optimizer contains a parameter group with duplicate parameters ({param!r} "
                "appears twice); list each parameter once"
            )
        seen.add(id(param))
    for group in existing_groups:
        if any(id(param) in seen for param in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")


def _check_grad(param):
    if not isinstance(param.grad, np.ndarray):
        raise TypeError(
            f"gradient of {param!r} must be a NumPy array, got {type(param.grad).__name__}; "
            "set p.grad to an array of the parameter's shape (or None to skip it)"
        )
    if param.grad.shape != param.data.shape:
        raise ValueError(
            f"gradient of {param!r} has shape {param.grad.shape}, but the parameter has "
            f"shape {param.data.shape}"
        )


def _copy_state(param_state):
    return {
        name: value.copy() if isinstance(value, np.ndarray) else value
        for name, value in param_state.items()
    }


def _as_step_count(index, value):
    step = float(np.asarray(value))
    if not (math.isfinite(step) and step >= 0 and step == int(step)):
        raise ValueError(f"state 'step' of parameter {index} must be a count >= 0, got {value!r}")
    return int(step)
