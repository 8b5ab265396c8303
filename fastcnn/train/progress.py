"""Progress reports of ``fit``: a tqdm bar, a plain-text fallback, or nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from fastcnn.train.metrics import is_topk

__all__ = ["make_progress"]


def _format_stats(stats, metrics):
    """``loss 0.1234 acc 97.12% top5 99.90% f1 0.9712`` from a dict of running values
    (the top-k accuracies in percent, a user metric as it is)."""
    parts = [f"loss {stats['loss']:.4f}"]
    for name in metrics:
        if is_topk(name):
            label = "acc" if name == "accuracy" else name
            parts.append(f"{label} {100 * stats[name]:.2f}%")
        else:
            parts.append(f"{name} {stats[name]:.4f}")
    return " ".join(parts)


def format_epoch_summary(record: dict[str, Any], metrics: Sequence[str], epochs: int) -> str:
    """The one line printed at the end of an epoch."""
    line = f"epoch {record['epoch']}/{epochs}: train " + _format_stats(
        {k[len("train_") :]: v for k, v in record.items() if k.startswith("train_")}, metrics
    )
    if "val_loss" in record:
        val = {k[len("val_") :]: v for k, v in record.items() if k.startswith("val_")}
        line += " | val " + _format_stats(val, metrics)
    return line + f" | {record['seconds']:.1f} s"


class _Silent:
    """progress=False: report nothing."""

    def start_epoch(self, epoch, epochs, batches):
        pass

    def update(self, batch, stats, images_per_second, log):
        pass

    def end_epoch(self, line):
        pass

    def abort(self):
        """Training stopped with an exception: tidy up (close the bar)."""


class _Text(_Silent):
    """A line every ``log_every`` batches and one per epoch, on stdout."""

    def __init__(self, metrics, stream=None):
        self.metrics = metrics
        self.stream = stream if stream is not None else sys.stdout

    def start_epoch(self, epoch, epochs, batches):
        self.prefix = f"epoch {epoch}/{epochs}"
        self.batches = batches

    def update(self, batch, stats, images_per_second, log):
        if log:
            text = _format_stats(stats, self.metrics)
            print(
                f"{self.prefix} batch {batch}/{self.batches} {text} {images_per_second:.0f} img/s",
                file=self.stream,
                flush=True,
            )

    def end_epoch(self, line):
        print(line, file=self.stream, flush=True)


class _Bar(_Silent):
    """A tqdm bar per epoch with the running loss, accuracy and images/s."""

    def __init__(self, tqdm, metrics):
        self.tqdm = tqdm
        self.metrics = metrics
        self.bar = None
        self.last_postfix = 0.0

    def start_epoch(self, epoch, epochs, batches):
        self.bar = self.tqdm(
            total=batches,
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
        )

    def update(self, batch, stats, images_per_second, log):
        self.bar.update(1)
        now = time.perf_counter()
        if log or now - self.last_postfix > 0.5:  # formatting every batch would cost time
            self.last_postfix = now
            postfix = _format_stats(stats, self.metrics) + f" {images_per_second:.0f} img/s"
            self.bar.set_postfix_str(postfix, refresh=False)

    def end_epoch(self, line):
        self.bar.close()
        self.tqdm.write(line)

    def abort(self):
        if self.bar is not None:
            self.bar.close()


def make_progress(progress: bool | str | None, metrics: Sequence[str]) -> _Silent:
    """The reporter for ``fit(progress=...)``: True (tqdm if installed, else text), "tqdm",
    "text" or False."""
    if progress is False or progress is None:
        return _Silent()
    if progress == "text":
        return _Text(metrics)
    if progress not in (True, "tqdm"):
        raise ValueError(f"progress must be True, False, 'tqdm' or 'text', got {progress!r}")
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress == "tqdm":
            raise ImportError(
                "progress='tqdm' needs tqdm, which is not installed; install it with: "
                "pip install fastcnn[progress]"
            ) from None
        return _Text(metrics)
    return _Bar(tqdm, metrics)
