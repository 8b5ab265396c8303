"""GroupNorm and LayerNorm with PyTorch's semantics, in NumPy.

Both normalise each sample by its own statistics (the mean and *biased* variance over a
group of channels, or over the trailing ``normalized_shape`` dimensions), so unlike
BatchNorm they behave the same in training and evaluation and keep no running estimates.
They compute in the input's dtype, as BatchNorm does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastcnn._validation import (
    flag,
    float_dtype,
    float_input,
    grad_like,
    input_size,
    is_int,
    positive_int,
    real,
)
from fastcnn.nn import init
from fastcnn.nn.module import Module
from fastcnn.nn.parameter import Parameter

__all__ = ["GroupNorm", "LayerNorm"]


def _normalize(x: NDArray, axes: tuple[int, ...], eps: float) -> tuple[NDArray, NDArray]:
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` (biased variance), and the
    ``1 / sqrt(var + eps)`` it used (kept dims, for backward)."""
    if all(x.shape[axis] > 0 for axis in axes):
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
    else:  # an empty group: nothing to normalise (and no "mean of empty slice" warning)
        kept = tuple(1 if axis in axes else size for axis, size in enumerate(x.shape))
        mean, var = np.zeros(kept, x.dtype), np.ones(kept, x.dtype)
    inv_std = (1 / np.sqrt(var + eps)).astype(x.dtype)
    return (x - mean) * inv_std, inv_std


def _normalized_input_grad(
    grad_x_hat: NDArray, x_hat: NDArray, inv_std: NDArray, axes: tuple[int, ...]
) -> NDArray:
    """The input gradient of ``_normalize`` given the gradient of its output: the gradient
    flows through the mean and variance as well as through x."""
    if grad_x_hat.size == 0:
        return grad_x_hat.copy()
    mean_grad = grad_x_hat.mean(axis=axes, keepdims=True)
    mean_grad_x_hat = (grad_x_hat * x_hat).mean(axis=axes, keepdims=True)
    return inv_std * (grad_x_hat - mean_grad - x_hat * mean_grad_x_hat)


class _Normalization(Module):
    """The affine part shared by GroupNorm and LayerNorm: an optional ``weight`` (init 1)
    and ``bias`` (init 0) of ``param_shape``, applied after normalising."""

    def _make_parameters(
        self, param_shape: tuple[int, ...], affine: bool, bias: bool, dtype: DTypeLike
    ) -> None:
        name = type(self).__name__
        dtype = float_dtype(dtype, name)
        self.weight = Parameter(np.empty(param_shape, dtype)) if affine else None
        self.bias = Parameter(np.empty(param_shape, dtype)) if affine and bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weight 1, bias 0."""
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    @property
    def dtype(self) -> np.dtype | None:
        """The parameters' dtype, which the input must have (None, accepting any float
        input, when the layer has no parameters)."""
        return None if self.weight is None else self.weight.dtype

    def _affine(self, x_hat: NDArray, shape: tuple[int, ...]) -> NDArray:
        """``x_hat * weight + bias``, the parameters reshaped to ``shape`` to broadcast."""
        out = x_hat
        if self.weight is not None:
            out = out * self.weight.data.reshape(shape)
        if self.bias is not None:
            out = out + self.bias.data.reshape(shape)
        return out

    def _affine_backward(
        self, grad: NDArray, x_hat: NDArray, shape: tuple[int, ...], summed: tuple[int, ...]
    ) -> NDArray:
        """Accumulate the weight and bias gradients (``grad`` summed over the axes
        ``summed``); return the gradient of ``x_hat``."""
        if self.weight is not None:
            self.weight.accumulate_grad(
                np.sum(grad * x_hat, axis=summed).reshape(self.weight.shape)
            )
        if self.bias is not None:
            self.bias.accumulate_grad(np.sum(grad, axis=summed).reshape(self.bias.shape))
        return grad if self.weight is None else grad * self.weight.data.reshape(shape)


class GroupNorm(_Normalization):
    """Group normalisation of (N, C, *) input: the C channels are split into
    ``num_groups`` groups of consecutive channels, and each sample's group is normalised
    by its own mean and biased variance, then scaled and shifted per channel.

    Parameters
    ----------
    num_groups : int
        G; must divide ``num_channels``.
    num_channels : int
        C.
    eps : float, default 1e-5
        Added to the variance for stability.
    affine : bool, default True
        Learn a per-channel scale ``weight`` (init 1) and shift ``bias`` (init 0).
    dtype : np.float32 (default) or np.float64
    bias : bool, default True (keyword-only, as in torch)
        With ``affine``, learn the ``bias`` too.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        dtype: DTypeLike = np.float32,
        bias: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_groups = positive_int(num_groups, "num_groups", name)
        self.num_channels = positive_int(num_channels, "num_channels", name)
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"{name}: num_channels ({self.num_channels}) must be divisible by num_groups "
                f"({self.num_groups}); pick a num_groups that divides it"
            )
        self.eps = real(eps, "eps", name, low=0, low_open=True)
        self.affine = flag(affine, "affine", name)
        self._make_parameters((self.num_channels,), self.affine, flag(bias, "bias", name), dtype)

    def forward(self, input: ArrayLike) -> NDArray:
        name = type(self).__name__
        x = float_input(input, name, self.dtype)
        if x.ndim < 2:
            raise ValueError(
                f"{name}: expected input of shape (N, C, *) with at least 2 dimensions, "
                f"got shape {x.shape}"
            )
        input_size(x, 1, self.num_channels, name, "channels (dim 1)")
        # (N, G, C/G * spatial): each sample's group is one row of the last axis
        group_size = math.prod(x.shape[1:]) // self.num_groups
        grouped = (x.shape[0], self.num_groups, group_size)
        x_hat, inv_std = _normalize(x.reshape(grouped), (2,), self.eps)
        x_hat = x_hat.reshape(x.shape)
        self._save_for_backward(x_hat=x_hat, inv_std=inv_std, grouped=grouped)
        return self._affine(x_hat, self._channel_shape(x.ndim))

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """Accumulate weight/bias gradients; return the input gradient (None if not
        ``input_grad``)."""
        saved = self._saved()
        x_hat = saved["x_hat"]
        grad = grad_like(grad_output, x_hat.shape, x_hat.dtype, type(self).__name__)
        channel_shape = self._channel_shape(x_hat.ndim)
        summed = (0, *range(2, x_hat.ndim))
        grad_x_hat = self._affine_backward(grad, x_hat, channel_shape, summed)
        if not input_grad:
            return None
        grouped = saved["grouped"]
        grad_x = _normalized_input_grad(
            grad_x_hat.reshape(grouped), x_hat.reshape(grouped), saved["inv_std"], (2,)
        )
        return grad_x.reshape(x_hat.shape)

    @staticmethod
    def _channel_shape(ndim: int) -> tuple[int, ...]:
        """The shape a per-channel array takes to broadcast over an ``ndim``-D input."""
        return (1, -1) + (1,) * (ndim - 2)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


