"""Losses: CrossEntropyLoss (fused, stable log-softmax) and MSELoss.

``loss_fn(input, target)`` returns the loss as a Python float; ``loss_fn.backward()``
returns its gradient with respect to ``input`` (the logits), ready for
``model.backward``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._validation import float_input
from fastcnn.nn.module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]


class _Loss(Module):
    """Shared reduction handling and ``backward`` of the losses.

    Subclasses' ``forward`` saves what ``_input_grad`` needs to compute the gradient of the
    loss (for ``grad_output`` = 1) with respect to the input; it is computed in ``backward``
    only, so evaluation loops do not pay for it.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"{type(self).__name__}: reduction must be 'mean' or 'sum', got {reduction!r} "
                "(reduction='none' is not supported: the loss is returned as a float)"
            )
        self.reduction = reduction

    def _reduce(self, per_element: NDArray, count: int) -> float:
        with _ieee():  # inf + -inf: a NaN loss for fit to report, not a warning
            total = float(np.sum(per_element, dtype=np.float64))
        return total / count if self.reduction == "mean" else total

    def backward(self, grad_output: ArrayLike = 1.0, input_grad: bool = True) -> NDArray | None:
        """Gradient of the loss with respect to the input of the last call.

        Parameters
        ----------
        grad_output : float, default 1.0
            Gradient with respect to the loss itself (to scale the result).
        input_grad : bool
            If False, return None (the module has no parameters).

        Returns
        -------
        ndarray of the input's shape and dtype, or None
        """
        saved = self._saved()
        if not input_grad:
            return None
        scale = np.asarray(grad_output, dtype=np.float64)
        if scale.size != 1:
            raise ValueError(
                f"{type(self).__name__}.backward: grad_output must be a scalar (the loss is "
                f"one number), got shape {scale.shape}"
            )
        grad = self._input_grad(saved)
        if self.reduction == "mean":
            scale = scale / saved["count"]
        return grad * grad.dtype.type(scale.item())

    def _input_grad(self, saved: dict[str, Any]) -> NDArray:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Cross entropy of softmax(logits) against class labels or class probabilities.

    ``loss_n = -sum_c target[n, c] * log_softmax(logits)[n, c]``, with a one-hot target for
    labels; averaged (``reduction="mean"``, over the batch) or summed. The log-softmax is
    fused and shifted by the row maximum, so any finite logits are safe; non-finite logits
    give torch's NaN or infinite loss, without a NumPy warning (``fit`` stops on it).

    Parameters
    ----------
    reduction : {"mean", "sum"}

    Call
    ----
    loss_fn(logits, target) -> float
        logits : float ndarray (N, C)
        target : integer ndarray (N,) of labels in [0, C), or float ndarray (N, C) of class
            probabilities (one-hot or soft; cast to the logits' dtype).
    """

    def forward(self, input: ArrayLike, target: ArrayLike) -> float:
        logits = float_input(input, "CrossEntropyLoss")
        if logits.ndim != 2 or logits.shape[0] == 0:
            raise ValueError(
                f"CrossEntropyLoss: expected logits of shape (N, C) with N >= 1, got shape "
                f"{logits.shape}"
            )
        labels_or_probs = _check_target(np.asarray(target), logits)
        log_probs = _log_softmax(logits)
        if labels_or_probs.dtype.kind in "iu":
            per_sample = -log_probs[np.arange(len(labels_or_probs)), labels_or_probs]
        else:
            with _ieee():  # 0 * -inf is NaN, as in torch
                per_sample = -np.sum(labels_or_probs * log_probs, axis=1)
        self._save_for_backward(log_probs=log_probs, target=labels_or_probs, count=logits.shape[0])
        return self._reduce(per_sample, logits.shape[0])

    def _input_grad(self, saved):
        log_probs, target = saved["log_probs"], saved["target"]
        probs = np.exp(log_probs)
        if target.dtype.kind in "iu":
            probs[np.arange(len(target)), target] -= 1
            return probs
        # d/dz of -sum_c t_c log_softmax(z)_c = softmax(z) * sum_c t_c - t
        return probs * np.sum(target, axis=1, keepdims=True) - target


def _ieee():
    """Let overflow and invalid operations give inf and NaN quietly, as torch does.

    A loss meeting non-finite (or float32-overflowing) values returns a NaN or infinite loss,
    which is fastcnn's signal (fit raises NonFiniteLossError on it); NumPy would also warn,
    and a warning turned into an error (pytest -W error) would hide that signal.
    """
    return np.errstate(over="ignore", invalid="ignore")


def _log_softmax(logits):
    """log_softmax over axis 1, shifted by the row maximum: scipy.special.log_softmax's
    arithmetic (and bits) for finite logits, torch's values for the others.

    Not scipy's function: it swaps a non-finite row maximum for 0, so a row holding +inf
    computed inf - inf (warning "invalid value encountered in subtract") and gave NaN in one
    place and -inf in the others. Shifting by the true maximum gives a row of NaN, as torch,
    for a row holding NaN or +inf or only -inf; a -inf among finite logits gives -inf.
    """
    row_max = np.max(logits, axis=1, keepdims=True)
    with _ieee():  # the shift can overflow float32 (3e38 - -3e38) or be inf - inf
        shifted = logits - row_max
        # the sum is at least 1 (the maximum's exp(0)) or NaN: its log is finite or NaN
        return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def _check_target(target: NDArray, logits: NDArray) -> NDArray:
    """Validated labels (int64) or probabilities (logits' dtype) for ``logits``."""
    n, classes = logits.shape
    if target.dtype.kind in "iu":
        if target.ndim != 1:
            raise ValueError(
                f"CrossEntropyLoss: class-label targets must be 1-D (N,), got shape "
                f"{target.shape} (for probabilities pass floats of the logits' shape)"
            )
        if len(target) != n:
            raise ValueError(
                f"Expected input batch_size ({n}) to match target batch_size ({len(target)})."
            )
        out_of_range = target[(target < 0) | (target >= classes)]
        if out_of_range.size:
            raise IndexError(
                f"Target {out_of_range[0]} is out of bounds. (class labels must lie in "
                f"[0, {classes - 1}] for {classes} classes)"
            )
        return target.astype(np.int64, copy=False)
    if target.dtype.kind == "f":
        if target.shape != logits.shape:
            raise ValueError(
                f"CrossEntropyLoss: probability targets must have the logits' shape "
                f"{logits.shape}, got {target.shape} (for class labels pass an integer array, "
                "e.g. y.astype(np.int64))"
            )
        return target.astype(logits.dtype, copy=False)
    raise TypeError(
        f"CrossEntropyLoss: target must be integer class labels or float probabilities, got "
        f"dtype {target.dtype}"
    )


class MSELoss(_Loss):
    """Mean (or summed) squared error ``(input - target) ** 2`` over all elements.

    Parameters
    ----------
    reduction : {"mean", "sum"}
        "mean" divides by the number of elements, as PyTorch.
    """

    def forward(self, input: ArrayLike, target: ArrayLike) -> float:
        x = float_input(input, "MSELoss")
        target = np.asarray(target)
        if target.dtype.kind not in "iuf":
            raise TypeError(f"MSELoss: target must be numeric, got dtype {target.dtype}")
        if target.shape != x.shape:
            raise ValueError(
                f"MSELoss: target shape {target.shape} differs from input shape {x.shape}; "
                "they must be equal (no broadcasting)"
            )
        if x.size == 0:
            raise ValueError(f"MSELoss: input of shape {x.shape} is empty")
        with _ieee():  # inf - inf, or a square overflowing: a NaN or inf loss
            diff = x - target.astype(x.dtype, copy=False)
            squared = diff * diff
        self._save_for_backward(diff=diff, count=x.size)
        return self._reduce(squared, x.size)

    def _input_grad(self, saved):
        with _ieee():  # 2 * 3e38 overflows float32, as in torch
            return 2 * saved["diff"]
