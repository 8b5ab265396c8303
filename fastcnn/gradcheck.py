"""Finite-difference check of explicit backward passes (``torch.autograd.gradcheck``'s role).

For a random output gradient ``g`` (seeded), the analytical gradient of the scalar
``L(x) = sum(g * f(x))`` from the backward pass is compared, element by element, with the
central difference ``(L(x + eps) - L(x - eps)) / (2 eps)``. An element passes when
``|analytical - numerical| <= atol + rtol * |numerical|`` (PyTorch's test and defaults).
Everything checked must be float64: float32 rounding swamps a 1e-6 step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._threads import threads

if TYPE_CHECKING:
    from fastcnn.nn.module import Module

# (what is checked, the array perturbed, the backward pass's gradient of it)
_Check = tuple[str, NDArray[Any], Any]
# a forward pass as gradcheck accepts it: a Module, or a function with its backward
_Checked = Union["Module", Callable[..., Any]]

__all__ = ["GradcheckError", "gradcheck"]


class GradcheckError(RuntimeError):
    """A backward pass disagrees with finite differences (the message says where and by
    how much)."""


def gradcheck(
    func_or_module: _Checked,
    inputs: ArrayLike | Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    *,
    backward: Callable[..., Any] | None = None,
    raise_exception: bool = True,
    seed: int = 0,
    n_threads: int | None = 1,
) -> bool:
    """Check a Module's or a function's backward pass against finite differences.

    Parameters
    ----------
    func_or_module : fastcnn.nn.Module or callable
        A Module: ``module(*inputs)`` is the forward pass and
        ``module.backward(g, input_grad=True)`` must return the gradient with respect to
        ``inputs[0]`` and add every parameter's into ``param.grad``; the gradients of
        ``inputs[0]`` and of every parameter are checked (other inputs, such as a loss's
        target, are passed through unchecked). The module must be deterministic (put
        Dropout in eval mode). Its ``.grad`` values and buffers (BatchNorm's running
        statistics) are restored afterwards.
        A callable: ``func(*inputs)`` is the forward pass and needs ``backward``.
        Either way the forward pass returns one array or one float (a loss).
    inputs : ndarray or tuple
        One array, or a tuple of the positional arguments: float64 arrays (checked) and
        anything else (passed through).
    eps, atol, rtol : float
        Step and tolerances, PyTorch's defaults.
    backward : callable, optional
        For a function only: ``backward(g, *inputs)`` returns one gradient per input (None
        for an input with no gradient), e.g. ``lambda g, x, w: conv2d_backward(g, x, w)[:2]``.
    raise_exception : bool, default True
        Raise ``GradcheckError`` on failure; if False, return False instead.
    seed : int
        Seed of the random output gradient.
    n_threads : int or None, default 1
        Kernel threads during the check (None: the current setting). The check makes two
        forward passes per element on small arrays, where one thread is fastest, and the
        kernels give the same bits for any thread count.

    Returns
    -------
    bool
        True if every gradient matches (False on failure with ``raise_exception=False``).

    Raises
    ------
    GradcheckError
        Naming the failing gradient, its worst element's index, both values and how many
        elements fail.
    TypeError
        If a checked array or a parameter is not float64, or ``backward`` is missing (for a
        function) or given (for a Module).
    """
    arguments = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    target: _Target
    if _is_module(func_or_module):
        if backward is not None:
            raise TypeError("gradcheck: backward= is for functions; a Module has its own")
        target = _ModuleTarget(func_or_module, arguments)
    else:
        if not callable(func_or_module) or backward is None:
            raise TypeError(
                "gradcheck: pass a fastcnn.nn.Module, or a function with backward=callable"
            )
        target = _FunctionTarget(func_or_module, backward, arguments)
    thread_setting: contextlib.AbstractContextManager[object] = (
        contextlib.nullcontext() if n_threads is None else threads(n_threads)
    )
    try:
        with thread_setting:
            failure = _first_failure(target, eps, atol, rtol, np.random.default_rng(seed))
    finally:
        target.restore()
    if failure is not None and raise_exception:
        raise GradcheckError(failure)
    return failure is None


def _is_module(obj: object) -> TypeGuard[Module]:
    from fastcnn.nn.module import Module  # here: fastcnn.nn imports nothing from this file

    return isinstance(obj, Module)


def _require_float64(array: NDArray[Any], name: str) -> None:
    if array.dtype != np.float64:
        raise TypeError(
            f"gradcheck: {name} is {array.dtype}; finite differences need float64 (call "
            "module.double() and pass x.astype(np.float64))"
        )


class _Target(Protocol):
    """What is checked: a forward pass and the backward pass's gradients."""

    def forward(self) -> Any: ...
    def analytical(self, grad_output: NDArray[np.float64]) -> list[_Check]: ...
    def restore(self) -> None: ...


