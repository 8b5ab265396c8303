"""ONNX files: ``fastcnn.onnx.export(model, example_input, f)`` and ``fastcnn.onnx.load(f)``.

The model is a ``nn.Sequential`` (possibly nested; ``fastcnn.models``' networks are
Sequentials) or a single layer, made of the layers in ``SUPPORTED``. Its evaluation form is
exported: BatchNorm with its running statistics, Dropout as the identity. The graph's input
is ``input`` and its output ``output``, both with a dynamic batch axis named ``batch``, in
the model's dtype. ``load`` reads such a chain of operators back (from fastcnn or from
``torch.onnx.export``) as an ``nn.Sequential``. The ``onnx`` package is needed only here
(``pip install "fastcnn[onnx]"``): ``import fastcnn`` does not import it.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn import _files, models, nn
from fastcnn._version import __version__

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["SUPPORTED", "export", "load"]

# The layer types export knows, exactly (a subclass may compute something else).
SUPPORTED: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.Linear,
    nn.ReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.SiLU,
    nn.Softmax,
    nn.LogSoftmax,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.Dropout,
    nn.Dropout2d,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.Hardswish,
    nn.Flatten,
    nn.Identity,
)

# Softmax's axis semantics (one axis, not "flatten from axis") date from opset 13.
MIN_OPSET = 13


def _supported_text() -> str:
    names = ", ".join(layer.__name__ for layer in SUPPORTED)
    return (
        "fastcnn.onnx.export supports nn.Sequential (nested too), nn.Residual, nn.Concat "
        f"and models.BasicBlock of {names}"
    )


def _where(path: str) -> str:
    return "the model itself" if not path else f"model.{path}"


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# (the main path's layers, the shortcut or None for the identity, the layer after the sum
# or None) of each block with two paths, by exact type, with their names in the block
def _residual_paths(block: Any) -> tuple[list[tuple[str, Any]], Any, Any]:
    shortcut = None if block.shortcut is None else ("shortcut", block.shortcut)
    return [("body", block.body)], shortcut, None


def _basic_block_paths(block: Any) -> tuple[list[tuple[str, Any]], Any, Any]:
    body = [(n, getattr(block, n)) for n in ("conv1", "bn1", "relu", "conv2", "bn2")]
    shortcut = None if block.downsample is None else ("downsample", block.downsample)
    return body, shortcut, ("relu", block.relu)


_TWO_PATHS: dict[type, Callable[[Any], tuple[list[tuple[str, Any]], Any, Any]]] = {
    nn.Residual: _residual_paths,
    models.BasicBlock: _basic_block_paths,
}


def _export_module(
    graph: _Graph, module: nn.Module, path: str, value: str, x: Any
) -> tuple[str, Any]:
    """The nodes computing ``module`` (named ``path``) on the graph value ``value``, whose
    example is ``x``: (the output's value, the output's example). The layers of a
    Sequential (nested too) in order; a block with two paths (``_TWO_PATHS``) as both
    paths and an Add; a Concat as its branches and a Concat; any other layer by ``_emit``,
    or a TypeError naming it."""
    if type(module) is nn.Concat:
        outputs, examples = [], []
        for name, branch in module.named_children():
            output, y = _export_module(graph, branch, _child(path, name), value, x)
            outputs.append(output)
            examples.append(np.asarray(y))
        joined = np.concatenate(examples, axis=module.dim)
        axis = module.dim % joined.ndim
        return graph.node("Concat", outputs, _child(path, "concat"), axis=axis), joined
    if type(module) in _TWO_PATHS:
        body, shortcut, after = _TWO_PATHS[type(module)](module)
        main, y = value, x
        for name, layer in body:
            main, y = _export_module(graph, layer, _child(path, name), main, y)
        other, z = value, x
        if shortcut is not None:
            other, z = _export_module(graph, shortcut[1], _child(path, shortcut[0]), value, x)
        value, x = graph.node("Add", [main, other], _child(path, "add")), y + z
        if after is not None:
            value, x = _export_module(graph, after[1], _child(path, after[0]), value, x)
        return value, x
    if isinstance(module, nn.Sequential):
        if type(module).forward is not nn.Sequential.forward:
            raise TypeError(
                f"fastcnn.onnx.export: {type(module).__name__} at {_where(path)} is a "
                "Sequential with its own forward, which cannot be exported; " + _supported_text()
            )
        for name, child in module.named_children():
            value, x = _export_module(graph, child, _child(path, name), value, x)
        return value, x
    if type(module) not in SUPPORTED:
        raise TypeError(
            f"fastcnn.onnx.export: cannot export {type(module).__name__} at {_where(path)}; "
            + _supported_text()
        )
    return _emit(graph, module, path, value, tuple(np.shape(x))), module(x)


def _model_dtype(model: nn.Module, example: NDArray[Any]) -> np.dtype[Any]:
    """The parameters' dtype (the input's for a model without parameters)."""
    dtypes = {np.dtype(array.dtype) for array in model.parameters()}
    dtypes |= {np.dtype(a.dtype) for a in model.buffers() if np.issubdtype(a.dtype, np.floating)}
    if len(dtypes) > 1:
        found = ", ".join(sorted(str(d) for d in dtypes))
        raise ValueError(
            f"fastcnn.onnx.export: the model mixes dtypes ({found}); cast it with "
            "model.float() or model.double() first"
        )
    dtype = dtypes.pop() if dtypes else example.dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(
            f"fastcnn.onnx.export: example_input must be float32 or float64, got {dtype}"
        )
    if example.dtype != dtype:
        raise ValueError(
            f"fastcnn.onnx.export: example_input is {example.dtype} but the model is {dtype}; "
            f"pass example_input.astype(np.{dtype})"
        )
    return dtype


class _Graph:
    """The nodes and initializers being built, with fresh value names."""

    def __init__(self, onnx: Any, dtype: np.dtype[Any], opset_version: int) -> None:
        self.onnx, self.dtype, self.opset_version = onnx, dtype, opset_version
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def constant(self, name: str, array: ArrayLike, dtype: Any = None) -> str:
        """An initializer holding a copy of ``array`` (in the model's dtype by default)."""
        value = np.array(array, dtype=self.dtype if dtype is None else dtype, copy=True)
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        """Add a node of one output; return the output's name."""
        self._count += 1
        output = f"{name}:{op}:{self._count}"
        self.nodes.append(
            self.onnx.helper.make_node(op, inputs, [output], name=output, **attributes)
        )
        return output


def _pool_window(layer: nn.MaxPool2d | nn.AvgPool2d) -> dict[str, list[int]]:
    """A pool layer's window as ONNX's MaxPool/AveragePool attributes."""
    return {
        "kernel_shape": list(layer.kernel_size),
        "strides": list(layer.stride),
        "pads": _pads(layer.padding),
    }


def _pads(padding: tuple[int, int]) -> list[int]:
    """ONNX pads (begin h, begin w, end h, end w) of fastcnn's symmetric (pad_h, pad_w)."""
    return [padding[0], padding[1], padding[0], padding[1]]


def _emit(graph: _Graph, layer: nn.Module, name: str, x: str, in_shape: tuple[int, ...]) -> str:
    """The nodes computing ``layer`` on the value ``x``; returns the output value's name."""
    label = name or type(layer).__name__
    if isinstance(layer, nn.Conv2d):
        inputs = [x, graph.constant(f"{label}.weight", layer.weight.data)]
        if layer.bias is not None:
            inputs.append(graph.constant(f"{label}.bias", layer.bias.data))
        return graph.node(
            "Conv",
            inputs,
            label,
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.stride),
            pads=_pads(layer.padding),
            dilations=list(layer.dilation),
            group=layer.groups,
        )
    if isinstance(layer, nn.Linear):
        if len(in_shape) < 2:
            raise ValueError(
                f"fastcnn.onnx.export: Linear at {_where(name)} got a 1-D input {in_shape}, "
                "which has no batch dimension; pass example_input as a (batch, features) array"
            )
        if len(in_shape) == 2:
            inputs = [x, graph.constant(f"{label}.weight", layer.weight.data)]
            if layer.bias is not None:
                inputs.append(graph.constant(f"{label}.bias", layer.bias.data))
            return graph.node("Gemm", inputs, label, transB=1)
        weight_t = graph.constant(f"{label}.weight_t", layer.weight.data.T)
        out = graph.node("MatMul", [x, weight_t], label)
        if layer.bias is None:
            return out
        return graph.node("Add", [out, graph.constant(f"{label}.bias", layer.bias.data)], label)
    if isinstance(layer, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
        op = {nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh"}[type(layer)]
        return graph.node(op, [x], label)
    if isinstance(layer, nn.LeakyReLU):
        return graph.node("LeakyRelu", [x], label, alpha=layer.negative_slope)
    if isinstance(layer, nn.ELU):
        return graph.node("Elu", [x], label, alpha=layer.alpha)
    if isinstance(layer, nn.GELU):
        return _gelu(graph, layer, label, x)
    if isinstance(layer, nn.Hardswish):
        # x * (clip(x + 3, 0, 6) / 6), fastcnn's order: ONNX's HardSwish (opset 14 on) takes
        # no constants, but HardSigmoid's alpha = 1/6 is a float32 attribute, inexact for
        # float64 models
        def constant(name: str, value: float) -> str:
            return graph.constant(f"{label}.{name}", value)

        shifted = graph.node("Add", [x, constant("three", 3)], label)
        six = constant("six", 6)
        relu6 = graph.node("Clip", [shifted, constant("zero", 0), six], label)
        return graph.node("Mul", [x, graph.node("Div", [relu6, six], label)], label)
    if isinstance(layer, nn.SiLU):
        return graph.node("Mul", [x, graph.node("Sigmoid", [x], label)], label)
    if isinstance(layer, (nn.Softmax, nn.LogSoftmax)):
        op_type = "Softmax" if isinstance(layer, nn.Softmax) else "LogSoftmax"
        return graph.node(op_type, [x], label, axis=layer.dim % len(in_shape))
    if isinstance(layer, nn.MaxPool2d):
        return graph.node("MaxPool", [x], label, **_pool_window(layer))
    if isinstance(layer, nn.AvgPool2d):
        include_pad = int(layer.count_include_pad)
        return graph.node(
            "AveragePool", [x], label, **_pool_window(layer), count_include_pad=include_pad
        )
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _batch_norm(graph, layer, label, x)
    if isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive_pool(graph, layer, label, x, in_shape, _where(name))
    if isinstance(layer, nn.GroupNorm):
        return _group_norm(graph, layer, label, x, in_shape)
    if isinstance(layer, nn.LayerNorm):
        return _layer_norm(graph, layer, label, x, in_shape, _where(name))
    if isinstance(layer, nn.Flatten):
        return _flatten(graph, layer, label, x, in_shape)
    # Dropout, Dropout2d (the identity in evaluation) and Identity
    return graph.node("Identity", [x], label)


def _gelu(graph: _Graph, layer: nn.GELU, label: str, x: str) -> str:
    """GELU as its formula (ONNX's Gelu op dates from opset 20)."""

    def constant(name: str, value: float) -> str:
        return graph.constant(f"{label}.{name}", value)

    if layer.approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = graph.node("Mul", [graph.node("Mul", [x, x], label), x], label)
        inner = graph.node(
            "Add", [x, graph.node("Mul", [cube, constant("kappa", 0.044715)], label)], label
        )
        scaled = graph.node("Mul", [inner, constant("sqrt_2_over_pi", (2 / np.pi) ** 0.5)], label)
        cdf_times_2 = graph.node(
            "Add", [graph.node("Tanh", [scaled], label), constant("one", 1)], label
        )
    else:
        # 0.5 x (1 + erf(x / sqrt 2))
        erf = graph.node("Erf", [graph.node("Div", [x, constant("sqrt_2", 2**0.5)], label)], label)
        cdf_times_2 = graph.node("Add", [erf, constant("one", 1)], label)
    half_x = graph.node("Mul", [x, constant("half", 0.5)], label)
    return graph.node("Mul", [half_x, cdf_times_2], label)


def _batch_norm(graph: _Graph, layer: nn.Module, label: str, x: str) -> str:
    if not layer.track_running_stats:
        raise ValueError(
            f"fastcnn.onnx.export: {type(layer).__name__} at {_where(label)} has "
            "track_running_stats=False: it normalises with each batch's statistics even in "
            "evaluation, which ONNX inference cannot do; train it with running statistics"
        )
    channels = layer.num_features
    weight = np.ones(channels) if layer.weight is None else layer.weight.data
    bias = np.zeros(channels) if layer.bias is None else layer.bias.data
    inputs = [
        x,
        graph.constant(f"{label}.weight", weight),
        graph.constant(f"{label}.bias", bias),
        graph.constant(f"{label}.running_mean", layer.running_mean),
        graph.constant(f"{label}.running_var", layer.running_var),
    ]
    return graph.node("BatchNormalization", inputs, label, epsilon=float(layer.eps))


def _adaptive_pool(
    graph: _Graph,
    layer: nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d,
    label: str,
    x: str,
    in_shape: tuple[int, ...],
    where: str,
) -> str:
    """Global pooling for output (1, 1); the plain pool with the same bins where the output
    size divides the input's (the graph's H and W are those of the example). ``where``
    names the layer's place in the model for messages."""
    kind = type(layer).__name__
    if len(in_shape) != 4:
        raise ValueError(
            f"fastcnn.onnx.export: {kind} at {where} got input of shape {in_shape}; export "
            "needs (N, C, H, W) batches there"
        )
    if getattr(layer, "return_indices", False):
        raise ValueError(
            f"fastcnn.onnx.export: {kind} at {where} has return_indices=True: its (output, "
            "indices) pair cannot flow on through the graph; export it with return_indices=False"
        )
    size = layer.output_size
    pair = size if isinstance(size, (tuple, list)) else (size, size)
    out_hw = tuple(in_shape[2 + a] if pair[a] is None else pair[a] for a in (0, 1))
    average = isinstance(layer, nn.AdaptiveAvgPool2d)
    if out_hw == (1, 1):
        return graph.node("GlobalAveragePool" if average else "GlobalMaxPool", [x], label)
    if min(out_hw) < 1 or in_shape[2] % out_hw[0] or in_shape[3] % out_hw[1]:
        raise ValueError(
            f"fastcnn.onnx.export: {kind} at {where} pools {in_shape[2:]} to {out_hw}, whose "
            "bins ONNX's pools cannot express; export supports output size (1, 1), or one "
            "that divides the input's size"
        )
    kernel = [in_shape[2] // out_hw[0], in_shape[3] // out_hw[1]]
    window = {"kernel_shape": kernel, "strides": kernel, "pads": [0, 0, 0, 0]}
    return graph.node("AveragePool" if average else "MaxPool", [x], label, **window)


def _group_norm(
    graph: _Graph, layer: nn.GroupNorm, label: str, x: str, in_shape: tuple[int, ...]
) -> str:
    """Opset 17 has no GroupNormalization: InstanceNormalization (unit scale, no shift)
    of the (N, G, -1) reshape normalises each sample's groups, then the per-channel affine."""
    groups = layer.num_groups
    grouped_shape = graph.constant(f"{label}.grouped_shape", [0, groups, -1], dtype=np.int64)
    grouped = graph.node("Reshape", [x, grouped_shape], label)
    unit = [graph.constant(f"{label}.unit_scale", np.ones(groups))]
    unit.append(graph.constant(f"{label}.zero_shift", np.zeros(groups)))
    normalized = graph.node(
        "InstanceNormalization", [grouped, *unit], label, epsilon=float(layer.eps)
    )
    shape = graph.constant(f"{label}.shape", [0, *in_shape[1:]], dtype=np.int64)
    out = graph.node("Reshape", [normalized, shape], label)
    per_channel = (-1,) + (1,) * (len(in_shape) - 2)
    if layer.weight is not None:
        weight = graph.constant(f"{label}.weight", layer.weight.data.reshape(per_channel))
        out = graph.node("Mul", [out, weight], label)
    if layer.bias is not None:
        bias = graph.constant(f"{label}.bias", layer.bias.data.reshape(per_channel))
        out = graph.node("Add", [out, bias], label)
    return out


def _layer_norm(
    graph: _Graph,
    layer: nn.LayerNorm,
    label: str,
    x: str,
    in_shape: tuple[int, ...],
    where: str,
) -> str:
    shape = layer.normalized_shape
    if graph.opset_version < 17:
        raise ValueError(
            f"fastcnn.onnx.export: LayerNorm at {where} needs ONNX's LayerNormalization, "
            f"which opset 17 introduced; pass opset_version=17 or later, not "
            f"{graph.opset_version}"
        )
    if len(shape) >= len(in_shape):
        raise ValueError(
            f"fastcnn.onnx.export: LayerNorm at {where} (normalized_shape={shape}) normalises "
            f"over the batch dimension of its input {in_shape}, which the exported graph keeps "
            "dynamic; give the model a batch dimension first"
        )
    weight = np.ones(shape) if layer.weight is None else layer.weight.data
    bias = np.zeros(shape) if layer.bias is None else layer.bias.data
    inputs = [x, graph.constant(f"{label}.weight", weight)]
    inputs.append(graph.constant(f"{label}.bias", bias))
    return graph.node(
        "LayerNormalization", inputs, label, axis=-len(shape), epsilon=float(layer.eps)
    )


def _flatten(
    graph: _Graph, layer: nn.Flatten, label: str, x: str, in_shape: tuple[int, ...]
) -> str:
    ndim = len(in_shape)
    start, end = layer.start_dim % ndim, layer.end_dim % ndim
    if start == 0:
        raise ValueError(
            f"fastcnn.onnx.export: Flatten at {_where(label)} (start_dim={layer.start_dim}) "
            "merges the batch dimension, which the exported graph keeps dynamic; use "
            "start_dim >= 1"
        )
    if start == 1 and end == ndim - 1:
        return graph.node("Flatten", [x], label, axis=1)
    # Reshape: 0 copies a dimension (the batch among them), -1 is the merged one.
    shape = [0] * start + [-1] + list(in_shape[end + 1 :])
    target = graph.constant(f"{label}.shape", shape, dtype=np.int64)
    return graph.node("Reshape", [x, target], label)


def _value_info(onnx: Any, name: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Any:
    elem_type = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    dims: list[int | str] = ["batch", *shape[1:]]
    return onnx.helper.make_tensor_value_info(name, elem_type, dims)


def _import_onnx(caller: str = "fastcnn.onnx.export") -> Any:
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as error:
        raise ImportError(
            f'{caller} needs the onnx package: pip install "fastcnn[onnx]" '
            f"(or pip install onnx). Original error: {error}"
        ) from error
    return onnx


def export(
    model: nn.Module,
    example_input: ArrayLike,
    f: str | os.PathLike[str] | IO[bytes],
    *,
    opset_version: int = 17,
) -> None:
    """Write ``model``'s evaluation form as an ONNX file (``torch.onnx.export``'s order).

    Parameters
    ----------
    model : nn.Module
        An ``nn.Sequential`` (nested ones too, and ``fastcnn.models``' networks) or a single
        layer, of the layer types in ``fastcnn.onnx.SUPPORTED``.
    example_input : array_like
        A batch the model takes (any batch size), in the model's dtype: the model runs on it
        once in evaluation mode to find the shapes; its training flags are restored after.
    f : str, os.PathLike or binary file object
        A path is written atomically (it holds the old file or the whole new one).
    opset_version : int, default 17
        The ONNX operator set, 13 or later.

    Raises
    ------
    ImportError
        The onnx package is not installed.
    TypeError
        A module the exporter does not know (named by its type and place in the model).
    ValueError
        A layer whose setting ONNX cannot express here (BatchNorm without running
        statistics, a Flatten over the batch dimension, an adaptive pool to a size other
        than (1, 1) that does not divide its input, LayerNorm below opset 17), a bad
        example input or opset.
    """
    onnx = _import_onnx()
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"fastcnn.onnx.export: model must be a fastcnn.nn.Module, got {type(model).__name__}"
        )
    newest = onnx.defs.onnx_opset_version()
    if (
        isinstance(opset_version, bool)
        or not isinstance(opset_version, (int, np.integer))
        or not MIN_OPSET <= opset_version <= newest
    ):
        raise ValueError(
            f"fastcnn.onnx.export: opset_version must be an int from {MIN_OPSET} to {newest} "
            f"(this onnx's newest), got {opset_version!r}"
        )
    if not (isinstance(f, (str, os.PathLike)) or hasattr(f, "write")):
        raise TypeError(
            f"fastcnn.onnx.export: f must be a path or a binary file object, got {type(f).__name__}"
        )
    example = np.asarray(example_input)
    if example.ndim < 1 or example.shape[0] < 1:
        raise ValueError(
            "fastcnn.onnx.export: example_input must be a batch (its first dimension the "
            f"batch, of at least 1), got shape {example.shape}"
        )
    dtype = _model_dtype(model, example)
    graph = _Graph(onnx, dtype, int(opset_version))
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        value, x = _export_module(graph, model, "", "input", example)
    finally:
        for module, training in flags:
            module.training = training
    output = np.asarray(x)
    graph.nodes.append(onnx.helper.make_node("Identity", [value], ["output"], name="output"))
    onnx_graph = onnx.helper.make_graph(
        graph.nodes,
        type(model).__name__,
        [_value_info(onnx, "input", dtype, example.shape)],
        [_value_info(onnx, "output", dtype, output.shape)],
        initializer=graph.initializers,
    )
    opset = onnx.helper.make_opsetid("", int(opset_version))
    proto = onnx.helper.make_model(
        onnx_graph,
        opset_imports=[opset],
        ir_version=onnx.helper.find_min_ir_version_for([opset]),
        producer_name="fastcnn",
        producer_version=__version__,
    )
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    if isinstance(f, (str, os.PathLike)):
        _files.atomic_write(f, data)
    else:
        f.write(data)


# ---------------------------------------------------------------------------------- load
#
# A graph load reads is a chain: each node takes the output of the layer before it (and
# constants) and feeds the next. Constants are the initializers, Constant nodes and what
# is computed from them and from tensor shapes alone (torch writes Flatten(2) as Shape ->
# Slice -> Concat -> Reshape, and its constant folding adds Identity nodes between
# initializers); they are folded when a layer asks for one, by ONNX's reference
# evaluator, so every operator folds as ONNX defines it. Each layer is built from its
# node (two for MatMul + Add and for SiLU's Sigmoid + Mul) and run once, in evaluation,
# on a batch of zeros: that gives the next node's input shape (BatchNorm1d or 2d, what a
# Reshape flattens) and checks that the weights fit together.

# The oldest opset load reads: the loaders know the operators' forms from 11 on (Dropout's
# ratio an attribute until 12, Softmax over all the axes from ``axis`` until 13).
MIN_LOAD_OPSET = 11

# The initializer suffixes of fastcnn's (and torch's) state dicts: an initializer
# ``conv1.weight`` names its layer ``conv1`` (``weight_t`` is export's transposed Linear).
_PARAMETER_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "weight_t")

# fastcnn's node names are ``<layer>:<op>:<count>`` (_Graph.node).
_FASTCNN_NODE_NAME = re.compile(r"(.+):[A-Za-z]+:[0-9]+")

# A layer read from the chain, and how many of the chain's nodes it was read from.
_Read = tuple[nn.Module, int]

_NOT_CHAIN = (
    "fastcnn.onnx.load reads a chain, where each node takes the previous node's output "
    "and constants"
)


def _load_supported_text() -> str:
    return (
        f"fastcnn.onnx.load reads {', '.join(_LOADERS)} (MatMul with an Add of its bias, "
        "Sigmoid then Mul as SiLU, Reshape as a flatten)"
    )


def _label(node: Any) -> str:
    name = f"{node.name!r}" if node.name else f"writing {node.output[0]!r}"
    return f"node {name} ({node.op_type})"


def _error(node: Any, message: str) -> ValueError:
    return ValueError(f"fastcnn.onnx.load: {_label(node)} {message}")


def _shortest(value: float) -> float:
    """A float attribute (ONNX stores float32) as the shortest decimal that rounds to it:
    1e-05, not 9.999999747378752e-06."""
    return float(str(np.float32(value)))


class _Chain:
    """A graph's chain of nodes being read into layers, with its constants and the shapes
    of the chain's values (for a batch of the graph's size, 1 if it is dynamic)."""

    def __init__(self, onnx: Any, proto: Any) -> None:
        self.onnx = onnx
        graph = proto.graph
        opsets = {o.domain: o.version for o in proto.opset_import}
        self.opset = opsets.get("", opsets.get("ai.onnx", 0))
        if self.opset < MIN_LOAD_OPSET:
            raise ValueError(
                f"fastcnn.onnx.load: the model uses opset {self.opset}; fastcnn reads opset "
                f"{MIN_LOAD_OPSET} or later (export again with a newer opset_version)"
            )
        self.constants: dict[str, NDArray[Any]] = {
            t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer
        }
        self._producers: dict[str, Any] = {}
        self.nodes: list[Any] = []  # the chain's nodes, in order
        known = set(self.constants)  # the constants' names, folded or not
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise _error(node, f"is in the domain {node.domain!r}; " + _load_supported_text())
            inputs = [name for name in node.input if name]
            if node.op_type in ("Constant", "Shape") or (inputs and set(inputs) <= known):
                known.update(node.output)
                self._producers.update((name, node) for name in node.output)
            else:
                self.nodes.append(node)
        self._known = known
        self.consumers = Counter(name for node in graph.node for name in node.input)
        self.consumers.update(value.name for value in graph.output)
        self.input, self.output = _graph_ends(graph, known)
        self.dtype, shape = _input_type(onnx, self.input)
        self.shapes: dict[str, tuple[int, ...]] = {self.input.name: shape}

    def is_constant(self, name: str) -> bool:
        return name in self._known

    def constant(self, name: str, user: Any) -> NDArray[Any]:
        """The value of the constant ``name``, which the node ``user`` reads."""
        if name not in self.constants:
            if name not in self._producers:
                raise _error(user, f"needs its input {name!r} to be a constant")
            self._fold(self._producers[name])
        return self.constants[name]

    def _fold(self, node: Any) -> None:
        if node.op_type == "Shape" and not self.is_constant(node.input[0]):
            results = [self._shape(node)]
        else:
            feeds = {name: self.constant(name, node) for name in node.input if name}
            results = self._evaluate(node, feeds)
        outputs = [name for name in node.output if name]
        self.constants.update(zip(outputs, (np.asarray(r) for r in results), strict=True))

    def _shape(self, node: Any) -> NDArray[Any]:
        source = node.input[0]
        if source not in self.shapes:
            raise _error(node, f"reads the shape of {source!r}, inside a layer; " + _NOT_CHAIN)
        attributes = _attributes(self.onnx, node)
        start, end = attributes.get("start", 0), attributes.get("end")
        return np.array(self.shapes[source][start:end], np.int64)

    def _evaluate(self, node: Any, feeds: dict[str, NDArray[Any]]) -> list[Any]:
        """Run one node on constants with ONNX's reference evaluator, at the model's opset."""
        from onnx.reference import ReferenceEvaluator

        helper = self.onnx.helper
        inputs = [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), None)
            for name, v in feeds.items()
        ]
        outputs = [helper.make_empty_tensor_value_info(name) for name in node.output if name]
        graph = helper.make_graph([node], "fold", inputs, outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        try:
            return list(ReferenceEvaluator(model).run(None, feeds))
        except Exception as error:  # the evaluator raises whatever its operator does
            raise _error(
                node, f"could not be computed from its constant inputs: {error}"
            ) from error

    def parameter(self, node: Any, index: int) -> NDArray[Any] | None:
        """The node's constant input ``index`` as a weight in the model's dtype; None if the
        optional input is absent."""
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.weight(node, node.input[index])

    def weight(self, node: Any, name: str) -> NDArray[Any]:
        """The constant ``name`` the node reads, as a weight in the model's dtype."""
        value = self.constant(name, node)
        if not np.issubdtype(value.dtype, np.floating):
            raise _error(node, f"has a {value.dtype} weight {name!r}; fastcnn needs floats")
        return value.astype(self.dtype)

    def follower(self, position: int, value: str, op_type: str) -> Any | None:
        """The chain node after ``position`` if it is an ``op_type`` reading ``value``."""
        if position + 1 < len(self.nodes):
            node = self.nodes[position + 1]
            if node.op_type == op_type and value in node.input:
                return node
        return None

    def check_chain_input(self, node: Any, current: str) -> None:
        """The node reads ``current`` as its first input, and otherwise only constants."""
        values = [name for name in node.input if name and not self.is_constant(name)]
        if current not in values:
            shown = ", ".join(repr(name) for name in values) or "no tensor"
            raise _error(
                node, f"reads {shown}, not {current!r}, the output before it: " + _NOT_CHAIN
            )
        if len(values) > 1:
            others = ", ".join(repr(name) for name in values if name != current)
            raise _error(
                node, f"reads {others} besides {current!r}: the graph branches; {_NOT_CHAIN}"
            )
        if node.input[0] != current:
            raise _error(
                node,
                f"takes {current!r} as an input other than its first, which fastcnn's "
                "layers cannot compute",
            )

    def check_unused_outputs(self, node: Any) -> None:
        for name in node.output[1:]:
            if name and self.consumers[name]:
                raise _error(
                    node, f"has its output {name!r} read; fastcnn's layer has only the first"
                )


def _graph_ends(graph: Any, constants: set[str]) -> tuple[Any, Any]:
    """The graph's one input (initializers may be listed as inputs too) and one output."""
    inputs = [value for value in graph.input if value.name not in constants]
    for what, values in (("inputs", inputs), ("outputs", list(graph.output))):
        if len(values) != 1:
            names = ", ".join(repr(value.name) for value in values)
            raise ValueError(
                f"fastcnn.onnx.load: the graph has {len(values)} {what} ({names or 'none'}); "
                "fastcnn.onnx.load reads graphs of one input and one output"
            )
    return inputs[0], graph.output[0]


def _input_type(onnx: Any, value: Any) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The model's dtype and the shape its layers are first run at (batch 1 if dynamic)."""
    tensor = value.type.tensor_type
    floats = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64}
    if not value.type.HasField("tensor_type") or tensor.elem_type not in floats:
        kind = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        raise ValueError(
            f"fastcnn.onnx.load: the graph input {value.name!r} is a "
            f"{kind if value.type.HasField('tensor_type') else 'non-tensor'}; fastcnn reads "
            "float32 and float64 models"
        )
    dtype = np.dtype(floats[tensor.elem_type])
    dims = list(tensor.shape.dim) if tensor.HasField("shape") else []
    if not dims:
        raise ValueError(
            f"fastcnn.onnx.load: the graph input {value.name!r} declares no batch dimension "
            "(no shape or a scalar); fastcnn needs (batch, ...) with fixed sizes after batch"
        )
    sizes = [dim.dim_value if dim.HasField("dim_value") else 0 for dim in dims]
    if min(sizes[1:], default=1) < 1:
        shown = ", ".join(
            str(s) if s else (d.dim_param or "?") for s, d in zip(sizes, dims, strict=True)
        )
        raise ValueError(
            f"fastcnn.onnx.load: the graph input {value.name!r} has shape ({shown}); fastcnn "
            "needs every size but the batch's (the first) to be fixed: export with only the "
            "batch axis dynamic"
        )
    return dtype, (sizes[0] or 1, *sizes[1:])


