"""Classification metrics: top-k accuracy, named as ``fit`` and ``History`` name them, and
user metric functions.

A metric is a name, ``"accuracy"`` (top-1) or ``"topK"``, or a function
``fn(logits, labels) -> float`` giving its mean over one batch; the function's ``__name__``
names its series (``train_<name>``, ``val_<name>``). ``fit`` and ``evaluate`` report each
metric's mean over all images: the batch means weighted by batch size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fastcnn._validation import is_real, positive_int

__all__ = ["MetricLike", "is_topk", "metric_k", "topk_correct"]

MetricLike = str | Callable[[Any, Any], float]

_TOPK = re.compile(r"top([1-9][0-9]*)")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names of the other values of an epoch record: a metric must not shadow them.
_RESERVED = {"loss", "lr", "seconds", "epoch"}


def is_topk(name: str) -> bool:
    """True for the built-in names: ``"accuracy"`` and ``"topK"``."""
    return name == "accuracy" or (isinstance(name, str) and _TOPK.fullmatch(name) is not None)


def metric_k(name: str) -> int:
    """The k of a metric name: ``"accuracy"`` (= top-1), ``"top1"``, ``"top5"``, ``"topK"``."""
    if name == "accuracy":
        return 1
    match = _TOPK.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"unknown metric {name!r}; use 'accuracy' (top-1), 'topK' such as 'top5', or a "
            "function fn(logits, labels) -> float"
        )
    return int(match.group(1))


def _function_name(function: Callable[..., Any]) -> str:
    name = getattr(function, "__name__", None)
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"metrics: a metric function's __name__ names its History series, but "
            f"{function!r} has name {name!r}; use a def'd function (or set its __name__ to "
            "an identifier such as 'f1')"
        )
    if is_topk(name) or name in _RESERVED:
        raise ValueError(
            f"metrics: a metric function may not be named {name!r}, a name fit already "
            "uses; rename the function"
        )
    return name


def metric_functions(metrics: MetricLike | Iterable[MetricLike]) -> dict[str, Any]:
    """``{name: k or function}`` for ``fit(metrics=...)``: each checked, none repeated."""
    items = (metrics,) if isinstance(metrics, str) or callable(metrics) else tuple(metrics)
    named: list[tuple[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            named.append((item, metric_k(item)))
        elif callable(item):
            named.append((_function_name(item), item))
        else:
            raise TypeError(
                f"metrics: each metric must be a name such as 'accuracy' or 'top5' or a "
                f"function fn(logits, labels) -> float, got {type(item).__name__} {item!r}"
            )
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"metrics must not repeat a name, got {names}")
    return dict(named)


def check_metrics(metrics: MetricLike | Iterable[MetricLike]) -> tuple[str, ...]:
    """The metric names as a tuple, each checked, without duplicates."""
    return tuple(metric_functions(metrics))


def batch_sum(name: str, metric: Any, logits: Any, labels: Any) -> float:
    """The metric summed over one batch: top-k hits, or a function's mean times the batch
    size."""
    if isinstance(metric, int):
        return topk_correct(logits, labels, metric)
    value = metric(logits, labels)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if not is_real(value):
        raise TypeError(
            f"metric {name!r} must return a number (its mean over the batch), got "
            f"{type(value).__name__} {value!r}"
        )
    return float(value) * len(labels)


def topk_correct(logits: ArrayLike, labels: ArrayLike, k: int) -> int:
    """How many rows of ``logits`` (N, C) have their label among the k largest scores.

    ``k >= C`` counts every row (each label is then among the top k), so top-5 stays
    meaningful for a model with fewer than 5 classes.
    """
    k = positive_int(k, "k", "topk_correct")
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"topk_correct: labels of shape {labels.shape} do not fit logits of shape "
            f"{logits.shape}; expected logits (N, C) and one label per row, labels (N,)"
        )
    if k == 1:
        return int(np.count_nonzero(logits.argmax(axis=1) == labels))
    if k >= logits.shape[1]:
        return len(labels)
    top = np.argpartition(logits, -k, axis=1)[:, -k:]
    return int(np.count_nonzero((top == labels[:, None]).any(axis=1)))
