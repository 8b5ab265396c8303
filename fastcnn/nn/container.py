"""Sequential: modules applied one after another."""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._blas import single_threaded_blas
from fastcnn.nn import _fusion, _inference
from fastcnn.nn.module import Module

__all__ = ["Sequential"]


class Sequential(Module):
    """Apply modules in order; ``backward`` runs them in reverse.

    Parameters
    ----------
    *modules : Module
        Named ``"0"``, ``"1"``, ... Or a single ``OrderedDict`` of name -> module, whose
        names become the state-dict prefixes (``conv1.weight``).

    Examples
    --------
    >>> from fastcnn import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> len(model), type(model[-1]).__name__
    (3, 'Linear')
    """

    def __init__(self, *modules: Module | OrderedDict[str, Module]) -> None:
        super().__init__()
        items: Iterable[tuple[str, Any]]  # checked below
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = modules[0].items()
        else:
            items = ((str(i), module) for i, module in enumerate(modules))
        for name, module in items:
            self._check_module(module)
            self.add_module(name, module)

    @staticmethod
    def _check_module(module: object) -> None:
        if not isinstance(module, Module):
            raise TypeError(
                f"Sequential: {type(module).__name__} is not a Module subclass "
                "(wrap functions in a Module with forward and backward)"
            )

    # ------------------------------------------------------------------- container

    def __len__(self) -> int:
        return len(self._modules)

    # A Sequential's children are Modules (None only if a user unsets one, which forward
    # then refuses too): hence the casts.

    def __iter__(self) -> Iterator[Module]:
        return iter(cast("Iterable[Module]", self._modules.values()))

    @overload
    def __getitem__(self, index: slice) -> Sequential: ...
    @overload
    def __getitem__(self, index: int) -> Module: ...
    def __getitem__(self, index: int | slice) -> Module:
        items = cast("list[tuple[str, Module]]", list(self._modules.items()))
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(
                f"Sequential indices must be integers or slices, got {type(index).__name__} "
                "(use getattr(model, name) for a named child)"
            )
        if not -len(items) <= index < len(items):
            raise IndexError(f"index {index} is out of range for a Sequential of {len(items)}")
        return items[index][1]

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end (named by its position); return self."""
        self._check_module(module)
        self.add_module(str(len(self)), module)
        return self

    # ---------------------------------------------------------- forward / backward

    def forward(self, input: ArrayLike) -> Any:
        """Run the modules in order; each Conv2d -> ReLU -> MaxPool2d run as one fused
        kernel, with the same bits (see ``fastcnn.nn._fusion``). In eval mode, the lean
        inference pass: the layers compiled into networks run by one kernel call, each
        BatchNorm after a Conv2d or Linear folded into its weights, no layer's cache kept
        (see ``fastcnn.nn._inference``); ``backward`` then runs the layers again on the
        same input first."""
        if not self.training:
            x = np.asarray(input)
            out = self._cached("compiled", _inference.CompiledStack)(x)
            # kept as it is now for backward: the caller may reuse its array
            self._save_for_backward(replay=x.copy() if x is input else x)
            return out
        return self._forward_stages(input)

    def _forward_stages(self, input: Any) -> Any:
        """The modules' output, stage by stage (saved for backward)."""
        stages = self._cached("stages", _fusion.stages)
        # The kernels' BLAS held at one thread once for every layer, not per kernel call:
        # each hold and release sets OpenBLAS's thread count (measured 0.2 ms per LeNet-5
        # step, a twentieth of a batch-64 step). single_threaded_blas nests.
        with single_threaded_blas():
            for stage in stages:
                input = stage(input)
        self._save_for_backward(stages=stages)
        return input

    def _cached(self, name: str, build: Callable[[list[Module]], Any]) -> Any:
        """``build(modules)`` (the fused stages, the compiled stack), made again only
        when the modules change."""
        modules = cast("tuple[Module, ...]", tuple(self._modules.values()))
        cached = self.__dict__.get(f"_{name}_of")
        if cached is None or cached[0] != modules:
            cached = (modules, build(list(modules)))
            object.__setattr__(self, f"_{name}_of", cached)
        return cached[1]

    def backward(self, grad_output: ArrayLike, input_grad: bool = False) -> NDArray[Any] | None:
        """Backward through every module in reverse order.

        Every module but the first computes its input gradient (the next module back needs
        it); the first gets ``input_grad``. Its default, False, matches PyTorch, where a
        network's input does not require a gradient: ``model.backward(loss_fn.backward())``
        fills every ``p.grad``, skips the first layer's input gradient (for a convolution,
        about half its backward cost) and returns None.

        Parameters
        ----------
        grad_output : ndarray
            Gradient of the loss with respect to the output of the last ``forward``.
        input_grad : bool, default False
            True to also compute and return the gradient with respect to the input.
        """
        saved = self._saved()
        if "replay" in saved:  # an eval-mode forward, which kept no cache: run the layers
            self._forward_stages(saved["replay"])
            saved = self._saved()
        stages: list[_fusion.Stage] = saved["stages"]
        # the gradient of each stage's output, then of its input (Any: an empty Sequential
        # hands back grad_output as given)
        grad: Any = grad_output
        with single_threaded_blas():
            for position in range(len(stages) - 1, -1, -1):
                grad = stages[position].backward(
                    grad, input_grad=input_grad if position == 0 else True
                )
        if not stages:
            return grad if input_grad else None
        return grad
