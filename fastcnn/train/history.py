"""History: what ``fit`` measured, per epoch and every few batches; JSON and a PNG plot."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable
from typing import Any

from fastcnn._files import atomic_write
from fastcnn.train.metrics import is_topk, metric_k

__all__ = ["History"]


class History:
    """Per-epoch and running metrics of a training run (what ``fit`` returns).

    Attributes
    ----------
    metrics : tuple of str
        The metric names measured, e.g. ``("accuracy", "top5")``.
    epochs : list of dict
        One record per finished epoch: ``epoch`` (1-based), ``train_loss``,
        ``train_<metric>`` for each metric, the same with ``val_`` for the epochs that were
        validated, ``lr`` and ``seconds``.
    running : list of dict
        Running averages over the epoch so far, every ``log_every`` batches: ``epoch``,
        ``batch``, ``batches`` (per epoch), ``loss`` and each metric.

    ``history["val_accuracy"]`` is the list of that value over the epochs (NaN for an epoch
    without it).
    """

    def __init__(self, metrics: Iterable[str] = ("accuracy", "top5")) -> None:
        self.metrics = tuple(metrics)
        self.epochs: list[dict[str, Any]] = []
        self.running: list[dict[str, Any]] = []

    def __getitem__(self, key: str) -> list[Any]:
        known = sorted({name for record in self.epochs for name in record})
        if key not in known:
            raise KeyError(f"History has no series {key!r}; it has {known}")
        # NaN for the epochs without the value (not validated: fit's eval_every)
        return [record.get(key, math.nan) for record in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epochs)}, metrics={self.metrics})"

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and dicts (JSON-ready)."""
        return {
            "metrics": list(self.metrics),
            "epochs": [dict(r) for r in self.epochs],
            "running": [dict(r) for r in self.running],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """The inverse of ``to_dict``."""
        try:
            history = cls(data["metrics"])
            history.epochs = [dict(r) for r in data["epochs"]]
            history.running = [dict(r) for r in data["running"]]
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"not a History dict (keys 'metrics', 'epochs', 'running' expected): {error}"
            ) from None
        return history

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write ``to_dict()`` as JSON (to a temporary file renamed into place)."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=True)
        atomic_write(path, text.encode("utf-8"))

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> History:
        """Read a History written by ``save_json``."""
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Write a PNG of accuracy, each top-k, each user metric and the loss, train and
        validation, per epoch (atomically, as every file fastcnn writes).

        Needs matplotlib (``pip install fastcnn[plot]``); it is imported here, with the Agg
        backend, so that importing fastcnn never needs it.
        """
        figure = _make_figure(self)
        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, dpi=100, format="png")
        finally:
            import matplotlib.pyplot as plt

            plt.close(figure)
        atomic_write(path, buffer.getvalue())


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "History.plot needs matplotlib, which is not installed; install it with: "
            "pip install fastcnn[plot]"
        ) from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _make_figure(history):
    if not history.epochs:
        raise ValueError("History.plot: there is nothing to plot yet (no finished epoch)")
    plt = _pyplot()
    panels = [*history.metrics, "loss"]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for axis, name in zip(axes[0], panels, strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            points = [(r["epoch"], r[f"{split}_{name}"]) for r in history.epochs
                      if not math.isnan(r.get(f"{split}_{name}", math.nan))]  # fmt: skip
            if points:  # only the validated epochs (fit's eval_every), joined
                axis.plot(*zip(*points, strict=True), style, label=split, markersize=4)
        if name == "loss" and history.running:
            steps = [r["epoch"] - 1 + r["batch"] / r["batches"] for r in history.running]
            axis.plot(steps, [r["loss"] for r in history.running], alpha=0.35, label="running")
        axis.set_title(f"top-{metric_k(name)} accuracy" if is_topk(name) else name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure
