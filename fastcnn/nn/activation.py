"""Element-wise activations and Softmax: ReLU on fastcnn's kernel, the others in NumPy and
SciPy (numerically stable for any |x|)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit, softmax

from fastcnn import _ops
from fastcnn._validation import float_input, grad_like, integer
from fastcnn.nn.module import Module

Saved = dict[str, Any]

__all__ = ["ReLU", "SiLU", "Sigmoid", "Softmax", "Tanh"]


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


class Softmax(_Activation):
    """``exp(x) / sum(exp(x))`` along ``dim`` (the max is subtracted first: no overflow).

    Parameters
    ----------
    dim : int, default 1
        The class dimension of an (N, C, ...) input.
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = integer(dim, "dim", "Softmax")

    def _apply(self, x):
        if not -x.ndim <= self.dim < x.ndim:
            raise IndexError(
                f"Softmax: Dimension out of range (expected to be in range of "
                f"[{-x.ndim}, {x.ndim - 1}], but got {self.dim}) for input "
                f"of shape {x.shape}"
            )
        out = softmax(x, axis=self.dim)
        return out, {"out": out}

    def _input_grad(self, grad, saved):
        out = saved["out"]
        return out * (grad - np.sum(grad * out, axis=self.dim, keepdims=True))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
