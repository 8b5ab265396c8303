"""The lean eval-mode path of ``Sequential``: its layers compiled into networks that one
kernel call runs (csrc/_network.pyx).

Why: at batch 1 a LeNet-5 forward pass spent most of its time in Python, once per layer
(checks, plans, allocations, a kernel call parsing a dozen buffers). In eval mode none of
that changes from call to call, and no layer needs what it would cache for backward. So
``CompiledStack`` splits the Sequential's modules into runs of the layers the kernel has
steps for and the modules it runs as they are (the ``OTHER`` kind); a run is compiled,
for each input shape, into ``Network`` steps:

- Conv2d [-> BatchNorm2d, folded into its weights] [-> ReLU] [-> MaxPool2d];
- Linear [-> BatchNorm1d, folded] [-> ReLU];
- Flatten, Dropout and Identity cost nothing (the batch is contiguous; eval's Dropout is
  the identity).

A layer of a run that fits no step (a ReLU after a pool, say) runs as itself between two
networks. Results are the layers' bits, for any thread count (csrc/_network.pyx), except
where a BatchNorm is folded: that rounds differently, within float32 tolerance of the
layers (folding is what onnxruntime and oneDNN do in inference).

Every call checks that the plan is current:
- the modules and their training flags: a run with a module in training mode runs its
  layers one by one (the Sequential's own mode picks this path at all);
- every array a network reads: the same array objects (``param.data = ...`` or a state
  dict load that replaces them builds the network again), and, for what a network
  derived from them (folded or packed weights), the same bits (compared in C: writes
  through ``param.data[...]`` or an optimizer's in-place step are seen too).
A layer's hyperparameters (a Conv2d's stride, say) are read when a network is built.

The first call with a new input shape runs the run's layers on its first image, which
validates the input and every shape with the layers' own messages, then builds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn import _conv_plan, _isa, _network, _ops
from fastcnn._blas import single_threaded_blas
from fastcnn._threads import get_num_threads
from fastcnn.nn import module as _module
from fastcnn.nn.activation import ReLU
from fastcnn.nn.batchnorm import BatchNorm1d, BatchNorm2d
from fastcnn.nn.conv import Conv2d
from fastcnn.nn.dropout import Dropout, Dropout2d
from fastcnn.nn.flatten import Flatten
from fastcnn.nn.linear import Identity, Linear
from fastcnn.nn.module import Module
from fastcnn.nn.pooling import MaxPool2d

# Exact types only: a subclass may override forward.
COMPILED_TYPES = (Conv2d, BatchNorm2d, BatchNorm1d, ReLU, MaxPool2d, Linear, Flatten)
NO_OP_TYPES = (Dropout, Dropout2d, Identity)  # the identity in eval mode

_COMPILED_FORWARD = (
    "the last forward ran in eval mode inside a Sequential, whose compiled inference "
    "pass keeps no layer's cache: call that Sequential's backward (it runs the layers "
    "again on the same input), or call this layer on its own"
)
_MAX_SHAPES = 64  # input shapes a run keeps networks for; past this it starts again
_MAX_BATCH_SIZES = 8  # batch sizes a network keeps buffers for


def _compiled_type(module: Module) -> bool:
    return type(module) in COMPILED_TYPES or type(module) in NO_OP_TYPES


class CompiledStack:
    """A Sequential's modules for eval mode: runs compiled per input shape, other
    modules called as they are. ``CompiledStack(modules)(x)`` is the modules' output."""

    def __init__(self, modules: Sequence[Module]) -> None:
        self.parts: list[Callable[[Any], Any]] = []
        run: list[Module] = []
        for module in modules:
            if _compiled_type(module):
                run.append(module)
                continue
            if run:
                self.parts.append(_Run(run))
                run = []
            self.parts.append(module)
        if run:
            self.parts.append(_Run(run))

    def __call__(self, input: ArrayLike) -> Any:
        with single_threaded_blas():
            for part in self.parts:
                input = part(input)
        return input


