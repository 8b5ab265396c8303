"""BatchNorm1d and BatchNorm2d with PyTorch's semantics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastcnn import _ops
from fastcnn._validation import (
    flag,
    float_dtype,
    float_input,
    grad_like,
    input_ndim,
    input_size,
    positive_int,
    real,
)
from fastcnn.nn import init
from fastcnn.nn.module import Module
from fastcnn.nn.parameter import Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    """Normalise each channel (dim 1) over the batch and spatial dimensions.

    In training (or without running statistics) the batch's mean and *biased* variance
    normalise it, and the running estimates move towards the mean and the *unbiased*
    variance: ``running = (1 - momentum) * running + momentum * batch`` (a cumulative
    average when momentum is None). In evaluation the running estimates are used.
    """

    _allowed_ndim: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(num_features, "num_features", name)
        self.eps = real(eps, "eps", name, low=0, low_open=True)
        self.momentum = None if momentum is None else real(momentum, "momentum", name, 0, 1)
        self.affine = flag(affine, "affine", name)
        self.track_running_stats = flag(track_running_stats, "track_running_stats", name)
        dtype = float_dtype(dtype, name)
        channels = np.empty(self.num_features, dtype=dtype)
        self.weight = Parameter(channels.copy()) if affine else None
        self.bias = Parameter(channels.copy()) if affine else None
        tracked = self.track_running_stats
        self.register_buffer("running_mean", channels.copy() if tracked else None)
        self.register_buffer("running_var", channels.copy() if tracked else None)
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64) if tracked else None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches seen."""
        if self.track_running_stats:
            self.running_mean.fill(0)
            self.running_var.fill(1)
            self.num_batches_tracked.fill(0)

    def reset_parameters(self) -> None:
        """Reset the running statistics; weight 1, bias 0."""
        self.reset_running_stats()
        if self.weight is not None and self.bias is not None:  # affine
            init.ones_(self.weight)
            init.zeros_(self.bias)

    @property
    def dtype(self) -> np.dtype | None:
        """The dtype of the parameters and running statistics, which the input must have
        (None, accepting any float input, when the layer has neither)."""
        source = self.weight if self.affine else self.running_mean
        return None if source is None else source.dtype

    # --------------------------------------------------------------------- forward

    def forward(self, input: ArrayLike) -> NDArray:
        out, saved = self._normalise(input, relu=False)
        self._save_for_backward(**saved)
        return out

    def _normalise(self, input: ArrayLike, relu: bool) -> tuple[NDArray, dict[str, Any]]:
        """(output, what backward needs); with ``relu`` the output is that of a ReLU after
        this layer, in the same pass (nn/_fusion.py), and backward takes its gradient."""
        name = type(self).__name__
        x = float_input(input, name, self.dtype)
        input_ndim(x, name, self._allowed_ndim)
        input_size(x, 1, self.num_features, name, "channels (dim 1)")
        # (N, C, S) for the kernels; the statistics are float64 per channel
        rows = np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
        weight, bias = self._affine_float64()
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            self._check_batch_size(x)
            y, mean, var, inv_std = _ops.batch_norm_train(rows, weight, bias, self.eps, relu)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, x.size // self.num_features)
        else:
            mean = self.running_mean.astype(np.float64)
            inv_std = 1 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
            y = _ops.batch_norm_eval(rows, mean, inv_std * weight, bias, relu)
        saved = {
            "input": rows,
            "shape": x.shape,
            "mean": mean,
            "inv_std": inv_std,
            "batch_stats": use_batch,
            "relu_output": y if relu else None,
        }
        return y.reshape(x.shape), saved

    def _affine_float64(self) -> tuple[NDArray, NDArray]:
        """weight and bias as float64 (ones and zeros when not affine)."""
        if self.weight is None or self.bias is None:  # not affine
            return np.ones(self.num_features), np.zeros(self.num_features)
        return self.weight.data.astype(np.float64), self.bias.data.astype(np.float64)

    def _check_batch_size(self, x: NDArray) -> None:
        if self.training and x.size // self.num_features <= 1:
            raise ValueError(
                f"{type(self).__name__}: Expected more than 1 value per channel when "
                f"training, got input size {x.shape}"
            )

    def _update_running_stats(self, mean: NDArray, var: NDArray, count: int) -> None:
        """Move the running estimates towards the batch's mean and *unbiased* variance."""
        self.num_batches_tracked += 1
        factor = 1 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (count / (count - 1))
        self.running_mean *= 1 - factor
        self.running_mean += factor * mean
        self.running_var *= 1 - factor
        self.running_var += factor * unbiased

    # -------------------------------------------------------------------- backward

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        """Accumulate weight/bias gradients; return the input gradient (None if not
        ``input_grad``). With batch statistics the gradient flows through the mean and
        variance too; with running statistics the layer is affine."""
        return self._backward(self._saved(), grad_output, input_grad)

    def _backward(
        self, saved: dict[str, Any], grad_output: ArrayLike, input_grad: bool
    ) -> NDArray | None:
        """backward from what ``_normalise`` saved (the ReLU's output gradient if it
        applied one)."""
        rows, shape = saved["input"], saved["shape"]
        grad = grad_like(grad_output, shape, rows.dtype, type(self).__name__)
        weight, bias = self.weight, self.bias
        affine = weight is not None and bias is not None
        if not affine and not input_grad:
            return None
        grad_x, grad_weight, grad_bias = _ops.batch_norm_backward(
            grad.reshape(rows.shape),
            rows,
            saved["mean"],
            saved["inv_std"],
            self._affine_float64()[0],
            saved["batch_stats"],
            input_grad,
            saved["relu_output"],
        )
        if weight is not None and bias is not None:  # affine
            weight.accumulate_grad(grad_weight.astype(weight.dtype))
            bias.accumulate_grad(grad_bias.astype(bias.dtype))
        return None if grad_x is None else grad_x.reshape(shape)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input over N (and L).

    Parameters
    ----------
    num_features : int
        C.
    eps : float, default 1e-5
        Added to the variance for stability.
    momentum : float or None, default 0.1
        Weight of the new batch in the running estimates; None: cumulative average.
    affine : bool, default True
        Learn a per-channel scale ``weight`` (init 1) and shift ``bias`` (init 0).
    track_running_stats : bool, default True
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked`` buffers (in the
        state dict) and use them in eval mode; False normalises with batch statistics always.
    dtype : np.float32 (default) or np.float64
    """

    _allowed_ndim = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input over N, H and W; parameters as
    ``BatchNorm1d``."""

    _allowed_ndim = (4,)
