"""Element-wise activations, Softmax and LogSoftmax: ReLU on fastcnn's kernel, the others
in NumPy and SciPy (numerically stable for any |x|)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit, ndtr, softmax

from fastcnn import _ops
from fastcnn._validation import flag, float_input, grad_like, integer, real
from fastcnn.nn.module import Module

Saved = dict[str, Any]

__all__ = [
    "ELU",
    "GELU",
    "Hardswish",
    "LeakyReLU",
    "LogSoftmax",
    "ReLU",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]


class _Activation(Module):
    """An activation: ``_apply`` gives the output and what its gradient needs,
    ``_input_grad`` turns the output gradient into the input gradient."""

    def forward(self, input: ArrayLike) -> NDArray:
        x = float_input(input, type(self).__name__)
        out, saved = self._apply(x)
        self._save_for_backward(shape=x.shape, dtype=x.dtype, **saved)
        return out

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """Return the input gradient (None if not ``input_grad``: there are no parameters)."""
        saved = self._saved()
        if not input_grad:
            return None
        grad = grad_like(grad_output, saved["shape"], saved["dtype"], type(self).__name__)
        return self._input_grad(grad, saved)

    def _apply(self, x: NDArray) -> tuple[NDArray, Saved]:
        """The output for the checked input ``x``, and what ``_input_grad`` needs."""
        raise NotImplementedError

    def _input_grad(self, grad: NDArray, saved: Saved) -> NDArray:
        """The input gradient for ``grad``, of the output's shape and the input's dtype."""
        raise NotImplementedError


class _InplaceActivation(_Activation):
    """An activation with torch's ``inplace`` flag.

    ``inplace=True`` writes the output into the input array and returns that array, so the
    caller's array changes as torch's tensor does (the output is computed first, so it saves
    no memory here). What ``_apply`` saves must therefore never be a view of the input.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = flag(inplace, "inplace", type(self).__name__)

    def forward(self, input: ArrayLike) -> NDArray:
        if not self.inplace:
            return super().forward(input)
        x = float_input(input, type(self).__name__)
        if not x.flags.writeable:
            raise ValueError(
                f"{type(self).__name__}(inplace=True): the input array is read-only, so the "
                "output cannot be written into it: pass a writable array (x.copy()) or use "
                "inplace=False"
            )
        np.copyto(x, super().forward(x))
        return x

    def _inplace_repr(self) -> str:
        return ", inplace=True" if self.inplace else ""


def _finite(value: Any, name: str, owner: str) -> float:
    """A real hyperparameter that must also be finite (an infinite slope turns 0 into NaN)."""
    value = real(value, name, owner)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value}")
    return value


def _no_minus_inf(x: NDArray) -> NDArray:
    """``x`` with -inf raised to the lowest finite value: for ``x * f(x)`` where f(-inf) = 0,
    whose limit is 0 and not IEEE's -inf * 0 = NaN (NaN stays NaN)."""
    return np.maximum(x, np.finfo(x.dtype).min)


class ReLU(_Activation):
    """``max(x, 0)``, element-wise (NaN stays NaN)."""

    def _apply(self, x):
        out = _ops.relu(np.asarray(x, order="C"))  # C order, as the kernel reads it
        return out, {"output": out}

    def _input_grad(self, grad, saved):
        # from the output, as torch's threshold_backward: a NaN input passes its gradient on
        return _ops.relu_backward(grad, saved["output"])


