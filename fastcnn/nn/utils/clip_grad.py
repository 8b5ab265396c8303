"""Gradient clipping: ``clip_grad_norm_`` and ``clip_grad_value_``, as ``torch.nn.utils``."""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable

import numpy as np

from fastcnn._validation import flag, real
from fastcnn.nn.parameter import Parameter

ParametersT = Parameter | Iterable[Parameter]


def clip_grad_norm_(
    parameters: ParametersT,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    r"""Scale the gradients of ``parameters`` in place so that their total norm is at most
    ``max_norm``; ``torch.nn.utils.clip_grad_norm_``.

    The total norm is the ``norm_type``-norm of all gradients as if concatenated into one
    vector. Every gradient is multiplied by
    :math:`\min(\text{max\_norm} / (\text{total\_norm} + 10^{-6}), 1)`, so gradients are
    only ever scaled down. Parameters whose ``grad`` is None are skipped.

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
        E.g. ``model.parameters()``.
    max_norm : float
        Largest total norm allowed (> 0).
    norm_type : float, default 2.0
        Order p > 0 of the norm; ``math.inf`` (or ``"inf"``) for the largest absolute value.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` if the total norm is NaN or infinite, instead of scaling the
        gradients by it (which gives NaN or zeros, as in PyTorch).

    Returns
    -------
    float
        The total norm of the gradients before clipping (0.0 when there are none).

    Notes
    -----
    The norm is accumulated in float64 with NumPy's pairwise sums (no BLAS), so it is the
    same for any thread count and float32 gradients agree with PyTorch's to rounding.
    """
    owner = "clip_grad_norm_"
    grads = _grads(parameters, owner)
    max_norm = real(max_norm, "max_norm", owner, 0.0, low_open=True)
    norm_type = _norm_type(norm_type, owner)
    flag(error_if_nonfinite, "error_if_nonfinite", owner)
    if not grads:
        return 0.0
    total = _vector_norm([_vector_norm([g], norm_type) for g in grads], norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    coefficient = min(max_norm / (total + 1e-6), 1.0)  # min keeps a NaN, as torch.clamp
    with np.errstate(invalid="ignore"):  # inf * 0 -> NaN, as in PyTorch
        for grad in grads:
            grad *= coefficient
    return total


def clip_grad_value_(parameters: ParametersT, clip_value: float) -> None:
    """Clamp every gradient of ``parameters`` to ``[-clip_value, clip_value]`` in place;
    ``torch.nn.utils.clip_grad_value_``.

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
    clip_value : float
        Largest absolute value a gradient entry keeps (>= 0). NaN entries stay NaN.
    """
    owner = "clip_grad_value_"
    grads = _grads(parameters, owner)
    clip_value = real(clip_value, "clip_value", owner, 0.0)
    for grad in grads:
        np.clip(grad, -clip_value, clip_value, out=grad)


def _grads(parameters, owner):
    """The gradient arrays of ``parameters`` that have one (written to in place)."""
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    elif isinstance(parameters, np.ndarray) or not isinstance(parameters, Iterable):
        raise TypeError(
            f"{owner}: parameters must be a Parameter or an iterable of Parameters "
            f"(e.g. model.parameters()), got {type(parameters).__name__}"
        )
    is_generator = isinstance(parameters, types.GeneratorType)
    parameters = list(parameters)
    if is_generator and not parameters:
        warnings.warn(
            "`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3
        )
    grads = []
    for index, param in enumerate(parameters):
        if not isinstance(param, Parameter):
            raise TypeError(
                f"{owner}: parameters[{index}] must be a fastcnn.nn.Parameter, got "
                f"{type(param).__name__}"
            )
        if param.grad is None:
            continue
        if not isinstance(param.grad, np.ndarray) or param.grad.dtype.kind != "f":
            raise TypeError(
                f"{owner}: the gradient of parameters[{index}] must be a float NumPy array "
                f"(it is scaled in place), got {type(param.grad).__name__}"
            )
        grads.append(param.grad)
    return grads


def _norm_type(norm_type, owner):
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        return math.inf
    value = real(norm_type, "norm_type", owner, 0.0, low_open=True)
    return value


def _vector_norm(arrays, norm_type):
    """The p-norm of the values of ``arrays`` (arrays or floats) together, in float64."""
    with np.errstate(over="ignore", invalid="ignore"):
        if norm_type == math.inf:
            # np.max, not max(): a NaN anywhere makes the norm NaN, as in PyTorch.
            return float(np.max([np.max(np.abs(a), initial=0.0) for a in arrays]))
        if norm_type == 2.0:
            total = sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)
            return math.sqrt(total)
        total = sum(float(np.sum(np.abs(a, dtype=np.float64) ** norm_type)) for a in arrays)
        return total ** (1.0 / norm_type)
