"""Losses with torch.nn's names, arguments and semantics: CrossEntropyLoss (fused, stable
log-softmax), NLLLoss, BCEWithLogitsLoss (stable for any logit) and MSELoss.

``loss_fn(input, target)`` returns the loss: a Python float for ``reduction="mean"`` or
``"sum"``, the array of per-sample (per-element) losses for ``"none"``.
``loss_fn.backward()`` returns its gradient with respect to ``input`` (the logits), ready
for ``model.backward``; after a ``"none"`` forward, ``loss_fn.backward(grad)`` takes the
gradient of that array (an array of its shape), as ``losses.backward(grad)`` does in torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from fastcnn import _ops
from fastcnn._validation import float_input, grad_like, integer, real
from fastcnn.nn.module import Module

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss", "MSELoss", "NLLLoss"]

REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    """Shared reduction handling and ``backward`` of the losses.

    Subclasses' ``forward`` computes the unreduced losses, saves what ``_input_grad`` needs
    and returns ``self._reduce(losses, denominator, saved)``. ``_input_grad`` gives the
    gradient of ``sum(losses)`` with respect to the input: each loss depends on its own
    sample (or element) only, so scaling that by the gradient of each loss gives the
    ``"none"`` gradient, and by ``1 / denominator`` the mean's. It runs in ``backward``
    only, so evaluation loops do not pay for it.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be 'mean', 'sum' or 'none', got "
                f"{reduction!r}"
            )
        self.reduction = reduction

    def _reduce(self, losses: NDArray, denominator: float, **saved: Any) -> float | NDArray:
        """Save ``saved`` for backward; return ``losses`` reduced. The mean divides by
        ``denominator``: the batch size, the element count, or torch's sum of the targets'
        class weights."""
        self._save_for_backward(losses_shape=losses.shape, denominator=denominator, **saved)
        if self.reduction == "none":
            return losses
        with _ieee():  # inf + -inf: a NaN loss for fit to report, not a warning
            total = np.sum(losses, dtype=np.float64)
            # every target ignored: 0 / 0, torch's NaN
            return float(total / denominator if self.reduction == "mean" else total)

    def backward(self, grad_output: ArrayLike = 1.0, input_grad: bool = True) -> NDArray | None:
        """Gradient of the loss with respect to the input of the last call.

        Parameters
        ----------
        grad_output : float, or ndarray for ``reduction="none"``
            Gradient with respect to the loss itself (1.0 by default, to scale the result);
            after a ``"none"`` forward, an array of the returned losses' shape (required).
        input_grad : bool
            If False, return None (the module has no parameters).

        Returns
        -------
        ndarray of the input's shape and dtype, or None
        """
        saved = self._saved()
        if not input_grad:
            return None
        grad = self._input_grad(saved)
        if self.reduction == "none":
            return grad * self._per_loss_grad(grad_output, saved, grad)
        scale = np.asarray(grad_output, dtype=np.float64)
        if scale.size != 1:
            raise ValueError(
                f"{type(self).__name__}.backward: grad_output must be a scalar (the loss is "
                f"one number), got shape {scale.shape}"
            )
        if self.reduction == "mean":
            with _ieee():  # a zero denominator (every target ignored) has zero gradient rows
                scale = scale / saved["denominator"] if saved["denominator"] else 0 * scale
        with _ieee():  # 2 * 3e38 overflows float32, as in torch
            return grad * grad.dtype.type(scale.item())

    def _per_loss_grad(
        self, grad_output: ArrayLike, saved: dict[str, Any], grad: NDArray
    ) -> NDArray:
        """The gradient of each unreduced loss, shaped to broadcast against ``grad``."""
        name = type(self).__name__
        if grad_output is None or np.ndim(grad_output) == 0:
            raise ValueError(
                f"{name}.backward: with reduction='none' the loss is an array of shape "
                f"{saved['losses_shape']}; pass its gradient, e.g. np.ones(losses.shape)"
            )
        per_loss = grad_like(grad_output, saved["losses_shape"], grad.dtype, name)
        return per_loss.reshape(per_loss.shape + (1,) * (grad.ndim - per_loss.ndim))

    def _input_grad(self, saved: dict[str, Any]) -> NDArray:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


