"""Containers: Sequential (modules applied one after another), ModuleList and ModuleDict
(modules held by position or by name, for a custom module's forward to call)."""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn._blas import single_threaded_blas
from fastcnn._grad_mode import is_grad_enabled
from fastcnn.nn import _fusion, _inference
from fastcnn.nn.module import Module

__all__ = ["ModuleDict", "ModuleList", "Residual", "Sequential"]


def _fused_values(stage: _fusion.Stage) -> Any:
    """What a fused stage's last call saved (None for a module: it keeps its own)."""
    return stage.saved if isinstance(stage, _fusion.FusedStage) else None


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
        _checked_module("Sequential", module)

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
        kernel, and each BatchNorm -> ReLU as the BatchNorm's kernels with the ReLU in
        them, with the same bits (see ``fastcnn.nn._fusion``). In eval mode, the lean
        inference pass: the layers compiled into networks run by one kernel call, each
        BatchNorm after a Conv2d or Linear folded into its weights, no layer's cache kept
        (see ``fastcnn.nn._inference``); ``backward`` then runs the layers again on the
        same input first."""
        if not self.training:
            x = np.asarray(input)
            out = self._cached("compiled", _inference.CompiledStack)(x)
            if is_grad_enabled():  # kept as it is now for backward: the caller may reuse it
                replay = x.copy() if x is input else x
                self._save_for_backward(replay=replay, nested=self._called_inside_another_module())
            else:
                self._save_for_backward()  # (no_grad: marks backward unavailable)
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
        self._save_for_backward(
            stages=stages,
            # a fused stage keeps only its last call's values: this call's are kept here,
            # so a Sequential used twice in one forward pass backs through both
            fused=[_fused_values(stage) for stage in stages],
            nested=self._called_inside_another_module(),
        )
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

    def backward(
        self, grad_output: ArrayLike, input_grad: bool | None = None
    ) -> NDArray[Any] | None:
        """Backward through every module in reverse order.

        Every module but the first computes its input gradient (the next module back needs
        it); the first gets ``input_grad``. At the top level its default is False, as in
        PyTorch, where a network's input does not require a gradient:
        ``model.backward(loss_fn.backward())`` fills every ``p.grad``, skips the first
        layer's input gradient (for a convolution, about half its backward cost) and returns
        None. A Sequential whose forward ran inside another module's forward defaults to
        True: its parent needs the gradient of its input.

        Parameters
        ----------
        grad_output : ndarray
            Gradient of the loss with respect to the output of the matching ``forward``.
        input_grad : bool, optional
            True to also compute and return the gradient with respect to the input; None
            (default): True if the forward was nested in another module's, else False.
        """
        saved = self._saved()
        if "replay" in saved:  # an eval-mode forward, which kept no cache: run the layers
            nested = saved["nested"]
            self._forward_stages(saved["replay"])
            saved = {**self._saved(), "nested": nested}
        stages: list[_fusion.Stage] = saved["stages"]
        if input_grad is None:
            input_grad = saved["nested"]
        for stage, fused in zip(stages, saved["fused"], strict=True):
            if isinstance(stage, _fusion.FusedStage):
                stage.saved = fused
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


def _checked_module(owner: str, module: object) -> Module:
    if not isinstance(module, Module):
        raise TypeError(
            f"{owner}: {type(module).__name__} is not a Module subclass (wrap functions in a "
            "Module with forward and backward)"
        )
    return module


class ModuleList(Module):
    """Modules held in a list, as ``torch.nn.ModuleList``: registered children named
    ``"0"``, ``"1"``, ... (state-dict keys ``layers.0.weight``), for a custom module's
    forward and backward to call. It has no forward of its own.

    Parameters
    ----------
    modules : iterable of Module, optional

    Examples
    --------
    >>> from fastcnn import nn
    >>> layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
    >>> layers.append(nn.ReLU())[-1]
    ReLU()
    >>> len(layers), len(layers[1:])
    (4, 3)
    """

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _items(self) -> list[Module]:
        return cast("list[Module]", list(self._modules.values()))

    def _renumber(self, modules: list[Module]) -> None:
        """Hold exactly ``modules``, named by position (after an insert or a delete)."""
        self._modules.clear()
        for i, module in enumerate(modules):
            self._modules[str(i)] = module

    def _position(self, index: object) -> int:
        """``index`` as a position in 0..len-1 (negative counts from the end)."""
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(
                f"ModuleList indices must be integers or slices, got {type(index).__name__}"
            )
        position, length = int(index), len(self)
        if not -length <= position < length:
            raise IndexError(f"index {position} is out of range for a ModuleList of {length}")
        return position % length

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._items())

    @overload
    def __getitem__(self, index: slice) -> ModuleList: ...
    @overload
    def __getitem__(self, index: int) -> Module: ...
    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):
            return ModuleList(self._items()[index])
        return self._items()[self._position(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        position = self._position(index)
        self._modules[str(position)] = _checked_module("ModuleList", module)

    def __delitem__(self, index: int | slice) -> None:
        items = self._items()
        if isinstance(index, slice):
            del items[index]
        else:
            del items[self._position(index)]
        self._renumber(items)

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def __add__(self, other: Iterable[Module]) -> ModuleList:
        return ModuleList(self._items()).extend(other)

    def append(self, module: Module) -> ModuleList:
        """Add ``module`` at the end; return self."""
        self._modules[str(len(self))] = _checked_module("ModuleList", module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Add each of ``modules`` at the end; return self."""
        if not isinstance(modules, Iterable):
            raise TypeError(
                "ModuleList.extend should be called with an iterable, but got "
                f"{type(modules).__name__}"
            )
        for module in list(modules):  # a list first: extending a list by itself ends
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert ``module`` before position ``index``, as ``list.insert``."""
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"ModuleList.insert: index must be an int, got {type(index).__name__}")
        items = self._items()
        items.insert(int(index), _checked_module("ModuleList", module))
        self._renumber(items)

    def pop(self, index: int = -1) -> Module:
        """Remove the module at ``index`` (the last by default) and return it."""
        module = self[index]
        del self[index]
        return module

    def __repr__(self) -> str:
        # torch's: runs of equal modules are shown once, "(0-2): 3 x Linear(...)"
        reprs = [repr(module) for module in self]
        if not reprs:
            return "ModuleList()"
        runs: list[list[Any]] = []  # [first, last, repr]
        for i, text in enumerate(reprs):
            if runs and runs[-1][2] == text:
                runs[-1][1] = i
            else:
                runs.append([i, i, text])
        lines = [
            f"({first}): {text}"
            if first == last
            else f"({first}-{last}): {last - first + 1} x {text}"
            for first, last, text in runs
        ]
        body = "\n".join("  " + line.replace("\n", "\n  ") for line in lines)
        return f"ModuleList(\n{body}\n)"


class ModuleDict(Module):
    """Modules held by name, in insertion order, as ``torch.nn.ModuleDict``: registered
    children (state-dict keys ``blocks.conv.weight``), for a custom module's forward and
    backward to call. It has no forward of its own.

    Parameters
    ----------
    modules : mapping or iterable of (str, Module) pairs, optional
    """

    def __init__(
        self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None
    ) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._modules))

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def __getitem__(self, key: str) -> Module:
        if key not in self._modules:
            raise KeyError(f"ModuleDict has no module {key!r}; its keys are {list(self._modules)}")
        return cast("Module", self._modules[key])

    def __setitem__(self, key: str, module: Module) -> None:
        _checked_module("ModuleDict", module)
        if isinstance(key, str) and hasattr(type(self), key):
            # as torch: a key must not hide a method (d.keys would stop being callable)
            raise KeyError(f"attribute {key!r} already exists (a ModuleDict method)")
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        self[key]  # noqa: B018  (raises the KeyError naming the keys)
        del self._modules[key]

    def clear(self) -> None:
        """Remove every module."""
        self._modules.clear()

    def pop(self, key: str) -> Module:
        """Remove the module named ``key`` and return it."""
        module = self[key]
        del self[key]
        return module

    def keys(self) -> list[str]:
        """The names, in insertion order."""
        return list(self._modules)

    def values(self) -> list[Module]:
        """The modules, in insertion order."""
        return cast("list[Module]", list(self._modules.values()))

    def items(self) -> list[tuple[str, Module]]:
        """(name, module) pairs, in insertion order."""
        return cast("list[tuple[str, Module]]", list(self._modules.items()))

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        """Add or replace modules from a mapping or an iterable of (name, module) pairs."""
        if isinstance(modules, (Mapping, ModuleDict)):
            for key, module in modules.items():
                self[key] = module
            return
        if not isinstance(modules, Iterable):
            raise TypeError(
                "ModuleDict.update should be called with an iterable of key/value pairs, "
                f"but got {type(modules).__name__}"
            )
        for i, pair in enumerate(modules):
            if not isinstance(pair, Iterable) or isinstance(pair, (str, Module)):
                raise TypeError(
                    f"ModuleDict update sequence element #{i} should be Iterable; is "
                    f"{type(pair).__name__}"
                )
            key_and_module: tuple[Any, ...] = tuple(pair)
            if len(key_and_module) != 2:
                raise ValueError(
                    f"ModuleDict update sequence element #{i} has length "
                    f"{len(key_and_module)}; 2 is required"
                )
            self[key_and_module[0]] = key_and_module[1]


class Residual(Module):
    """``body(x) + shortcut(x)``: a residual block's two paths and their sum, with the
    backward that routes the output gradient into both and adds their input gradients.

    Parameters
    ----------
    body : Module
        The main path (say ``Sequential(conv, bn, relu, conv, bn)``).
    shortcut : Module, optional
        The other path: None for the identity (the block's input is added as it is), or a
        projection where the shapes change (a strided 1x1 ``Conv2d`` and a ``BatchNorm2d``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastcnn import nn
    >>> block = nn.Sequential(
    ...     nn.Residual(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))), nn.ReLU()
    ... )
    >>> block(np.ones((2, 4), np.float32)).shape
    (2, 4)
    """

    def __init__(self, body: Module, shortcut: Module | None = None) -> None:
        super().__init__()
        self.body = _checked_module("Residual", body)
        self.shortcut = None if shortcut is None else _checked_module("Residual", shortcut)

    def forward(self, input: ArrayLike) -> Any:
        x = np.asarray(input)
        main = self.body(x)
        other = x if self.shortcut is None else self.shortcut(x)
        if np.shape(main) != np.shape(other):
            what = "the input" if self.shortcut is None else "the shortcut's output"
            raise ValueError(
                f"Residual: the body's output has shape {np.shape(main)} but {what} has "
                f"{np.shape(other)}: they must match to be added (give a shortcut that "
                "projects the input, e.g. a strided 1x1 Conv2d and a BatchNorm2d)"
            )
        return main + other

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray[Any] | None:
        """Both paths' parameter gradients; the sum of their input gradients (None if not
        ``input_grad``)."""
        # Any: arrays, or None from both when not input_grad
        grad_body: Any = self.body.backward(grad_output, input_grad=input_grad)
        grad_other: Any = np.asarray(grad_output)
        if self.shortcut is not None:
            grad_other = self.shortcut.backward(grad_output, input_grad=input_grad)
        if not input_grad:
            return None
        return grad_body + grad_other


class Concat(Module):
    """``torch.cat([branch(x) for branch in branches], dim)``: paths run side by side on
    one input, their outputs joined along ``dim`` (the channels by default), as in an
    Inception block or a DenseNet layer; the backward gives each path its slice of the
    output gradient and adds their input gradients.

    Parameters
    ----------
    *branches : Module
        The paths, at least one; their outputs may differ in size along ``dim`` only.
        Their state-dict keys are ``0.``, ``1.``, ... (as a Sequential's).
    dim : int
        The dimension the outputs are joined along; negative counts from the end.

    Examples
    --------
    >>> import numpy as np
    >>> from fastcnn import nn
    >>> block = nn.Concat(nn.Conv2d(3, 4, 1), nn.Conv2d(3, 2, 3, padding=1))
    >>> block(np.ones((2, 3, 8, 8), np.float32)).shape
    (2, 6, 8, 8)
    """

    def __init__(self, *branches: Module, dim: int = 1) -> None:
        super().__init__()
        if not branches:
            raise ValueError("Concat: give at least one branch, e.g. nn.Concat(conv_a, conv_b)")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"Concat: dim must be an int, got {type(dim).__name__}")
        for i, branch in enumerate(branches):
            self.add_module(str(i), _checked_module("Concat", branch))
        self.dim = int(dim)

    def forward(self, input: ArrayLike) -> Any:
        x = np.asarray(input)
        outputs = [np.asarray(branch(x)) for branch in self._branches()]
        dim = self._checked_dim(outputs)
        self._save_for_backward(sizes=[out.shape[dim] for out in outputs], dim=dim)
        return np.concatenate(outputs, axis=dim)

    def _branches(self) -> list[Module]:
        return cast("list[Module]", list(self._modules.values()))

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._branches())

    def __getitem__(self, index: int) -> Module:
        return self._branches()[index]

    def _checked_dim(self, outputs: list[NDArray[Any]]) -> int:
        """``dim`` as a non-negative axis of the outputs, after checking that they can be
        joined along it (clear errors rather than NumPy's)."""
        ndim = outputs[0].ndim
        if not -ndim <= self.dim < ndim:
            raise ValueError(
                f"Concat: dim={self.dim} is out of range for the branches' {ndim}-d outputs "
                f"(expected a dim in [{-ndim}, {ndim - 1}])"
            )
        dim = self.dim % ndim
        first = outputs[0].shape
        for i, out in enumerate(outputs[1:], start=1):
            if out.ndim != ndim or any(
                a != b
                for axis, (a, b) in enumerate(zip(first, out.shape, strict=True))
                if axis != dim
            ):
                raise ValueError(
                    f"Concat: branch {i}'s output has shape {out.shape} but branch 0's has "
                    f"{first}: they may differ along dim={self.dim} only"
                )
        return dim

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray[Any] | None:
        """Each branch's parameter gradients from its slice of ``grad_output``; the sum of
        their input gradients, in branch order (None if not ``input_grad``)."""
        saved = self._saved()
        grad = np.asarray(grad_output)
        bounds = np.cumsum(saved["sizes"])[:-1]
        if grad.ndim <= saved["dim"] or grad.shape[saved["dim"]] != sum(saved["sizes"]):
            raise ValueError(
                f"Concat.backward: grad_output has shape {grad.shape}, but the forward's "
                f"output had {sum(saved['sizes'])} along dim={self.dim}: pass the gradient "
                "of the last forward's output"
            )
        parts = np.split(grad, bounds, axis=saved["dim"])
        # The backwards in reverse order of the forwards, as autograd runs them (a module
        # shared between branches uses up its latest cache first).
        grads = [
            branch.backward(np.ascontiguousarray(part), input_grad=input_grad)
            for branch, part in reversed(list(zip(self._branches(), parts, strict=True)))
        ][::-1]
        if not input_grad:
            return None
        total = grads[0]
        for branch_grad in grads[1:]:
            total = total + branch_grad
        return total

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
