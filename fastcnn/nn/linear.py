"""Linear (fully connected) layer and Identity."""

import numpy as np

from fastcnn import functional as F
from fastcnn._validation import (
    float_dtype,
    float_input,
    generator,
    grad_like,
    input_size,
    positive_int,
)
from fastcnn.nn import init
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
        return F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)

    def backward(self, grad_output, input_grad=True):
        x = self._saved()["input"]
        grad = grad_like(grad_output, (*x.shape[:-1], self.out_features), x.dtype, "Linear")
        # fastcnn's kernel, not NumPy's matmul: NumPy's BLAS threads would fight the
        # convolution kernels' OpenMP threads. Leading dimensions are all batch dimensions.
        grad_x, grad_w, grad_b = F.linear_backward(
            grad, x, self.weight.data, input_grad=input_grad, bias_grad=self.bias is not None
        )
        self.weight.accumulate_grad(grad_w)
        if self.bias is not None:
            self.bias.accumulate_grad(grad_b)
        return grad_x

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


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