def _ieee():
    """Let overflow and invalid operations give inf and NaN quietly, as torch does.

    A loss meeting non-finite (or float32-overflowing) values returns a NaN or infinite loss,
    which is fastcnn's signal (fit raises NonFiniteLossError on it); NumPy would also warn,
    and a warning turned into an error (pytest -W error) would hide that signal.
    """
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def _weight_array(value: ArrayLike | None, name: str, owner: str) -> NDArray | None:
    """A loss's ``weight`` or ``pos_weight``: None, or a finite real array (float32 kept,
    anything else float64; cast to the input's dtype at each call)."""
    if value is None:
        return None
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(
            f"{owner}: {name} must be an array of real numbers or None, got dtype {array.dtype}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{owner}: {name} must be finite, got {array!r}")
    return array.astype(np.float32 if array.dtype == np.float32 else np.float64)


def _class_weights(value: ArrayLike | None, owner: str) -> NDArray | None:
    """``weight`` of CrossEntropyLoss and NLLLoss: None or one finite weight per class."""
    weight = _weight_array(value, "weight", owner)
    if weight is not None and weight.ndim != 1:
        raise ValueError(
            f"{owner}: weight must be 1-D (one weight per class), got shape {weight.shape}"
        )
    return weight


class _ClassLoss(_Loss):
    """CrossEntropyLoss's and NLLLoss's shared arguments: class weights and ignore_index."""

    def __init__(self, weight: ArrayLike | None, ignore_index: int, reduction: str) -> None:
        super().__init__(reduction)
        name = type(self).__name__
        # a buffer, as in torch: in state_dict() under "weight" when given
        self.register_buffer("weight", _class_weights(weight, name))
        self.ignore_index = integer(ignore_index, "ignore_index", name)

    def _checked_input(self, input: ArrayLike, what: str) -> tuple[NDArray, NDArray | None]:
        """The (N, C) input and the class weights in its dtype."""
        name = type(self).__name__
        scores = float_input(input, name)
        if scores.ndim != 2 or scores.shape[0] == 0:
            raise ValueError(
                f"{name}: expected {what} of shape (N, C) with N >= 1, got shape {scores.shape}"
            )
        weight = self.weight
        if weight is None:
            return scores, None
        if len(weight) != scores.shape[1]:
            raise ValueError(
                f"{name}: weight has {len(weight)} entries but the {what} have "
                f"{scores.shape[1]} classes; pass one weight per class"
            )
        return scores, weight.astype(scores.dtype, copy=False)

    def extra_repr(self) -> str:
        parts = [super().extra_repr()]
        if self.ignore_index != -100:
            parts.append(f"ignore_index={self.ignore_index}")
        return ", ".join(part for part in parts if part)


