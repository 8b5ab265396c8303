"""Classification metrics: top-k accuracy, named as ``fit`` and ``History`` name them."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

from fastcnn._validation import positive_int

__all__ = ["metric_k", "topk_correct"]

_TOPK = re.compile(r"top([1-9][0-9]*)")


def metric_k(name: str) -> int:
    """The k of a metric name: ``"accuracy"`` (= top-1), ``"top1"``, ``"top5"``, ``"topK"``."""
    if name == "accuracy":
        return 1
    match = _TOPK.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"unknown metric {name!r}; use 'accuracy' (top-1) or 'topK' such as 'top5'"
        )
    return int(match.group(1))


def check_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    """The metric names as a tuple, each checked, without duplicates."""
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for name in names:
        metric_k(name)
    if len(set(names)) != len(names):
        raise ValueError(f"metrics must not repeat a name, got {list(names)}")
    return names


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