def _first_failure(
    target: _Target, eps: float, atol: float, rtol: float, rng: np.random.Generator
) -> str | None:
    """The failure message of the first gradient that does not match, or None."""
    output = target.forward()
    grad_output = rng.standard_normal(np.shape(output))
    for name, array, analytical in target.analytical(grad_output):
        if analytical is None or np.shape(analytical) != array.shape:
            shape = None if analytical is None else np.shape(analytical)
            return (
                f"the backward pass returned {shape} as the gradient of {name}, expected "
                f"an array of shape {array.shape}"
            )
        numerical = _numerical_gradient(target, grad_output, array, eps)
        failure = _compare(name, np.asarray(analytical, dtype=np.float64), numerical, atol, rtol)
        if failure is not None:
            return failure
    return None


def _numerical_gradient(
    target: _Target, grad_output: NDArray[np.float64], array: NDArray[Any], eps: float
) -> NDArray[np.float64]:
    """Central differences of sum(grad_output * f) with respect to each element of ``array``
    (perturbed in place and restored)."""
    numerical = np.empty(array.shape)
    for i in range(array.size):
        original = array.flat[i]
        array.flat[i] = original + eps
        plus = np.sum(grad_output * target.forward())
        array.flat[i] = original - eps
        minus = np.sum(grad_output * target.forward())
        array.flat[i] = original
        numerical.flat[i] = (plus - minus) / (2 * eps)
    return numerical


def _compare(
    name: str,
    analytical: NDArray[np.float64],
    numerical: NDArray[np.float64],
    atol: float,
    rtol: float,
) -> str | None:
    excess = np.abs(analytical - numerical) - (atol + rtol * np.abs(numerical))
    excess[~np.isfinite(excess)] = np.inf  # a NaN gradient fails too
    failing = excess > 0
    if not failing.any():
        return None
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    a, n = float(analytical[worst]), float(numerical[worst])
    return (
        f"Gradient mismatch for {name} at index {tuple(int(i) for i in worst)}: analytical "
        f"{a!r}, numerical {n!r} (|difference| {abs(a - n):.3g} > atol + rtol * |numerical| = "
        f"{atol + rtol * abs(n):.3g}); {int(failing.sum())} of {failing.size} elements fail"
    )


class _ModuleTarget:
    """A Module: inputs[0] and every parameter with requires_grad are checked."""

    def __init__(self, module: Module, inputs: tuple[Any, ...]) -> None:
        self.module = module
        first = np.array(inputs[0], copy=True)
        _require_float64(first, "the input (inputs[0])")
        self.inputs = (first, *inputs[1:])
        self.params = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        for name, param in self.params:
            _require_float64(param.data, f"parameter {name!r}")
        self._grads = [param.grad for _, param in self.params]
        self._buffers = [(buffer, buffer.copy()) for buffer in module.buffers()]

    def forward(self) -> Any:
        return self.module(*self.inputs)

    def analytical(self, grad_output: NDArray[np.float64]) -> list[_Check]:
        for _, param in self.params:
            param.grad = None
        self.forward()
        name = type(self.module).__name__
        grad_input = self.module.backward(grad_output, input_grad=True)
        if grad_input is not None:
            grad_input = np.array(grad_input, copy=True)  # later forwards may reuse buffers
        checks: list[_Check] = [(f"the input of {name}", self.inputs[0], grad_input)]
        for param_name, param in self.params:
            grad = np.zeros_like(param.data) if param.grad is None else param.grad.copy()
            checks.append((f"parameter {param_name!r} of {name}", param.data, grad))
        return checks

    def restore(self) -> None:
        for (_, param), grad in zip(self.params, self._grads, strict=True):
            param.grad = grad
        for buffer, saved in self._buffers:
            buffer[...] = saved


class _FunctionTarget:
    """A function and its backward: every float64 input with a gradient is checked."""

    def __init__(
        self, func: Callable[..., Any], backward: Callable[..., Any], inputs: tuple[Any, ...]
    ) -> None:
        self.func, self.backward = func, backward
        self.inputs = tuple(
            np.array(x, copy=True) if isinstance(x, np.ndarray) else x for x in inputs
        )

    def forward(self) -> Any:
        return self.func(*self.inputs)

    def analytical(self, grad_output: NDArray[np.float64]) -> list[_Check]:
        grads = self.backward(grad_output, *self.inputs)
        grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        if len(grads) != len(self.inputs):
            raise TypeError(
                f"gradcheck: backward returned {len(grads)} gradients for {len(self.inputs)} "
                "inputs (use None for an input without one)"
            )
        checks: list[_Check] = []
        for i, (x, grad) in enumerate(zip(self.inputs, grads, strict=True)):
            if grad is not None:
                _require_float64(np.asarray(x), f"input {i}")
                checks.append((f"input {i}", x, grad))
        return checks

    def restore(self) -> None:
        pass