class CrossEntropyLoss(_ClassLoss):
    """Cross entropy of softmax(logits) against class labels or class probabilities, as
    ``torch.nn.CrossEntropyLoss``.

    With labels ``y``: ``loss_n = -w[y_n] * log_softmax(logits)[n, y_n]``, 0 where
    ``y_n == ignore_index``; the mean divides by the sum of ``w[y_n]`` over the targets not
    ignored (the number of them without ``weight``). With probabilities ``t``:
    ``loss_n = -sum_c w[c] t[n, c] log_softmax(logits)[n, c]``, the mean divides by N.
    ``label_smoothing`` eps mixes the target with the uniform distribution: probabilities
    become ``(1 - eps) t + eps / C``; for labels ``loss_n`` becomes
    ``(1 - eps) loss_n + eps / C * sum_c -w[c] log_softmax(logits)[n, c]`` (torch's formula,
    same denominator). The log-softmax is shifted by the row maximum, so any finite logits
    are safe; non-finite logits give torch's NaN or infinite loss, without a NumPy warning
    (``fit`` stops on it).

    Parameters
    ----------
    weight : array-like (C,), optional
        A weight per class (finite); a buffer, in ``state_dict()`` as in torch.
    ignore_index : int, default -100
        A label whose samples count for nothing (labels only).
    reduction : {"mean", "sum", "none"}
        "none" returns the (N,) losses.
    label_smoothing : float in [0, 1], default 0.0

    Call
    ----
    loss_fn(logits, target) -> float, or ndarray (N,) for reduction="none"
        logits : float ndarray (N, C)
        target : integer ndarray (N,) of labels in [0, C) (or ``ignore_index``), or float
            ndarray (N, C) of class probabilities (one-hot or soft; cast to the logits'
            dtype).
    """

    def __init__(
        self,
        weight: ArrayLike | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.label_smoothing = real(label_smoothing, "label_smoothing", "CrossEntropyLoss", 0, 1)

    def forward(self, input: ArrayLike, target: ArrayLike) -> float | NDArray:
        logits, weight = self._checked_input(input, "logits")
        target = _check_target(np.asarray(target), logits, self.ignore_index)
        log_probs = _ops.log_softmax(logits, axis=1)
        if target.dtype.kind == "i":
            losses, coefficients, denominator = _label_terms(
                log_probs, target, weight, self.ignore_index, self.label_smoothing
            )
        else:
            coefficients = _smoothed(target, self.label_smoothing)
            if weight is not None:
                coefficients = coefficients * weight
            with _ieee():  # 0 * -inf is NaN, as in torch
                losses = -np.sum(coefficients * log_probs, axis=1)
            denominator = logits.shape[0]
        return self._reduce(losses, denominator, log_probs=log_probs, coefficients=coefficients)

    def _input_grad(self, saved):
        # d/dz of -sum_c a_c log_softmax(z)_c = softmax(z) * sum_c a_c - a
        coefficients = saved["coefficients"]
        with _ieee():
            probs = np.exp(saved["log_probs"])
            return probs * np.sum(coefficients, axis=1, keepdims=True) - coefficients

    def extra_repr(self) -> str:
        parts = [super().extra_repr()]
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        return ", ".join(part for part in parts if part)


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of class labels given log-probabilities (e.g. the output of
    ``nn.LogSoftmax(dim=1)``), as ``torch.nn.NLLLoss``.

    ``loss_n = -w[y_n] * input[n, y_n]``, 0 where ``y_n == ignore_index``; the mean divides
    by the sum of ``w[y_n]`` over the targets not ignored (their number without ``weight``).

    Parameters
    ----------
    weight : array-like (C,), optional
        A weight per class (finite); a buffer, in ``state_dict()`` as in torch.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}

    Call
    ----
    loss_fn(log_probs, target) -> float, or ndarray (N,) for reduction="none"
        log_probs : float ndarray (N, C)
        target : integer ndarray (N,) of labels in [0, C) (or ``ignore_index``)
    """

    def __init__(
        self, weight: ArrayLike | None = None, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__(weight, ignore_index, reduction)

    def forward(self, input: ArrayLike, target: ArrayLike) -> float | NDArray:
        log_probs, weight = self._checked_input(input, "log-probabilities")
        labels = np.asarray(target)
        if labels.dtype.kind not in "iu":
            raise TypeError(
                f"NLLLoss: target must be integer class labels, got dtype {labels.dtype} "
                "(convert it with y.astype(np.int64))"
            )
        labels = _check_labels(labels, log_probs, self.ignore_index, "NLLLoss")
        losses, coefficients, denominator = _label_terms(
            log_probs, labels, weight, self.ignore_index, 0.0
        )
        return self._reduce(losses, denominator, coefficients=coefficients)

    def _input_grad(self, saved):
        return -saved["coefficients"]


def _label_terms(log_probs, labels, weight, ignore_index, smoothing):
    """For class labels: the losses, the coefficients ``a`` with ``loss_n = -sum_c a[n, c]
    log_probs[n, c]`` (which give the gradient), and the mean's denominator."""
    n, classes = log_probs.shape
    ignored = labels == ignore_index
    safe_labels = np.where(ignored, 0, labels)  # a valid index; its row counts for nothing
    rows = np.arange(n)
    dtype = log_probs.dtype.type
    label_weights = np.ones(n, log_probs.dtype) if weight is None else weight[safe_labels]
    label_weights[ignored] = 0
    with _ieee():  # 0 * -inf in an ignored row: masked just below
        losses = np.where(ignored, dtype(0), -label_weights * log_probs[rows, safe_labels])
    coefficients = np.zeros_like(log_probs)
    coefficients[rows, safe_labels] = label_weights
    if smoothing:
        class_weights = np.ones(classes, log_probs.dtype) if weight is None else weight
        with _ieee():
            uniform = np.where(ignored, dtype(0), -np.sum(log_probs * class_weights, axis=1))
        keep, share = dtype(1 - smoothing), dtype(smoothing / classes)
        losses = keep * losses + share * uniform
        coefficients = keep * coefficients + share * class_weights * ~ignored[:, None]
    return losses, coefficients, float(np.sum(label_weights, dtype=np.float64))


