"""Module: the base class of every layer, loss and model (``torch.nn.Module``'s shape).

There is no autograd: each module implements ``forward`` (caching what its gradient needs)
and an explicit ``backward(grad_output, input_grad=True)`` that adds its parameters'
gradients into ``Parameter.grad`` and returns the gradient with respect to its input.

A *forward pass* is one outermost module call (``model(x)``) with every call made inside
it. A module called several times in one pass (one ``self.relu`` for two activations, a
shared Conv2d) keeps one cache per call, on a stack; each ``backward`` uses up the latest,
so calling the backwards in the reverse order of the calls, as autograd does, gives every
use its own gradient (a parameter's is their sum). The next pass replaces the stack, so a
loop of forwards without backward keeps only one pass's caches.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastcnn._grad_mode import is_grad_enabled
from fastcnn._validation import float_dtype
from fastcnn.nn.parameter import Parameter

__all__ = ["Module"]

# the type of a method returning self: a subclass's own (Conv2d().train() is a Conv2d)
_M = TypeVar("_M", bound="Module")


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict`` returns, as in PyTorch."""

    __slots__ = ()

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


class _ForwardPasses(threading.local):
    """Per thread: the modules whose ``__call__`` is running (outermost first) and the number
    of the current forward pass, so two threads running models never share a pass."""

    def __init__(self) -> None:
        self.calls: list[Module] = []
        self.number = 0


_PASSES = _ForwardPasses()


class _CacheToken:
    """Made anew, in any thread, whenever a module's backward cache that was marked
    unavailable changes (to a cache or to another mark): code that marks modules, having
    kept the token it saw before, knows while the token is the same that its marks stand.
    An eval-mode Sequential marks its layers on every call; checking the token instead
    took 2 us off a LeNet-5 call at batch 1. A change from a cache (every training step)
    makes none. Assigning a module global is atomic, so no lock."""

    __slots__ = ()


cache_token = _CacheToken()


class _Caches:
    """What a module's forward calls of one pass saved, the latest last."""

    __slots__ = ("pass_number", "entries")

    def __init__(self, pass_number: int | None, entry: dict[str, Any]) -> None:
        self.pass_number = pass_number  # None: saved outside any module call
        self.entries = [entry]


def _to_numpy(value: Any) -> NDArray[Any]:
    """A state-dict value as an ndarray: torch tensors via ``.detach().cpu().numpy()``.

    Duck-typed so the library never imports torch.
    """
    if all(hasattr(value, method) for method in ("detach", "cpu", "numpy")):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"state_dict values must be numeric arrays, got dtype {array.dtype}")
    return array


def _quoted(keys: Iterable[str]) -> str:
    return ", ".join(f'"{key}"' for key in keys)


def _add_indent(text: str, spaces: int) -> str:
    """Indent every line but the first (PyTorch's ``_addindent``)."""
    first, *rest = text.split("\n")
    return "\n".join([first] + [" " * spaces + line for line in rest])


