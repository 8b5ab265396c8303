"""Linear (fully connected) layer and Identity."""

import numpy as np

from fastcnn.nn import init
from fastcnn.nn._checks import (
    float_dtype,
    float_input,
    generator,
    grad_like,
    input_size,
    positive_int,
)
from fastcnn.nn.module import Module
from fastcnn.nn.parameter import Parameter

__all__ = ["Identity", "Linear"]


class Linear(Module):
    """``y = x @ weight.T + bias``, on the last dimension of the input.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    rng : np.random.Generator or int, optional
        Draws the initial weights (PyTorch's default: ``kaiming_uniform_(a=sqrt(5))``, bias
        U(+-1/sqrt(in_features))).
    dtype : np.float32 (default) or np.float64

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
    bias : Parameter, shape (out_features,), or None

    Shape
    -----
    Input (*, in_features), output (*, out_features).
    """

    def __init__(self, in_features, out_features, bias=True, *, rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features", "Linear")
        self.out_features = positive_int(out_features, "out_features", "Linear")
        dtype = float_dtype(dtype, "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        self.bias = Parameter(np.empty(self.out_features, dtype=dtype)) if bias else None
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None):
        """Redraw the weights with PyTorch's default initialisation."""
        init._reset_weight_and_bias(self.weight, self.bias, generator(rng, "Linear"))

    def forward(self, input):
        x = float_input(input, "Linear", self.weight.dtype)
        if x.ndim == 0:
            raise ValueError("Linear: input must have at least 1 dimension, got a scalar")
        input_size(x, -1, self.in_features, "Linear", "features (last dim)")
        self._save_for_backward(input=x)
        out = x @ self.weight.data.T
        if self.bias is not None:
            out += self.bias.data
        return out

    def backward(self, grad_output, input_grad=True):
        x = self._saved()["input"]
        grad = grad_like(grad_output, (*x.shape[:-1], self.out_features), x.dtype, "Linear")
        # Every leading dimension is a batch dimension: fold them into one.
        grad_2d = grad.reshape(-1, self.out_features)
        self.weight.accumulate_grad(grad_2d.T @ x.reshape(-1, self.in_features))
        if self.bias is not None:
            self.bias.accumulate_grad(grad_2d.sum(axis=0))
        return grad @ self.weight.data if input_grad else None

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    """Return the input unchanged (a placeholder, e.g. to remove a layer from a model)."""

    def forward(self, input):
        self._save_for_backward(shape=np.shape(input))
        return input

    def backward(self, grad_output, input_grad=True):
        shape = self._saved()["shape"]
        if not input_grad:
            return None
        return grad_like(grad_output, shape, None, "Identity")