def _smoothed(probs, smoothing):
    """Probability targets mixed with the uniform distribution, as torch."""
    if not smoothing:
        return probs
    dtype = probs.dtype.type
    return probs * dtype(1 - smoothing) + dtype(smoothing / probs.shape[1])


def _check_labels(labels: NDArray, scores: NDArray, ignore_index: int, owner: str) -> NDArray:
    """Validated class labels (int64) for the (N, C) ``scores``."""
    n, classes = scores.shape
    if labels.ndim != 1:
        raise ValueError(
            f"{owner}: class-label targets must be 1-D (N,), got shape {labels.shape} (for "
            "probabilities pass floats of the logits' shape)"
        )
    if len(labels) != n:
        raise ValueError(
            f"Expected input batch_size ({n}) to match target batch_size ({len(labels)})."
        )
    labels = labels.astype(np.int64, copy=False)
    bad = labels[((labels < 0) | (labels >= classes)) & (labels != ignore_index)]
    if bad.size:
        raise IndexError(
            f"Target {bad[0]} is out of bounds. ({owner}: class labels must lie in "
            f"[0, {classes - 1}] for {classes} classes, or equal ignore_index={ignore_index})"
        )
    return labels


def _check_target(target: NDArray, logits: NDArray, ignore_index: int) -> NDArray:
    """Validated labels (int64) or probabilities (logits' dtype) for ``logits``."""
    if target.dtype.kind in "iu":
        return _check_labels(target, logits, ignore_index, "CrossEntropyLoss")
    if target.dtype.kind == "f":
        if target.shape != logits.shape:
            raise ValueError(
                f"CrossEntropyLoss: probability targets must have the logits' shape "
                f"{logits.shape}, got {target.shape} (for class labels pass an integer array, "
                "e.g. y.astype(np.int64))"
            )
        if ignore_index >= 0:  # torch's rule: a negative one cannot name a class
            raise ValueError(
                f"CrossEntropyLoss: ignore_index={ignore_index} is not supported with "
                "probability targets (it names a class label); leave it at its default -100"
            )
        return target.astype(logits.dtype, copy=False)
    raise TypeError(
        f"CrossEntropyLoss: target must be integer class labels or float probabilities, got "
        f"dtype {target.dtype}"
    )