class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))``, computed without overflow for any x (``scipy.special.expit``)."""

    def _apply(self, x):
        out = expit(x)
        return out, {"out": out}

    def _input_grad(self, grad, saved):
        out = saved["out"]
        return grad * out * (1 - out)


class Tanh(_Activation):
    """``tanh(x)``, element-wise."""

    def _apply(self, x):
        out = np.tanh(x)
        return out, {"out": out}

    def _input_grad(self, grad, saved):
        return grad * (1 - saved["out"] ** 2)


class SiLU(_Activation):
    """``x * sigmoid(x)`` (also called swish), stable for any x."""

    def _apply(self, x):
        sigmoid = expit(x)
        return x * sigmoid, {"x": x, "sigmoid": sigmoid}

    def _input_grad(self, grad, saved):
        x, sigmoid = saved["x"], saved["sigmoid"]
        # d/dx [x s(x)] = s + x s (1 - s)
        return grad * (sigmoid * (1 + x * (1 - sigmoid)))


class LeakyReLU(_InplaceActivation):
    """``x`` where ``x > 0``, else ``negative_slope * x``; the gradient at 0 is
    ``negative_slope``, as torch's.

    Parameters
    ----------
    negative_slope : float, default 0.01
        Any finite number (negative too).
    inplace : bool, default False
        Write the output into the input array (see ``inplace`` of ``_InplaceActivation``).
    """

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.negative_slope = _finite(negative_slope, "negative_slope", "LeakyReLU")

    def _apply(self, x):
        positive = x > 0  # NaN is not: it takes the slope's branch, as in torch
        slope = x.dtype.type(self.negative_slope)
        out = x.copy()
        with np.errstate(invalid="ignore"):  # -inf * 0 is NaN, as in torch
            np.multiply(x, slope, out=out, where=~positive)
        return out, {"positive": positive, "slope": slope}

    def _input_grad(self, grad, saved):
        return np.where(saved["positive"], grad, grad * saved["slope"])

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}{self._inplace_repr()}"


class ELU(_InplaceActivation):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``; the gradient at 0 is ``alpha``,
    as torch's. ``exp`` only ever sees ``min(x, 0)``: no overflow for any x.

    Parameters
    ----------
    alpha : float, default 1.0
        Any finite number.
    inplace : bool, default False
        Write the output into the input array.
    """

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.alpha = _finite(alpha, "alpha", "ELU")

    def _apply(self, x):
        negative = x <= 0
        alpha = x.dtype.type(self.alpha)
        clipped = np.minimum(x, 0)
        out = np.where(negative, alpha * np.expm1(clipped), x)
        # the derivative, saved instead of x (which inplace=True overwrites)
        slope = np.where(negative, alpha * np.exp(clipped), x.dtype.type(1))
        return out, {"slope": slope}

    def _input_grad(self, grad, saved):
        return grad * saved["slope"]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}{self._inplace_repr()}"


# GELU's tanh form: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), as torch's constants
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_KAPPA = 0.044715
# |x| at which tanh(inner(x)) is exactly +-1 in float32 and float64; x is clipped there so
# x^3 never overflows, which changes no result
_TANH_SATURATED = 10.0
# |x| beyond which the normal density exp(-x^2 / 2) is exactly 0 in float32 and float64
_PDF_VANISHES = 40.0


