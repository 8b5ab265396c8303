"""Gradient mode: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, ``is_grad_enabled``
and ``inference_mode``, with PyTorch's names and meaning.

fastcnn has no autograd graph; what "no gradient" saves here is what layers keep for
their backward. Under ``no_grad`` a forward keeps no cache (its ``backward`` then says so),
an eval-mode ``Sequential`` keeps no copy of its input, and a training-mode ``Conv2d`` keeps
no im2col matrices: less memory, and for large batches less copying. The mode is per
thread, as PyTorch's is; ``fastcnn.train.evaluate`` and ``predict`` run under it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from fastcnn._validation import flag

__all__ = ["enable_grad", "inference_mode", "is_grad_enabled", "no_grad", "set_grad_enabled"]

_F = TypeVar("_F", bound=Callable[..., Any])


class _Mode(threading.local):
    enabled = True


_MODE = _Mode()


def is_grad_enabled() -> bool:
    """True unless inside ``no_grad`` (or ``set_grad_enabled(False)``) on this thread."""
    return _MODE.enabled


class _GradMode:
    """A gradient mode for the block (a context manager) or the decorated function; the
    previous mode comes back after it, even on an exception."""

    def __init__(self, mode: bool) -> None:
        self.mode = mode
        self._previous: list[bool] = []

    def __enter__(self) -> None:
        self._previous.append(_MODE.enabled)
        _MODE.enabled = self.mode

    def __exit__(self, *exc_info: object) -> None:
        _MODE.enabled = self._previous.pop()

    def __call__(self, function: _F) -> _F:
        mode = self.mode

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(mode):  # a block per call: the function may recurse
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class set_grad_enabled(_GradMode):
    """Gradients on or off (``mode``), as ``torch.set_grad_enabled``: at once when called
    (``fastcnn.set_grad_enabled(False)``), and back to the previous mode at the end of a
    ``with`` block or decorated call."""

    def __init__(self, mode: bool) -> None:
        super().__init__(flag(mode, "mode", "set_grad_enabled"))
        self._before = _MODE.enabled
        _MODE.enabled = self.mode

    def __enter__(self) -> None:
        self._previous.append(self._before)


class no_grad(_GradMode):
    """No forward inside keeps what a backward needs: ``with fastcnn.no_grad(): ...`` or
    ``@fastcnn.no_grad()``, as ``torch.no_grad``."""

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(_GradMode):
    """Forwards keep their caches again inside a ``no_grad`` block, as ``torch.enable_grad``."""

    def __init__(self) -> None:
        super().__init__(True)


class inference_mode(_GradMode):
    """``no_grad`` under torch's other name (``inference_mode(False)``: gradients on)."""

    def __init__(self, mode: bool = True) -> None:
        super().__init__(not flag(mode, "mode", "inference_mode"))