def _normalized_shape(value: Any, owner: str) -> tuple[int, ...]:
    """``normalized_shape`` as a tuple of positive ints: an int or a non-empty sequence."""
    items = (value,) if is_int(value) else value
    if not isinstance(items, (Sequence, np.ndarray)) or isinstance(items, str):
        raise TypeError(
            f"{owner}: normalized_shape must be an int or a sequence of ints, got "
            f"{type(value).__name__} {value!r}"
        )
    if len(items) == 0:
        raise ValueError(
            f"{owner}: normalized_shape must have at least one dimension, got {value!r}; "
            "pass the size of the last dimension, e.g. LayerNorm(x.shape[-1])"
        )
    return tuple(positive_int(size, "normalized_shape", owner) for size in items)


class LayerNorm(_Normalization):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions: each
    sample (every index of the leading dimensions) is normalised by its own mean and
    biased variance, then scaled and shifted element-wise.

    Parameters
    ----------
    normalized_shape : int or sequence of ints
        The input's trailing shape, e.g. ``C`` for (N, L, C) input or ``(C, H, W)``.
    eps : float, default 1e-5
        Added to the variance for stability.
    elementwise_affine : bool, default True
        Learn a ``weight`` (init 1) and ``bias`` (init 0) of shape ``normalized_shape``.
    bias : bool, default True
        With ``elementwise_affine``, learn the ``bias`` too.
    dtype : np.float32 (default) or np.float64
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.normalized_shape = _normalized_shape(normalized_shape, name)
        self.eps = real(eps, "eps", name, low=0, low_open=True)
        self.elementwise_affine = flag(elementwise_affine, "elementwise_affine", name)
        self._make_parameters(
            self.normalized_shape, self.elementwise_affine, flag(bias, "bias", name), dtype
        )

    def forward(self, input: ArrayLike) -> NDArray:
        name = type(self).__name__
        x = float_input(input, name, self.dtype)
        count = len(self.normalized_shape)
        if x.ndim < count or x.shape[x.ndim - count :] != self.normalized_shape:
            raise ValueError(
                f"{name}: given normalized_shape={self.normalized_shape}, expected input of "
                f"shape (*, {', '.join(map(str, self.normalized_shape))}), got shape {x.shape}"
            )
        x_hat, inv_std = _normalize(x, self._axes(x.ndim), self.eps)
        self._save_for_backward(x_hat=x_hat, inv_std=inv_std)
        return self._affine(x_hat, self.normalized_shape)

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """Accumulate weight/bias gradients; return the input gradient (None if not
        ``input_grad``)."""
        saved = self._saved()
        x_hat = saved["x_hat"]
        grad = grad_like(grad_output, x_hat.shape, x_hat.dtype, type(self).__name__)
        leading = tuple(range(x_hat.ndim - len(self.normalized_shape)))
        grad_x_hat = self._affine_backward(grad, x_hat, self.normalized_shape, leading)
        if not input_grad:
            return None
        return _normalized_input_grad(grad_x_hat, x_hat, saved["inv_std"], self._axes(x_hat.ndim))

    def _axes(self, ndim: int) -> tuple[int, ...]:
        """The normalised axes of an ``ndim``-D input: the last len(normalized_shape)."""
        return tuple(range(ndim - len(self.normalized_shape), ndim))

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )
