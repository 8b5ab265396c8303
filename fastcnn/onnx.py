"""Export a fastcnn model to ONNX: ``fastcnn.onnx.export(model, example_input, f)``.

The model is a ``nn.Sequential`` (possibly nested; ``fastcnn.models``' networks are
Sequentials) or a single layer, made of the layers in ``SUPPORTED``. Its evaluation form is
exported: BatchNorm with its running statistics, Dropout as the identity. The graph's input
is ``input`` and its output ``output``, both with a dynamic batch axis named ``batch``, in
the model's dtype. The ``onnx`` package is needed only here (``pip install
"fastcnn[onnx]"``): ``import fastcnn`` does not import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn import _files, nn
from fastcnn._version import __version__

__all__ = ["SUPPORTED", "export"]

# The layer types export knows, exactly (a subclass may compute something else).
SUPPORTED: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.Linear,
    nn.ReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.SiLU,
    nn.Softmax,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Dropout,
    nn.Flatten,
    nn.Identity,
)

# Softmax's axis semantics (one axis, not "flatten from axis") date from opset 13.
MIN_OPSET = 13


def _supported_text() -> str:
    names = ", ".join(layer.__name__ for layer in SUPPORTED)
    return f"fastcnn.onnx.export supports nn.Sequential (nested too) of {names}"


def _where(path: str) -> str:
    return "the model itself" if not path else f"model.{path}"


def _leaves(module: nn.Module, path: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The layers of ``module`` in the order its forward runs them, with their dotted
    names (``conv1``, ``features.0``); TypeError for anything else."""
    if isinstance(module, nn.Sequential):
        if type(module).forward is not nn.Sequential.forward:
            raise TypeError(
                f"fastcnn.onnx.export: {type(module).__name__} at {_where(path)} is a "
                "Sequential with its own forward, which cannot be exported; " + _supported_text()
            )
        for name, child in module.named_children():
            yield from _leaves(child, f"{path}.{name}" if path else name)
        return
    if type(module) not in SUPPORTED:
        raise TypeError(
            f"fastcnn.onnx.export: cannot export {type(module).__name__} at {_where(path)}; "
            + _supported_text()
        )
    yield path, module


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

    def __init__(self, onnx: Any, dtype: np.dtype[Any]) -> None:
        self.onnx, self.dtype = onnx, dtype
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
    if isinstance(layer, nn.SiLU):
        return graph.node("Mul", [x, graph.node("Sigmoid", [x], label)], label)
    if isinstance(layer, nn.Softmax):
        return graph.node("Softmax", [x], label, axis=layer.dim % len(in_shape))
    if isinstance(layer, nn.MaxPool2d):
        return graph.node("MaxPool", [x], label, **_pool_window(layer))
    if isinstance(layer, nn.AvgPool2d):
        include_pad = int(layer.count_include_pad)
        return graph.node(
            "AveragePool", [x], label, **_pool_window(layer), count_include_pad=include_pad
        )
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _batch_norm(graph, layer, label, x)
    if isinstance(layer, nn.Flatten):
        return _flatten(graph, layer, label, x, in_shape)
    # Dropout (the identity in evaluation) and Identity
    return graph.node("Identity", [x], label)


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


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as error:
        raise ImportError(
            'fastcnn.onnx.export needs the onnx package: pip install "fastcnn[onnx]" '
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
        statistics, a Flatten over the batch dimension), a bad example input or opset.
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
    layers = list(_leaves(model))
    example = np.asarray(example_input)
    if example.ndim < 1 or example.shape[0] < 1:
        raise ValueError(
            "fastcnn.onnx.export: example_input must be a batch (its first dimension the "
            f"batch, of at least 1), got shape {example.shape}"
        )
    dtype = _model_dtype(model, example)
    graph = _Graph(onnx, dtype)
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        value, x = "input", example
        for name, layer in layers:
            in_shape = tuple(np.shape(x))
            x = layer(x)
            value = _emit(graph, layer, name, value, in_shape)
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