def _numeric_target(target: ArrayLike, x: NDArray, owner: str) -> NDArray:
    """A target of the input's shape (no broadcasting), cast to its dtype."""
    target = np.asarray(target)
    if target.dtype.kind not in "biuf":
        raise TypeError(f"{owner}: target must be numeric, got dtype {target.dtype}")
    if target.shape != x.shape:
        raise ValueError(
            f"{owner}: target shape {target.shape} differs from input shape {x.shape}; "
            "they must be equal (no broadcasting)"
        )
    if x.size == 0:
        raise ValueError(f"{owner}: input of shape {x.shape} is empty")
    return target.astype(x.dtype, copy=False)


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy of sigmoid(input) against targets in [0, 1], fused and stable,
    as ``torch.nn.BCEWithLogitsLoss``.

    ``loss = -w * (p * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x)))`` element-wise,
    computed as ``(1 - t) x + (1 + (p - 1) t) softplus(-x)`` with a stable softplus: no
    overflow for any finite logit (a logit of 1e30 gives a loss of 1e30 or 0, not inf).

    Parameters
    ----------
    weight : array-like, optional
        Rescales each element's loss; broadcast to the input's shape.
    reduction : {"mean", "sum", "none"}
        "mean" divides by the number of elements; "none" returns the input-shaped losses.
    pos_weight : array-like, optional
        The weight ``p`` of the positive term, broadcast over the last (class) dimension
        (shape (C,) for an (N, C) input).

    Call
    ----
    loss_fn(logits, target) -> float, or ndarray of the input's shape for reduction="none"
        target : float (or integer/bool) ndarray of the logits' shape
    """

    def __init__(
        self,
        weight: ArrayLike | None = None,
        reduction: str = "mean",
        pos_weight: ArrayLike | None = None,
    ) -> None:
        super().__init__(reduction)
        # buffers, as in torch: in state_dict() when given
        self.register_buffer("weight", _weight_array(weight, "weight", "BCEWithLogitsLoss"))
        self.register_buffer(
            "pos_weight", _weight_array(pos_weight, "pos_weight", "BCEWithLogitsLoss")
        )

    def forward(self, input: ArrayLike, target: ArrayLike) -> float | NDArray:
        x = float_input(input, "BCEWithLogitsLoss")
        t = _numeric_target(target, x, "BCEWithLogitsLoss")
        weight = self._broadcast("weight", x)
        pos_weight = self._broadcast("pos_weight", x)
        with _ieee():  # inf logits or targets outside [0, 1]: torch's inf or NaN, quietly
            softplus_neg = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)  # -log(sigmoid(x))
            if pos_weight is not None:
                softplus_neg = (1 + (pos_weight - 1) * t) * softplus_neg
            losses = (1 - t) * x + softplus_neg
            if weight is not None:
                losses = losses * weight
        saved = {"x": x, "t": t, "weight": weight, "pos_weight": pos_weight}
        return self._reduce(losses, x.size, **saved)

    def _broadcast(self, name: str, x: NDArray) -> NDArray | None:
        """The buffer ``name`` in the input's dtype, refused unless it broadcasts to it."""
        array = getattr(self, name)
        if array is None:
            return None
        try:
            shape = np.broadcast_shapes(array.shape, x.shape)
        except ValueError:
            shape = None
        if shape != x.shape:
            where = " over the last (class) dimension" if name == "pos_weight" else ""
            raise ValueError(
                f"BCEWithLogitsLoss: {name} of shape {array.shape} does not broadcast to the "
                f"input's shape {x.shape}{where}"
            )
        return array.astype(x.dtype, copy=False)

    def _input_grad(self, saved):
        x, t, weight, pos_weight = saved["x"], saved["t"], saved["weight"], saved["pos_weight"]
        with _ieee():
            sigmoid = expit(x)
            if pos_weight is None:
                grad = sigmoid - t
            else:  # d/dx of (1 - t) x + (1 + (p - 1) t) softplus(-x)
                grad = (1 + (pos_weight - 1) * t) * sigmoid - pos_weight * t
            return grad if weight is None else grad * weight


class MSELoss(_Loss):
    """Mean (or summed) squared error ``(input - target) ** 2`` over all elements.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}
        "mean" divides by the number of elements, as PyTorch; "none" returns the
        input-shaped squared errors.
    """

    def forward(self, input: ArrayLike, target: ArrayLike) -> float | NDArray:
        x = float_input(input, "MSELoss")
        target = _numeric_target(target, x, "MSELoss")
        with _ieee():  # inf - inf, or a square overflowing: a NaN or inf loss
            diff = x - target
            squared = diff * diff
        return self._reduce(squared, x.size, diff=diff)

    def _input_grad(self, saved):
        with _ieee():  # 2 * 3e38 overflows float32, as in torch
            return 2 * saved["diff"]
