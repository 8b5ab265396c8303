"""Linear (fully connected) layer and Identity."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastcnn import _ops
from fastcnn._validation import (
    fits_int32,
    flag,
    float_dtype,
    float_input,
    generator,
    grad_like,
    input_size,
    pass_through_dtype,
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

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "in_features", "Linear")
        self.out_features = positive_int(out_features, "out_features", "Linear")
        fits_int32("Linear", in_features=self.in_features, out_features=self.out_features)
        bias = flag(bias, "bias", "Linear")
        dtype = float_dtype(dtype, "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        self.bias = Parameter(np.empty(self.out_features, dtype=dtype)) if bias else None
        self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        """Redraw the weights with PyTorch's default initialisation."""
        init.reset_weight_and_bias(self.weight, self.bias, generator(rng, "Linear"))

    def forward(self, input: ArrayLike) -> NDArray:
        x = float_input(input, "Linear", self.weight.dtype)
        if x.ndim == 0:
            raise ValueError("Linear: input must have at least 1 dimension, got a scalar")
        input_size(x, -1, self.in_features, "Linear", "features (last dim)")
        x = np.ascontiguousarray(x)
        self._save_for_backward(input=x)
        bias = None if self.bias is None else self.bias.data
        out = _ops.linear_forward(x.reshape(-1, self.in_features), self.weight.data, bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """Accumulate the weight (and bias) gradients; return the input gradient (None if
        not ``input_grad``). Sums over the batch run in a fixed order: the same bits for any
        thread count."""
        x = self._saved()["input"]
        grad = grad_like(grad_output, (*x.shape[:-1], self.out_features), x.dtype, "Linear")
        # fastcnn's kernel, not NumPy's matmul: NumPy's BLAS threads would fight the
        # convolution kernels' OpenMP threads. Leading dimensions are all batch dimensions.
        grad_x, grad_w, grad_b = _ops.linear_backward(
            x.reshape(-1, self.in_features),
            self.weight.data,
            grad.reshape(-1, self.out_features),
            bool(input_grad),
            self.bias is not None,
        )
        self.weight.accumulate_grad(grad_w)
        if self.bias is not None:
            self.bias.accumulate_grad(grad_b)  # type: ignore[arg-type]  # None only without bias
        return None if grad_x is None else grad_x.reshape(x.shape)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Identity(Module):
    """Return the input unchanged (a placeholder, e.g. to remove a layer from a model)."""

    def forward(self, input: Any) -> Any:
        self._save_for_backward(shape=np.shape(input), dtype=pass_through_dtype(input))
        return input

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """The output gradient, unchanged but for its dtype (that of a float input)."""
        saved = self._saved()
        if not input_grad:
            return None
        return grad_like(grad_output, saved["shape"], saved["dtype"], "Identity")