def _attributes(onnx: Any, node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _as_str(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _require(node: Any, attributes: dict[str, Any], name: str, default: Any, why: str) -> None:
    """The attribute ``name`` has its ``default`` value (which is what fastcnn computes)."""
    value = _as_str(attributes.get(name, default))
    if value != default:
        raise _error(node, f"has {name}={value!r}; {why}")


def _window(
    node: Any, attributes: dict[str, Any], kernel: tuple[int, ...] | None = None
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """A Conv's or pool's (kernel, stride, padding), for fastcnn's symmetric 2-D windows."""
    given = attributes.get("kernel_shape")
    if given is None and kernel is None:
        raise _error(node, "has no kernel_shape")
    if kernel is not None and given is not None and tuple(given) != kernel:
        raise _error(node, f"has kernel_shape={list(given)} but a weight of kernel {kernel}")
    shape = tuple(given) if given is not None else kernel or ()
    if len(shape) != 2:
        raise _error(node, f"has a {len(shape)}-D window {list(shape)}; fastcnn's layers are 2-D")
    auto_pad = _as_str(attributes.get("auto_pad", "NOTSET"))
    if auto_pad not in ("NOTSET", "VALID"):
        raise _error(
            node, f"has auto_pad={auto_pad!r}; fastcnn supports explicit pads (auto_pad NOTSET)"
        )
    _require(node, attributes, "dilations", [1, 1], "fastcnn supports dilation 1 only")
    _require(node, attributes, "ceil_mode", 0, "fastcnn's pools round the output size down")
    strides = list(attributes.get("strides", [1, 1]))
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise _error(
            node,
            f"has asymmetric pads={pads} (begin h, w, end h, w); fastcnn pads both "
            "sides of each axis alike",
        )
    return (shape[0], shape[1]), (strides[0], strides[1]), (pads[0], pads[1])


def _build(node: Any, layer: type[nn.Module], *args: Any, **kwargs: Any) -> Any:
    """``layer(*args, **kwargs)``; a setting it refuses is an error naming the node."""
    try:
        return layer(*args, **kwargs)
    except (TypeError, ValueError) as error:
        raise _error(node, f"maps to a {layer.__name__} fastcnn cannot build: {error}") from error


def _load_conv(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    attributes = _attributes(chain.onnx, node)
    weight, bias = chain.parameter(node, 1), chain.parameter(node, 2)
    if weight is None or weight.ndim != 4:
        raise _error(node, "has no 4-D weight; fastcnn's Conv2d is a 2-D convolution")
    groups = int(attributes.get("group", 1))
    dilation = tuple(attributes.pop("dilations", [1, 1]))  # (a pool's: refused by _window)
    kernel, stride, padding = _window(node, attributes, weight.shape[2:])
    conv = _build(
        node, nn.Conv2d, weight.shape[1] * groups, weight.shape[0], kernel, stride, padding,
        dilation=dilation, groups=groups, bias=bias is not None, rng=0, dtype=chain.dtype,
    )  # fmt: skip
    conv.weight.data = weight
    if bias is not None:
        conv.bias.data = _vector(node, bias, weight.shape[0], "bias")
    return conv, 1


def _vector(node: Any, value: NDArray[Any], size: int, what: str) -> NDArray[Any]:
    """``value`` as a vector of ``size``, if it is one once its leading 1s are dropped."""
    if value.size != size or value.shape[-1:] != (size,):
        raise _error(node, f"has a {what} of shape {value.shape}; fastcnn needs ({size},)")
    return value.reshape(size)


def _load_gemm(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    attributes = _attributes(chain.onnx, node)
    _require(node, attributes, "transA", 0, "fastcnn's Linear takes (batch, features) input")
    alpha, beta = attributes.get("alpha", 1.0), attributes.get("beta", 1.0)
    if alpha != 1 or (beta != 1 and len(node.input) > 2):
        raise _error(
            node,
            f"has alpha={_shortest(alpha)}, beta={_shortest(beta)}; fastcnn's Linear "
            "computes x @ W.T + b (alpha = beta = 1)",
        )
    weight, bias = chain.parameter(node, 1), chain.parameter(node, 2)
    if weight is None or weight.ndim != 2:
        raise _error(node, "has no 2-D weight")
    if not attributes.get("transB", 0):
        weight = weight.T  # ONNX's (in, out) to Linear's (out, in)
    if bias is not None and bias.ndim == 2 and bias.shape[0] != 1:
        raise _error(node, f"has a bias of shape {bias.shape}, one per row; fastcnn needs one")
    return _linear(node, weight, bias), 1


def _linear(node: Any, weight: NDArray[Any], bias: NDArray[Any] | None) -> nn.Module:
    out_features, in_features = weight.shape
    linear = _build(
        node, nn.Linear, in_features, out_features, bias is not None, rng=0, dtype=weight.dtype
    )
    linear.weight.data = np.ascontiguousarray(weight)
    if bias is not None:
        if bias.size == 1:  # ONNX broadcasts a single value
            bias = np.full(out_features, bias.reshape(()), bias.dtype)
        linear.bias.data = _vector(node, bias, out_features, "bias")
    return linear


def _load_matmul(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    weight = chain.parameter(node, 1)
    if weight is None or weight.ndim != 2 or len(shape) < 2:
        raise _error(
            node, "is not an x @ W of a (..., in) input and a 2-D W, the form of fastcnn's Linear"
        )
    # An Add of a constant after it is its bias (either operand order: torch writes b + xW).
    add = chain.follower(position, node.output[0], "Add")
    others = [] if add is None else [name for name in add.input if name != node.output[0]]
    if add is None or len(others) != 1 or not chain.is_constant(others[0]):
        return _linear(node, weight.T, None), 1
    bias = chain.weight(add, others[0])
    if bias.ndim > len(shape):
        raise _error(add, f"adds a {bias.ndim}-D bias to a {len(shape)}-D input")
    return _linear(add, weight.T, bias), 2


def _load_activation(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    if node.op_type == "Sigmoid":
        mul = chain.follower(position, node.output[0], "Mul")
        if mul is not None and sorted(mul.input) == sorted([node.input[0], node.output[0]]):
            return nn.SiLU(), 2
        return nn.Sigmoid(), 1
    simple = {"Relu": nn.ReLU, "Tanh": nn.Tanh, "Identity": nn.Identity, "HardSwish": nn.Hardswish}
    return simple[node.op_type](), 1


def _load_softmax(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    """Softmax or LogSoftmax (the same axis attribute)."""
    node = chain.nodes[position]
    axis = _attributes(chain.onnx, node).get("axis", -1 if chain.opset >= 13 else 1)
    # Before opset 13, (Log)Softmax normalised over all the axes from ``axis`` on.
    layer = nn.Softmax if node.op_type == "Softmax" else nn.LogSoftmax
    if chain.opset < 13 and axis % len(shape) != len(shape) - 1:
        raise _error(
            node,
            f"has axis={axis} at opset {chain.opset}, a {node.op_type} over several axes; "
            f"fastcnn's {layer.__name__} takes one (export at opset 13 or later)",
        )
    return layer(dim=axis), 1


def _load_pool(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    attributes = _attributes(chain.onnx, node)
    kernel, stride, padding = _window(node, attributes)
    if node.op_type == "MaxPool":
        _require(node, attributes, "storage_order", 0, "fastcnn computes no indices")
        return _build(node, nn.MaxPool2d, kernel, stride, padding), 1
    # ONNX's default is to leave the padding out of the average; PyTorch's, to count it.
    include_pad = bool(attributes.get("count_include_pad", 0))
    return _build(node, nn.AvgPool2d, kernel, stride, padding, count_include_pad=include_pad), 1


def _load_global_pool(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    if len(shape) != 4:
        raise _error(node, f"pools a {len(shape)}-D input; fastcnn's adaptive pools take 4-D")
    layer = nn.AdaptiveMaxPool2d if node.op_type == "GlobalMaxPool" else nn.AdaptiveAvgPool2d
    return layer((1, 1)), 1


def _load_slope_activation(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    """LeakyRelu (alpha: the negative slope, default 0.01) and Elu (alpha, default 1)."""
    node = chain.nodes[position]
    leaky = node.op_type == "LeakyRelu"
    alpha = _attributes(chain.onnx, node).get("alpha", 0.01 if leaky else 1.0)
    return _build(node, nn.LeakyReLU if leaky else nn.ELU, _shortest(alpha)), 1


def _load_batch_norm(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    attributes = _attributes(chain.onnx, node)
    _require(
        node, attributes, "training_mode", 0,
        "fastcnn reads the inference form: export the model in evaluation mode",
    )  # fmt: skip
    layer_type = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}.get(len(shape))
    if layer_type is None:
        raise _error(node, f"normalises a {len(shape)}-D input; fastcnn's BatchNorm takes 2-4-D")
    scale, bias, mean, var = (chain.parameter(node, index) for index in (1, 2, 3, 4))
    if scale is None or bias is None or mean is None or var is None:
        raise _error(node, "lacks one of scale, B, input_mean, input_var")
    channels = shape[1]
    # ONNX's momentum weighs the running value; PyTorch's (and fastcnn's), the batch's.
    momentum = float(1 - Decimal(str(np.float32(attributes.get("momentum", 0.9)))))
    eps = _shortest(attributes.get("epsilon", 1e-5))
    layer = _build(node, layer_type, channels, eps, momentum, dtype=chain.dtype)
    layer.weight.data = _vector(node, scale, channels, "scale")
    layer.bias.data = _vector(node, bias, channels, "bias")
    layer.running_mean[...] = _vector(node, mean, channels, "input_mean")
    layer.running_var[...] = _vector(node, var, channels, "input_var")
    return layer, 1


def _load_flatten(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    axis = _attributes(chain.onnx, node).get("axis", 1)
    if len(shape) < 2 or axis % len(shape) != 1:
        raise _error(
            node,
            f"has axis={axis} on a {len(shape)}-D input, which merges the batch "
            "dimension; fastcnn's Flatten keeps it (axis 1 only)",
        )
    return nn.Flatten(), 1


def _load_reshape(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    target = [int(size) for size in chain.constant(node.input[1], node).reshape(-1)]
    allow_zero = _attributes(chain.onnx, node).get("allowzero", 0)
    sizes = [shape[i] if size == 0 and not allow_zero else size for i, size in enumerate(target)]
    try:
        out_shape = np.empty(shape, np.bool_).reshape(sizes).shape
    except ValueError as error:
        raise _error(node, f"cannot reshape {shape} to {target}: {error}") from error
    if out_shape == shape:
        return nn.Identity(), 1
    merged = len(shape) - len(out_shape)  # how many dimensions the flatten removes
    starts = [
        start
        for start in range(1, len(shape) - merged)
        if (
            *shape[:start],
            math.prod(shape[start : start + merged + 1]),
            *shape[start + merged + 1 :],
        )
        == out_shape
    ]
    if merged < 1 or not starts:
        raise _error(
            node,
            f"reshapes {shape} to {out_shape}, which is not a flatten of consecutive "
            "dimensions after the batch; fastcnn reads a Reshape only as nn.Flatten",
        )
    # Of equal flattens (sizes of 1 make several), the one where the target puts its -1.
    start = target.index(-1) if -1 in target and target.index(-1) in starts else starts[0]
    end = start + merged
    return nn.Flatten(start, -1 if end == len(shape) - 1 else end), 1


def _load_dropout(chain: _Chain, position: int, shape: tuple[int, ...]) -> _Read:
    node = chain.nodes[position]
    if chain.opset < 12:  # then the ratio is an attribute and there is no training mode
        ratio = _attributes(chain.onnx, node).get("ratio", 0.5)
    else:
        given = chain.parameter(node, 1)
        ratio = 0.5 if given is None else float(given.reshape(()))
        training = chain.constant(node.input[2], node) if len(node.input) > 2 else None
        if training is not None and node.input[2] and bool(training):
            raise _error(
                node,
                "is in training mode; fastcnn reads the inference form: export the "
                "model in evaluation mode",
            )
    return _build(node, nn.Dropout, _shortest(ratio)), 1


_LOADERS: dict[str, Callable[[_Chain, int, tuple[int, ...]], _Read]] = {
    "Conv": _load_conv,
    "Gemm": _load_gemm,
    "MatMul": _load_matmul,
    "Relu": _load_activation,
    "Sigmoid": _load_activation,
    "Tanh": _load_activation,
    "Identity": _load_activation,
    "Softmax": _load_softmax,
    "LogSoftmax": _load_softmax,
    "MaxPool": _load_pool,
    "AveragePool": _load_pool,
    "GlobalAveragePool": _load_global_pool,
    "GlobalMaxPool": _load_global_pool,
    "LeakyRelu": _load_slope_activation,
    "Elu": _load_slope_activation,
    "HardSwish": _load_activation,
    "BatchNormalization": _load_batch_norm,
    "Flatten": _load_flatten,
    "Reshape": _load_reshape,
    "Dropout": _load_dropout,
}


def _read_layers(chain: _Chain) -> list[tuple[nn.Module, list[Any]]]:
    """Each layer of the chain with the nodes it was read from."""
    layers: list[tuple[nn.Module, list[Any]]] = []
    current = chain.input.name
    x = np.zeros(chain.shapes[current], chain.dtype)
    position = 0
    while position < len(chain.nodes):
        node = chain.nodes[position]
        if _names_the_output(chain, position, current):
            current = node.output[0]
            break
        chain.check_chain_input(node, current)
        loader = _LOADERS.get(node.op_type)
        if loader is None:
            raise _error(node, "is not supported; " + _load_supported_text())
        module, taken = loader(chain, position, x.shape)
        nodes = chain.nodes[position : position + taken]
        for part in nodes:
            chain.check_unused_outputs(part)
        x = _run(nodes[0], module.eval(), x)
        current = nodes[-1].output[0]
        chain.shapes[current] = x.shape
        layers.append((module, nodes))
        position += taken
    if current != chain.output.name:
        raise ValueError(
            f"fastcnn.onnx.load: the chain ends at {current!r}, not at the graph output "
            f"{chain.output.name!r}; " + _NOT_CHAIN
        )
    return layers


def _names_the_output(chain: _Chain, position: int, current: str) -> bool:
    """An Identity at the end that only names the graph output (as export writes one)."""
    node = chain.nodes[position]
    return (
        position == len(chain.nodes) - 1
        and node.op_type == "Identity"
        and list(node.input) == [current]
        and list(node.output) == [chain.output.name]
    )


def _run(node: Any, module: nn.Module, x: NDArray[Any]) -> NDArray[Any]:
    """The layer's output on ``x``; what it refuses is an error naming the node."""
    try:
        return np.asarray(module(x))
    except (TypeError, ValueError, IndexError) as error:
        raise _error(
            node, f"does not fit its input of shape {x.shape} (batch and all): {error}"
        ) from error


def _layer_path(chain: _Chain, nodes: list[Any]) -> str | None:
    """The layer's dotted name: its parameters' prefix (``conv1`` of ``conv1.weight``), else
    the name of its node (fastcnn's ``conv1:Conv:1``, torch's ``/conv1/Conv`` or
    ``/head/head.0/Gemm``, or the name as it is); None if neither gives one."""
    prefixes = {
        name.rsplit(".", 1)[0]
        for node in nodes
        for name in node.input
        if chain.is_constant(name)
        and name.rsplit(".", 1)[-1] in _PARAMETER_SUFFIXES
        and "." in name
    }
    if len(prefixes) == 1:
        return prefixes.pop()
    name = nodes[0].name
    if name.startswith("/"):
        parts = name.split("/")
        return parts[-2] if len(parts) >= 3 and parts[-2] else None
    match = _FASTCNN_NODE_NAME.fullmatch(name)
    return match.group(1) if match else name or None


def _valid_part(part: str) -> bool:
    reserved = set(dir(nn.Sequential()))  # a child may not hide an attribute
    return (part.isidentifier() or (part.isascii() and part.isdigit())) and part not in reserved


def _tree(items: list[tuple[list[str], nn.Module]]) -> OrderedDict[str, nn.Module] | None:
    """The modules as nested Sequentials named by their paths; None if the paths do not
    make a tree where each Sequential's modules come one after another."""
    children: OrderedDict[str, nn.Module] = OrderedDict()
    start = 0
    while start < len(items):
        head = items[start][0][0]
        end = start
        while end < len(items) and items[end][0][0] == head:
            end += 1
        group = items[start:end]
        if head in children:  # a duplicate, or a Sequential split by another module
            return None
        if len(group) == 1 and len(group[0][0]) == 1:
            children[head] = group[0][1]
        elif any(len(path) == 1 for path, _ in group):  # a layer and a Sequential alike
            return None
        else:
            inner = _tree([(path[1:], module) for path, module in group])
            if inner is None:
                return None
            children[head] = nn.Sequential(inner)
        start = end
    return children


def _sequential(chain: _Chain, layers: list[tuple[nn.Module, list[Any]]]) -> nn.Sequential:
    """The layers named by their paths where every path is valid, else "0", "1", ..."""
    paths = [_layer_path(chain, nodes) for _, nodes in layers]
    items = [
        (path.split("."), module) for path, (module, _) in zip(paths, layers, strict=True) if path
    ]
    tree = None
    if len(items) == len(layers) and all(_valid_part(p) for path, _ in items for p in path):
        tree = _tree(items)
    if tree is None:
        return nn.Sequential(*(module for module, _ in layers))
    return nn.Sequential(tree)


def _read_model(onnx: Any, f: Any) -> Any:
    """The ModelProto of a path, a binary file object or a ModelProto, checked."""
    if isinstance(f, onnx.ModelProto):
        proto, source = f, "the ModelProto"
    else:
        if isinstance(f, (str, os.PathLike)):
            with open(f, "rb") as file:
                data, source = file.read(), repr(os.fspath(f))
        elif hasattr(f, "read"):
            data, source = f.read(), "the file"
        else:
            raise TypeError(
                "fastcnn.onnx.load: f must be a path, a binary file object or an "
                f"onnx.ModelProto, got {type(f).__name__} (wrap bytes in io.BytesIO)"
            )
        if not isinstance(data, bytes):
            raise TypeError(
                f"fastcnn.onnx.load: the file gave {type(data).__name__}, not bytes; open it "
                'in binary mode ("rb")'
            )
        try:
            proto = onnx.load_model_from_string(data)
        except Exception as error:  # protobuf's DecodeError, whose module onnx does not export
            raise ValueError(
                f"fastcnn.onnx.load: {source} is not an ONNX model: {error}"
            ) from error
    if not proto.HasField("graph"):
        raise ValueError(f"fastcnn.onnx.load: {source} is not an ONNX model (it has no graph)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ValueError(
            f"fastcnn.onnx.load: {source} is not a valid ONNX model: {error}"
        ) from error
    return proto


def load(f: str | os.PathLike[str] | IO[bytes] | ModelProto) -> nn.Sequential:
    """Build a fastcnn model from an ONNX file of a chain of layers (``export``'s, or
    ``torch.onnx.export``'s of a ``torch.nn.Sequential``).

    Each operator becomes the fastcnn layer computing it (Conv -> ``Conv2d``, Gemm or MatMul
    (+ Add) -> ``Linear``, BatchNormalization -> ``BatchNorm1d``/``2d`` with its running
    statistics, eps and momentum, Dropout -> ``Dropout`` of its ratio, ...) with the graph's
    weights, in the graph input's dtype (float32 or float64). Layers are named after their
    weights' prefix or node scope (``conv1.weight`` or torch's ``/conv1/Conv`` give
    ``conv1``; ``head.0`` a nested ``head`` Sequential), so the state-dict keys are the
    exporting model's; if some layer has no such name, they are named "0", "1", ...

    As any freshly built module, the model is in training mode: call ``model.eval()`` to
    run it as the graph does. ONNX's BatchNormalization always scales and shifts, so a
    BatchNorm is loaded with ``affine=True`` (an ``affine=False`` one exports as scale 1,
    shift 0), and ``num_batches_tracked`` starts at 0. torch's exporter drops Dropout and
    Identity and, with constant folding, merges each BatchNorm2d into the convolution
    before it; those layers are then not in the loaded model.

    Parameters
    ----------
    f : str, os.PathLike, binary file object or onnx.ModelProto

    Raises
    ------
    ImportError
        The onnx package is not installed.
    TypeError
        ``f`` is none of the above.
    ValueError
        ``f`` is not a valid ONNX model, or its graph is not a chain of one input and one
        output, or a node is an operator (or has a setting, such as a dilation, groups,
        auto_pad, ceil_mode or asymmetric pads) fastcnn has no layer for: the message
        names the node and what fastcnn supports. The graph input's sizes other than the
        batch must be fixed.
    """
    onnx = _import_onnx("fastcnn.onnx.load")
    chain = _Chain(onnx, _read_model(onnx, f))
    model = _sequential(chain, _read_layers(chain))
    return model.train()