class Module:
    """Base class of all layers, losses and models.

    Assigning a ``Parameter`` or a ``Module`` to an attribute registers it, so
    ``parameters()``, ``state_dict()`` and ``train()``/``eval()`` find it; arrays that belong
    in the state dict but are not learnt (BatchNorm's running statistics) are registered with
    ``register_buffer``. Anything else assigned (cached inputs, say) is a plain attribute.

    Subclasses implement ``forward`` and ``backward``. ``forward`` keeps what the gradient
    needs with ``_save_for_backward``; ``backward(grad_output, input_grad=True)`` takes it
    back with ``_saved()`` (which uses it up: one backward per forward call, as PyTorch's
    graph), adds each parameter's gradient with ``Parameter.accumulate_grad`` (gradients add
    up over calls until ``zero_grad``, as in PyTorch) and returns the gradient with respect
    to the input, or None when ``input_grad`` is False (the first layer of a network needs
    none). A module used several times in one forward pass gets one backward per use, in
    reverse order (the module docstring says how). Call modules (``module(x)``), not
    ``module.forward(x)``: the call is what marks a forward pass.

    Attributes
    ----------
    training : bool
        True after ``train()`` (the default), False after ``eval()``; changes Dropout and
        BatchNorm.
    """

    # Set in __init__ with object.__setattr__ (declared here for mypy only: no class
    # attributes). A registry entry is None for an unset optional one (a missing bias).
    training: bool
    _parameters: OrderedDict[str, Parameter | None]
    _buffers: OrderedDict[str, NDArray[Any] | None]
    _non_persistent: set[str]
    _modules: OrderedDict[str, Module | None]
    _ctx: _Caches | _Unavailable | None

    def __init__(self) -> None:
        # object.__setattr__: our own __setattr__ needs these dicts to exist.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_ctx", None)

    # ------------------------------------------------------------------ registration

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() call: call "
                "super().__init__() first in your __init__"
            )
        if isinstance(value, Parameter):
            self._remove(name, self._buffers, self._modules)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._remove(name, self._parameters, self._buffers)
            self._modules[name] = value
        elif name in self._parameters or name in self._modules:
            self._clear_registered(name, value)
        elif name in self._buffers:
            self._buffers[name] = None if value is None else np.asarray(value)
        else:
            object.__setattr__(self, name, value)

    def _clear_registered(self, name: str, value: object) -> None:
        """A registered parameter or child can be replaced only by its own kind or None."""
        is_parameter = name in self._parameters
        if value is not None:
            kind, expected = (
                ("parameter", "fastcnn.nn.Parameter")
                if is_parameter
                else ("child module", "fastcnn.nn.Module")
            )
            raise TypeError(
                f"cannot assign {type(value).__name__} as {kind} {name!r} "
                f"({expected} or None expected)"
            )
        (self._parameters if is_parameter else self._modules)[name] = None

    def _remove(self, name: str, *registries: dict[str, Any]) -> None:
        """Forget ``name`` wherever else it was registered (PyTorch's rule on reassignment)."""
        for registry in registries:
            registry.pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: look in the registries.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def _check_new_name(self, name: object, kind: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a str, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f'{kind} name can\'t be empty or contain ".", got {name!r}')
        if name in self.__dict__:
            raise KeyError(f"attribute {name!r} already exists")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or None, for an optional one such as a missing bias)."""
        self._check_new_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign {type(param).__name__} as parameter {name!r} "
                "(fastcnn.nn.Parameter or None expected)"
            )
        self._parameters[name] = param

    def register_buffer(self, name: str, array: ArrayLike | None, persistent: bool = True) -> None:
        """Add a buffer: state that is saved in ``state_dict`` but not learnt.

        Parameters
        ----------
        name : str
        array : ndarray or None
            None (BatchNorm without running statistics) leaves it out of the state dict.
        persistent : bool
            False keeps it out of the state dict.
        """
        self._check_new_name(name, "buffer")
        self._buffers[name] = None if array is None else np.asarray(array)
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module, reachable as an attribute ``name``."""
        if not isinstance(module, Module) and module is not None:
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_new_name(name, "module")
        self._modules[name] = module

    register_module = add_module

    # --------------------------------------------------------------------- traversal

    def named_modules(
        self, prefix: str = "", memo: set[int] | None = None
    ) -> Iterator[tuple[str, Module]]:
        """Yield (name, module) for this module and every descendant, each once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator[Module]:
        """Yield this module and every descendant (depth first, registration order)."""
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Yield (name, module) for the direct children."""
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self) -> Iterator[Module]:
        """Yield the direct children."""
        for _, child in self.named_children():
            yield child

    def _named_members(
        self, registry: str, prefix: str, recurse: bool
    ) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, member in getattr(module, registry).items():
                if member is None or id(member) in seen:
                    continue
                seen.add(id(member))
                yield (f"{module_prefix}.{name}" if module_prefix else name), member

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Yield (dotted name, Parameter), each shared parameter once, in registration order."""
        yield from self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Yield every Parameter (what an optimizer needs), in registration order."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, NDArray[Any]]]:
        """Yield (dotted name, ndarray) for every buffer."""
        yield from self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[NDArray[Any]]:
        """Yield every buffer array."""
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def apply(self: _M, fn: Callable[[Module], object]) -> _M:
        """Call ``fn(module)`` on every descendant, then on this module; return self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --------------------------------------------------------------- modes and grads

    def train(self: _M, mode: bool = True) -> _M:
        """Set training mode on this module and all descendants; return self."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self: _M) -> _M:
        """Set evaluation mode (``train(False)``); return self."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (default, as PyTorch) or to zeros."""
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.fill(0)

    def requires_grad_(self: _M, requires_grad: bool = True) -> _M:
        """Set ``requires_grad`` on every parameter; return self.

        False freezes them: ``backward`` leaves their ``.grad`` untouched (it still returns
        the input gradient, so layers before them keep training).
        """
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

    def to(self: _M, dtype: DTypeLike) -> _M:
        """Cast parameters, their gradients and floating buffers to ``dtype``; return self.

        Parameter objects are kept (only their ``.data`` is replaced), so an optimizer
        built before the cast still holds them.
        """
        dtype = float_dtype(dtype, f"{type(self).__name__}.to")
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param.to(dtype)
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.dtype.kind == "f":
                    module._buffers[name] = buffer.astype(dtype)
        return self

    def double(self: _M) -> _M:
        """``to(np.float64)``: what ``fastcnn.gradcheck`` needs."""
        return self.to(np.float64)

    def float(self: _M) -> _M:
        """``to(np.float32)``."""
        return self.to(np.float32)

    # ------------------------------------------------------------------- state dict

    def state_dict(self, prefix: str = "") -> OrderedDict[str, NDArray[Any]]:
        """Parameters and persistent buffers by dotted name, in registration order.

        The values are the module's own arrays, not copies (PyTorch's tensors share storage
        the same way): ``{k: v.copy() for k, v in model.state_dict().items()}`` keeps a
        snapshot. Keys and layouts match PyTorch, so either side loads the other's.
        """
        state: OrderedDict[str, NDArray[Any]] = OrderedDict()
        for module_prefix, module in self.named_modules(prefix):
            dot = f"{module_prefix}." if module_prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    state[dot + name] = param.data
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent:
                    state[dot + name] = buffer
        return state

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> _IncompatibleKeys:
        """Copy values from ``state_dict`` into this module's arrays (cast to their dtype).

        Values may be NumPy arrays or torch tensors (converted with
        ``.detach().cpu().numpy()``). Nothing is copied unless every key can be: all
        problems are reported together in one ``RuntimeError`` with PyTorch's wording.

        Parameters
        ----------
        state_dict : mapping of str to array
        strict : bool
            If True (default), missing and unexpected keys are errors; shape mismatches
            always are.

        Returns
        -------
        namedtuple (missing_keys, unexpected_keys)
            Lists of keys, as PyTorch's ``_IncompatibleKeys``.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(
                f"Expected state_dict to be dict-like, got {type(state_dict).__name__}."
            )
        own = self.state_dict()
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        values: dict[str, NDArray[Any]] = {}
        errors: list[str] = []
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = _to_numpy(state_dict[key])
            if value.shape != target.shape:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {value.shape} from "
                    f"checkpoint, the shape in current model is {target.shape}."
                )
            values[key] = value
        if strict and unexpected:
            errors.insert(0, f"Unexpected key(s) in state_dict: {_quoted(unexpected)}. ")
        if strict and missing:
            errors.insert(0, f"Missing key(s) in state_dict: {_quoted(missing)}. ")
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(errors)
            )
        for key, value in values.items():
            own[key][...] = value
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ forward / backward

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Compute the output; subclasses override it."""
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function'
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Only bookkeeping here, as this runs for every module of every step: the outermost
        # call starts a new forward pass (see the module docstring).
        calls = _PASSES.calls
        if not calls:
            _PASSES.number += 1
        calls.append(self)
        try:
            return self.forward(*args, **kwargs)
        finally:
            calls.pop()

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray[Any] | None:
        """Add parameter gradients into ``.grad`` and return the input gradient.

        Parameters
        ----------
        grad_output : ndarray
            Gradient of the loss with respect to the output of the last ``forward``.
        input_grad : bool
            If False, the input gradient may be skipped (it is for every built-in layer)
            and None is returned.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement backward(grad_output, input_grad=True)"
        )

    def _save_for_backward(self, **values: Any) -> None:
        """Keep what ``backward`` needs from this ``forward``: on top of the caches of this
        pass's earlier calls, or replacing those of an earlier pass. Under
        ``fastcnn.no_grad`` nothing is kept: backward then says so."""
        global cache_token
        if not is_grad_enabled():
            self._backward_unavailable(_NO_GRAD)
            return
        passes = _PASSES
        pass_number = passes.number if passes.calls else None
        ctx = self._ctx
        if pass_number is not None and isinstance(ctx, _Caches) and ctx.pass_number == pass_number:
            ctx.entries.append(values)
        else:
            if isinstance(ctx, _Unavailable):
                cache_token = _CacheToken()
            object.__setattr__(self, "_ctx", _Caches(pass_number, values))

    def _backward_unavailable(self, reason: str) -> None:
        """Make ``backward`` raise, saying ``reason``, until the next ``forward`` (a layer
        whose last forward ran inside another's kernel: nn/_fusion.py, nn/_inference.py).
        Nothing to do when it already does, for the same reason (making a new mark each
        time took 9 us of a LeNet-5 call at batch 1)."""
        global cache_token
        ctx = self._ctx
        if isinstance(ctx, _Unavailable):
            if ctx.reason is reason:
                return
            cache_token = _CacheToken()
        object.__setattr__(self, "_ctx", _Unavailable(reason))

    def _saved(self) -> dict[str, Any]:
        """Use up what the latest unused ``forward`` call saved; a clear error if there is
        none (no forward yet, or each one's backward already ran)."""
        ctx = self._ctx
        name = type(self).__name__
        if ctx is None:
            raise RuntimeError(
                f"{name}.backward() was called before forward(): call the module on a batch "
                "first, then backward with the gradient of its output"
            )
        if isinstance(ctx, _Unavailable):
            raise RuntimeError(f"{name}.backward(): {ctx.reason}")
        if not ctx.entries:
            raise RuntimeError(
                f"{name}.backward() was called more times than forward(): each backward "
                "uses up what one forward call saved (as torch's 'Trying to backward through "
                "the graph a second time'); call the module's forward again before the "
                "next backward"
            )
        return ctx.entries.pop()

    def _called_inside_another_module(self) -> bool:
        """True while this module's forward runs inside another module's forward (its
        parent needs its input gradient), False for the outermost call."""
        calls = _PASSES.calls
        return len(calls) > 1 or (len(calls) == 1 and calls[0] is not self)

    # ------------------------------------------------------------------------- repr

    def extra_repr(self) -> str:
        """The module's settings for ``repr`` (one line, as PyTorch's layers give)."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [
            f"({name}): {_add_indent(repr(child), 2)}" for name, child in self._modules.items()
        ]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{type(self).__name__}({body})"


_NO_GRAD = (
    "the last forward ran under fastcnn.no_grad() (or inference_mode), which keeps no "
    "cache for backward: run the forward again outside it"
)


class _Unavailable:
    """A saved context that refuses backward, with the reason why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