class _Run:
    """Consecutive modules of the compiled types, compiled once per input shape (see the
    module docstring)."""

    def __init__(self, modules: Sequence[Module]) -> None:
        self.modules = tuple(modules)
        # (per-image shape, dtype, ISA copy, its method limits) -> the parts for it
        self._plans: dict[tuple, list[Callable[[Any], Any]]] = {}
        self._marked_at: object = None  # module.cache_token when the modules were marked

    def __call__(self, input: ArrayLike) -> Any:
        x = np.asarray(input)
        if x.ndim == 0 or x.shape[0] == 0 or _network.any_training(self.modules):
            return self._layer_by_layer(x)
        isa = _isa.active()
        key = (x.shape[1:], x.dtype, isa, _conv_plan.METHOD_LIMITS[isa])
        parts = self._plans.get(key)
        if parts is None or not all(p.current() for p in parts if isinstance(p, _Compiled)):
            parts = self._build(x, key)
        for part in parts:
            x = part(x)
        self._mark_modules()
        return x

    def _mark_modules(self) -> None:
        """Make the modules' backward say that this pass kept no cache, unless they still
        say so: no mark changed since they were marked (``module.cache_token``)."""
        token = _module.cache_token
        if token is not self._marked_at:
            for module in self.modules:
                module._backward_unavailable(_COMPILED_FORWARD)
            self._marked_at = token  # the token from before: any change meanwhile shows

    def _layer_by_layer(self, x: Any) -> Any:
        for module in self.modules:
            x = module(x)
        return x

    def _shapes(self, x: NDArray[Any]) -> list[tuple[int, ...]]:
        """The per-image shapes of x and of each module's output, the layers run on x."""
        shapes = [x.shape[1:]]
        for module in self.modules:
            x = module(x)
            shapes.append(x.shape[1:])
        return shapes

    def _build(self, x: NDArray[Any], key: tuple) -> list[Callable[[Any], Any]]:
        """The parts for inputs like x, after running the layers on its first image
        (which raises their errors for a bad input or shape)."""
        try:
            shapes = self._shapes(x[:1])
        except Exception:
            self._shapes(x)  # the same error, naming the caller's shape
            raise
        parts = _compile(self.modules, shapes, x.dtype)
        if len(self._plans) >= _MAX_SHAPES:
            self._plans.clear()
        self._plans[key] = parts
        return parts


def _compile(
    modules: Sequence[Module], shapes: Sequence[tuple[int, ...]], dtype: np.dtype
) -> list[Callable[[Any], Any]]:
    """modules (whose per-image input shapes are shapes[i], output shapes[-1]) as
    ``_Compiled`` networks and the modules that fit no step, in order."""
    parts: list[Callable[[Any], Any]] = []
    steps: list[_StepSpec] = []
    in_shape = shapes[0]
    i = 0
    while i < len(modules):
        step = _conv_step(modules, i, shapes, dtype) or _linear_step(modules, i, shapes)
        if step is not None:
            steps.append(step)
            i += len(step.modules)
        elif _keeps_batch(modules[i], shapes[i]):
            i += 1  # a reshape of the contiguous batch, or nothing
        else:
            if steps:
                parts.append(_Compiled(steps, in_shape, shapes[i], dtype))
                steps = []
            parts.append(_OnItsOwn(modules[i], shapes[i]))
            i += 1
            in_shape = shapes[i]
    if steps:
        parts.append(_Compiled(steps, in_shape, shapes[-1], dtype))
    else:
        last = parts[-1] if parts else None
        if not (isinstance(last, _OnItsOwn) and last.module is modules[-1]):
            parts.append(_Reshape(shapes[-1]))  # the reshapes after the last part
    return parts


def _keeps_batch(module: Any, in_shape: tuple[int, ...]) -> bool:
    """True for a no-op, or a Flatten of the per-image dimensions only."""
    if type(module) in NO_OP_TYPES:
        return True
    if type(module) is not Flatten:
        return False
    start = module.start_dim
    return (start if start >= 0 else start + len(in_shape) + 1) >= 1


class _StepSpec:
    """One step of a Network: its dict for csrc/_network.pyx, the modules it covers,
    the scratch it needs per thread, and the arrays it reads (``_Source``)."""

    def __init__(
        self,
        spec: dict[str, Any],
        modules: Sequence[Module],
        sources: list[_Source],
        workspace: int = 0,
        indices: int = 0,
    ) -> None:
        self.spec, self.modules, self.sources = spec, tuple(modules), sources
        self.workspace, self.indices = workspace, indices


class _Source:
    """An array a network reads: a layer's parameter or buffer ``name`` as it is now;
    ``derived``: the network reads values made from it (its bits are then compared on
    each call). Read from the layer's tables of parameters and buffers: going through
    ``getattr`` (Module.__getattr__) took a LeNet-5 call 13 us for ten arrays."""

    def __init__(self, module: Module, name: str, derived: bool) -> None:
        self.parameter = name in module._parameters
        self.table = module._parameters if self.parameter else module._buffers
        self.name, self.derived = name, derived
        self.array = self.now()

    def now(self) -> Any:
        value = self.table.get(self.name)
        return value.data if self.parameter and value is not None else value


