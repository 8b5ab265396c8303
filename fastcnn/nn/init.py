"""Weight initialisation in place, with ``torch.nn.init``'s formulas and names.

Each function fills a NumPy array (or a ``Parameter``'s ``.data``) in place and returns
its argument. Random ones take ``rng``: a ``np.random.Generator`` (or an int seed; None
means fresh entropy), so the same seed gives the same weights.
"""

from __future__ import annotations

import math
import numbers
from typing import TypeVar

import numpy as np

from fastcnn._validation import generator, real
from fastcnn.nn.parameter import Parameter

# What each function fills in place and returns: a float ndarray or a Parameter.
Tensor = TypeVar("Tensor", bound=np.ndarray | Parameter)
Seed = np.random.Generator | int | None

__all__ = [
    "calculate_gain",
    "constant_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

_LINEAR_GAINS = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table).

    ========================= ==================================
    nonlinearity              gain
    ========================= ==================================
    linear, conv*d, sigmoid   1
    tanh                      5/3
    relu                      sqrt(2)
    leaky_relu                sqrt(2 / (1 + negative_slope**2))
    selu                      3/4
    ========================= ==================================

    ``param`` is leaky_relu's negative slope (default 0.01).
    """
    if nonlinearity in _LINEAR_GAINS:
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _array(tensor: np.ndarray | Parameter, func: str) -> np.ndarray:
    array = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise TypeError(
            f"{func}: expected a floating NumPy array or Parameter, got {type(tensor).__name__}"
        )
    return array


def _calculate_fan_in_and_fan_out(tensor: np.ndarray | Parameter) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: in/out features times the kernel's receptive field."""
    shape = np.shape(tensor.data if isinstance(tensor, Parameter) else tensor)
    if len(shape) < 2:
        raise ValueError(
            "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions"
        )
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _fan(tensor: np.ndarray | Parameter, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, *, rng: Seed = None) -> Tensor:
    """Fill with values drawn from U(a, b)."""
    array = _array(tensor, "uniform_")
    a, b = real(a, "a", "uniform_"), real(b, "b", "uniform_")
    if a > b:
        raise ValueError(f"uniform_: expects a range [a, b) with a <= b, but found a={a} > b={b}")
    array[...] = generator(rng, "uniform_").uniform(a, b, size=array.shape)
    return tensor


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, *, rng: Seed = None) -> Tensor:
    """Fill with values drawn from N(mean, std**2)."""
    array = _array(tensor, "normal_")
    mean, std = real(mean, "mean", "normal_"), real(std, "std", "normal_", low=0)
    array[...] = generator(rng, "normal_").normal(mean, std, size=array.shape)
    return tensor


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill with ``val``."""
    _array(tensor, "constant_")[...] = val
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    """Fill with 0."""
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    """Fill with 1."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, *, rng: Seed = None) -> Tensor:
    """Glorot uniform: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    gain = real(gain, "gain", "xavier_uniform_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, rng=rng)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, *, rng: Seed = None) -> Tensor:
    """Glorot normal: N(0, std**2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    gain = real(gain, "gain", "xavier_normal_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng=rng)


def _kaiming_std(tensor: np.ndarray | Parameter, a: float, mode: str, nonlinearity: str) -> float:
    fan = _fan(tensor, mode)
    if fan == 0:
        raise ValueError("Initializing zero-element tensors is a no-op")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    rng: Seed = None,
) -> Tensor:
    """He uniform: U(-bound, bound) with ``bound = gain * sqrt(3 / fan)``.

    ``a`` is leaky_relu's negative slope; ``mode`` picks fan_in (preserves the forward
    variance) or fan_out (the backward one). ``a=sqrt(5)`` gives PyTorch's default for
    Conv2d and Linear, ``bound = 1 / sqrt(fan_in)``.
    """
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, rng=rng)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    rng: Seed = None,
) -> Tensor:
    """He normal: N(0, std**2) with ``std = gain / sqrt(fan)``."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), rng=rng)


def reset_weight_and_bias(weight: Parameter, bias: Parameter | None, rng: Seed) -> None:
    """PyTorch's default for Conv2d and Linear: kaiming_uniform_(a=sqrt(5)) on the weight
    (U(+-1/sqrt(fan_in))) and U(+-1/sqrt(fan_in)) on the bias.

    Shared by the layers' ``reset_parameters``; not in ``__all__`` (torch.nn.init has no
    such function)."""
    kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = _calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound, rng=rng)