class GELU(_Activation):
    """``x * Phi(x)``, Phi the standard normal CDF (``approximate='none'``), or its tanh
    approximation (``approximate='tanh'``), as torch's.

    Phi is ``scipy.special.ndtr``, accurate in the far negative tail. At -inf the output
    and gradient are their limits, 0 (torch gives NaN there and, for 'tanh' in float32,
    for |x| beyond about 1e13); +inf gives +inf and a gradient of 1.

    Parameters
    ----------
    approximate : {'none', 'tanh'}, default 'none'
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if not isinstance(approximate, str):
            raise TypeError(
                f"GELU: approximate must be 'none' or 'tanh', got {type(approximate).__name__}"
            )
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _apply(self, x):
        if self.approximate == "tanh":
            clipped = np.clip(x, -_TANH_SATURATED, _TANH_SATURATED)
            tanh = np.tanh(_SQRT_2_OVER_PI * (clipped + _KAPPA * clipped**3))
            out = 0.5 * _no_minus_inf(x) * (1 + tanh)
            return out, {"clipped": clipped, "tanh": tanh}
        cdf = ndtr(x)
        return _no_minus_inf(x) * cdf, {
            "clipped": np.clip(x, -_PDF_VANISHES, _PDF_VANISHES),
            "cdf": cdf,
        }

    def _input_grad(self, grad, saved):
        x = saved["clipped"]
        if self.approximate == "tanh":
            tanh = saved["tanh"]
            inner_grad = _SQRT_2_OVER_PI * (1 + 3 * _KAPPA * x * x)
            return grad * (0.5 * (1 + tanh) + 0.5 * x * (1 - tanh * tanh) * inner_grad)
        # d/dx [x Phi(x)] = Phi(x) + x phi(x); phi(x) is 0 beyond the clip, so x is exact
        pdf = np.exp(-0.5 * x * x) * x.dtype.type(1 / math.sqrt(2 * math.pi))
        return grad * (saved["cdf"] + x * pdf)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Hardswish(_InplaceActivation):
    """``x * relu6(x + 3) / 6``. The gradient follows torch's: 0 for ``x <= -3``,
    ``x / 3 + 1/2`` for ``-3 < x < 3``, 1 for ``x >= 3``. At -inf the output is its limit,
    0 (torch gives NaN).

    Parameters
    ----------
    inplace : bool, default False
        Write the output into the input array.
    """

    def _apply(self, x):
        # divided before the product: x * 6 would overflow for |x| near the dtype's max
        out = _no_minus_inf(x) * (np.clip(x + 3, 0, 6) / 6)
        middle = np.where(x < 3, x / 3 + 0.5, x.dtype.type(1))  # NaN: 1, as torch's
        slope = np.where(x <= -3, x.dtype.type(0), middle)
        return out, {"slope": slope}

    def _input_grad(self, grad, saved):
        return grad * saved["slope"]


class _AlongDim(_Activation):
    """An activation normalising along one dimension ``dim`` (Softmax, LogSoftmax)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = integer(dim, "dim", type(self).__name__)

    def _check_dim(self, x: NDArray) -> None:
        if not -x.ndim <= self.dim < x.ndim:
            raise IndexError(
                f"{type(self).__name__}: Dimension out of range (expected to be in range of "
                f"[{-x.ndim}, {x.ndim - 1}], but got {self.dim}) for input "
                f"of shape {x.shape}"
            )

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """``exp(x) / sum(exp(x))`` along ``dim`` (the max is subtracted first: no overflow).

    Parameters
    ----------
    dim : int, default 1
        The class dimension of an (N, C, ...) input.
    """

    def _apply(self, x):
        self._check_dim(x)
        out = softmax(x, axis=self.dim)
        return out, {"out": out}

    def _input_grad(self, grad, saved):
        out = saved["out"]
        return out * (grad - np.sum(grad * out, axis=self.dim, keepdims=True))


class LogSoftmax(_AlongDim):
    """``x - log(sum(exp(x)))`` along ``dim``, computed stably (shifted by the maximum), as
    ``torch.nn.LogSoftmax``: feed its output to ``NLLLoss``.

    Parameters
    ----------
    dim : int, default 1
        The class dimension of an (N, C, ...) input. (torch's default ``dim=None`` picks a
        dimension from the input's rank and is deprecated; fastcnn asks for one.)
    """

    def _apply(self, x):
        self._check_dim(x)
        out = _ops.log_softmax(x, self.dim) if x.size else x.copy()
        return out, {"out": out}

    def _input_grad(self, grad, saved):
        # d/dx_j of sum_i g_i (x_i - logsumexp(x)) = g_j - softmax(x)_j * sum_i g_i
        with np.errstate(over="ignore", invalid="ignore"):  # a NaN output gives NaN, quietly
            return grad - np.exp(saved["out"]) * np.sum(grad, axis=self.dim, keepdims=True)