def _sources(module: Module, names: Sequence[str], derived: bool) -> list[_Source]:
    return [_Source(module, name, derived) for name in names if getattr(module, name) is not None]


def _next(modules: Sequence[Module], i: int, kind: type) -> bool:
    return i < len(modules) and type(modules[i]) is kind


def _foldable(bn: Any, channels: int) -> bool:
    """A BatchNorm that uses its running statistics in eval mode, of these channels."""
    return bool(bn.track_running_stats) and bn.num_features == channels


def _conv_step(
    modules: Sequence[Module], i: int, shapes: Sequence[tuple[int, ...]], dtype: np.dtype
) -> _StepSpec | None:
    """Conv2d [BatchNorm2d] [ReLU] [MaxPool2d] from modules[i], or None."""
    conv: Any = modules[i]
    if type(conv) is not Conv2d or conv.groups != 1 or conv.dilation != (1, 1):
        return None
    covered: list[Module] = [conv]
    k = conv.out_channels
    bn = None
    if _next(modules, i + 1, BatchNorm2d) and _foldable(modules[i + 1], k):
        bn = modules[i + 1]
        covered.append(bn)
    relu = _next(modules, i + len(covered), ReLU)
    if relu:
        covered.append(modules[i + len(covered)])
    pool: Any = modules[i + len(covered)] if _next(modules, i + len(covered), MaxPool2d) else None
    if pool is not None:
        covered.append(pool)
    in_chw = shapes[i]
    plan = _conv_plan.plan_for(
        "Conv2d", (1, *in_chw), conv.weight.shape, dtype, conv.stride, conv.padding
    )
    weight, bias = _folded(conv, bn)
    packed = _conv_plan.PackedWeights(plan, weight).forward()
    out_shape = shapes[i + len(covered)]
    spec = {
        "kind": _network.STEP_CODES["conv"],
        "g": plan.fused_geometry if pool is not None else plan.geometry,
        "pool": _pool_window(pool, plan),
        "pooled": pool is not None,
        "relu": relu,
        "POH": out_shape[1] if pool is not None else 0,
        "POW": out_shape[2] if pool is not None else 0,
        "in_size": math.prod(in_chw),
        "out_size": math.prod(out_shape),
        "chunk": 0,
        "weight": weight,
        "packed": packed,
        "bias": bias,
    }
    derived = bn is not None or packed is not None
    sources = _layer_sources(conv, bn, derived)
    workspace = plan.forward_scratch + (plan.conv_output if pool is not None else 0)
    indices = math.prod(out_shape) if pool is not None else 0
    return _StepSpec(spec, covered, sources, workspace, indices)


def _pool_window(pool: Any, plan: _conv_plan.ConvPlan) -> dict[str, int]:
    if pool is None:
        return dict.fromkeys(("KH", "KW", "TH", "TW", "UH", "UW"), 0)
    kernel, stride, padding = pool.kernel_size, pool.stride, pool.padding
    return _conv_plan.pool_plan(kernel, stride, padding, plan.out_hw).window


def _linear_step(
    modules: Sequence[Module], i: int, shapes: Sequence[tuple[int, ...]]
) -> _StepSpec | None:
    """Linear [BatchNorm1d] [ReLU] from modules[i] on (N, features) input, or None."""
    linear: Any = modules[i]
    if type(linear) is not Linear or len(shapes[i]) != 1:
        return None
    covered: list[Module] = [linear]
    bn = None
    if _next(modules, i + 1, BatchNorm1d) and _foldable(modules[i + 1], linear.out_features):
        bn = modules[i + 1]
        covered.append(bn)
    relu = _next(modules, i + len(covered), ReLU)
    if relu:
        covered.append(modules[i + len(covered)])
    weight, bias = _folded(linear, bn)
    spec = {
        "kind": _network.STEP_CODES["linear"],
        "pooled": False,
        "relu": relu,
        "POH": 0,
        "POW": 0,
        "in_size": linear.in_features,
        "out_size": linear.out_features,
        "chunk": _ops.LINEAR_CHUNK,
        "weight": weight,
        "packed": None,
        "bias": bias,
    }
    return _StepSpec(spec, covered, _layer_sources(linear, bn, derived=bn is not None))


def _layer_sources(layer: Module, bn: Module | None, derived: bool) -> list[_Source]:
    """The arrays a step of ``layer`` (and a folded ``bn``) reads."""
    sources = _sources(layer, ("weight", "bias"), derived)
    if bn is not None:
        sources += _sources(bn, ("weight", "bias", "running_mean", "running_var"), True)
    return sources


def _folded(layer: Any, bn: Any | None) -> tuple[NDArray[Any], NDArray[Any] | None]:
    """(weight, bias) of ``layer`` with the eval-mode ``bn`` after it folded in (in
    float64, then rounded once): bn(layer(x)) = layer'(x). Without bn, the layer's own
    arrays."""
    weight = layer.weight.data
    bias = None if layer.bias is None else layer.bias.data
    if bn is None:
        return weight, bias
    dtype = weight.dtype
    scale = 1 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    shift = -bn.running_mean.astype(np.float64) * scale
    if bn.weight is not None:
        scale, shift = scale * bn.weight.data, shift * bn.weight.data + bn.bias.data
    folded_bias = shift if bias is None else bias * scale + shift
    folded_weight = weight * scale.reshape(-1, *(1,) * (weight.ndim - 1))  # per output
    return folded_weight.astype(dtype), folded_bias.astype(dtype)


class _Reshape:
    """Flatten/Dropout/Identity after the last network or module: the batch in the
    output's shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __call__(self, x: NDArray[Any]) -> NDArray[Any]:
        return x.reshape(x.shape[0], *self.shape)


class _OnItsOwn:
    """A module of a run that fits no step, called on its input in the shape it takes
    (a Flatten before it is only a shape)."""

    def __init__(self, module: Module, in_shape: tuple[int, ...]) -> None:
        self.module, self.in_shape = module, in_shape

    def __call__(self, x: NDArray[Any]) -> Any:
        return self.module(x.reshape(x.shape[0], *self.in_shape))


# a call's activations (2, N * largest), workspace and pooled argmax (a row per thread)
_Buffers = tuple[NDArray[Any], NDArray[Any], NDArray[Any]]


class _Compiled:
    """Steps compiled into one ``_network.Network`` for one per-image input shape, with
    buffers per batch size and thread count."""

    def __init__(
        self,
        steps: Sequence[_StepSpec],
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        dtype: np.dtype,
    ) -> None:
        self.in_shape, self.out_shape, self.dtype = in_shape, out_shape, dtype
        self.sources = [source for step in steps for source in step.sources]
        # the bits of the derived sources as they were when compiled, compared in C
        kept = [(s.array, s.array.copy()) for s in self.sources if s.derived]
        found = [(s.table, s.name, s.parameter, s.array) for s in self.sources]
        self.network = _network.Network([step.spec for step in steps], kept, found)
        self.n_steps = len(steps)
        self.largest_output = max([step.spec["out_size"] for step in steps[:-1]], default=1)
        self.workspace_row = max(max(step.workspace for step in steps), 1)
        self.indices_row = max(max(step.indices for step in steps), 1)
        # (batch size, threads) -> spare buffer sets; a set is taken for a call and given
        # back after, so Python threads calling one model at once each get their own
        self._buffers: dict[tuple[int, int], list[_Buffers]] = {}

    def current(self) -> bool:
        """True if every array the network reads is the same object, with the same bits
        where the network derived values from it."""
        return self.network.current()

    def __call__(self, x: NDArray[Any]) -> NDArray[Any]:
        n = x.shape[0]
        n_threads = get_num_threads()
        key = (n, n_threads)
        spares = self._buffers.get(key)
        try:  # (pop, not a test then pop: another Python thread may take the last set)
            buffers = spares.pop() if spares is not None else self._new_buffers(n, n_threads)
        except IndexError:
            buffers = self._new_buffers(n, n_threads)
        out = np.empty((n, *self.out_shape), dtype=self.dtype)
        batch = np.ascontiguousarray(x).reshape(n, -1)
        activations, workspace, indices = buffers
        _network.run_network(
            self.network, batch, activations, workspace, indices, out.reshape(n, -1), n_threads
        )
        if spares is None:
            if len(self._buffers) >= _MAX_BATCH_SIZES:
                self._buffers.clear()
            spares = self._buffers.setdefault(key, [])
        spares.append(buffers)
        return out

    def _new_buffers(self, n: int, n_threads: int) -> _Buffers:
        activations = np.empty((2, n * self.largest_output), dtype=self.dtype)
        workspace = np.empty((n_threads, self.workspace_row), dtype=self.dtype)
        indices = np.empty((n_threads, self.indices_row), dtype=np.int64)
        return activations, workspace, indices
