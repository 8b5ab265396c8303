"""``fastcnn.summary``: a table of a model's layers, output shapes, parameters and mult-adds
(as torchinfo's and Keras's ``summary``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastcnn._grad_mode import no_grad
from fastcnn._validation import instance_of, integer
from fastcnn.nn.container import Sequential
from fastcnn.nn.conv import Conv2d
from fastcnn.nn.linear import Linear
from fastcnn.nn.module import Module

__all__ = ["LayerRow", "ModelSummary", "summary"]


@dataclass(frozen=True)
class LayerRow:
    """One call of one module in the summary's forward pass.

    ``params`` counts the module's parameters with its children's; ``mult_adds`` is the
    module's multiply-adds for the whole batch, with its children's (see ``summary``).
    """

    name: str  # dotted, as named_modules names it ("" for the model itself)
    type: str
    depth: int  # 0 for the model, 1 for its children, ...
    output_shape: tuple[int, ...]
    params: int
    mult_adds: int


class ModelSummary:
    """What ``summary`` returns: ``str()`` is the table; the numbers are attributes.

    Attributes
    ----------
    rows : list of LayerRow
        The model and every module it called, in the order called.
    input_shape : tuple of int
        The shape of the batch passed through, ``(batch_size, *input_shape)``.
    total_params, trainable_params : int
        Each parameter counted once, even if shared; trainable: ``requires_grad``.
    total_mult_adds : int
    """

    def __init__(self, rows: list[LayerRow], input_shape: tuple[int, ...], model: Module):
        self.rows = rows
        self.input_shape = input_shape
        params = list(model.parameters())  # each Parameter once (as PyTorch's)
        self.total_params = sum(int(p.data.size) for p in params)
        self.trainable_params = sum(int(p.data.size) for p in params if p.requires_grad)
        self.total_mult_adds = rows[0].mult_adds

    def __str__(self) -> str:
        cells = [("Layer (type)", "Output shape", "Param #", "Mult-adds")]
        for row in self.rows:
            label = row.name.rpartition(".")[2] + f" ({row.type})" if row.name else row.type
            shape = "[" + ", ".join(map(str, row.output_shape)) + "]"
            cells.append(("  " * row.depth + label, shape, f"{row.params:,}", f"{row.mult_adds:,}"))
        widths = [max(len(line[i]) for line in cells) for i in range(4)]

        def line(values: Sequence[str]) -> str:
            first, *rest = values
            return "  ".join(
                [first.ljust(widths[0])]
                + [v.rjust(w) for v, w in zip(rest, widths[1:], strict=True)]
            )

        rule = "=" * len(line(cells[0]))
        footer = [
            f"Input shape: [{', '.join(map(str, self.input_shape))}]",
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            f"Total mult-adds: {self.total_mult_adds:,}",
        ]
        body = [line(values) for values in cells[1:]]
        return "\n".join([rule, line(cells[0]), rule, *body, rule, *footer, rule])

    def __repr__(self) -> str:
        return (
            f"ModelSummary(layers={len(self.rows)}, total_params={self.total_params}, "
            f"total_mult_adds={self.total_mult_adds})"
        )


def _own_mult_adds(module: Module, output: Any) -> int:
    """A layer's multiply-adds for its output (its children's are added by the caller)."""
    size = int(np.size(output))
    if isinstance(module, Conv2d):  # each output element: in_channels/groups x kh x kw
        kh, kw = module.kernel_size
        return size * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, Linear):  # each output element: in_features
        return size * module.in_features
    return 0  # activations, pooling, normalisation, adds: not counted (as torchinfo)


class _Recorder:
    """Instance-level ``forward`` wrappers recording a row per call, removed afterwards."""

    def __init__(self, model: Module) -> None:
        self.names: dict[int, str] = {}
        for name, module in model.named_modules():
            self.names.setdefault(id(module), name)
        self.modules = list(model.modules())
        self.rows: list[dict[str, Any]] = []
        self.children_stack: list[list[dict[str, Any]]] = [[]]

    def __enter__(self) -> _Recorder:
        # What a forward pass changes besides the output: each module's backward cache
        # (and an instance forward, if one was set), put back on exit.
        kept = ("_ctx", "forward")
        self.saved: list[tuple[Module, dict[str, Any]]] = [
            (m, {k: m.__dict__[k] for k in kept if k in m.__dict__}) for m in self.modules
        ]
        for module in self.modules:
            module.__dict__["forward"] = self._wrap(module)
        return self

    def __exit__(self, *exc: object) -> None:
        for module, values in self.saved:
            module.__dict__.pop("forward", None)
            module.__dict__.update(values)

    def _wrap(self, module: Module) -> Callable[..., Any]:
        original = module.forward
        if type(module).forward is Sequential.forward:

            def original(x: Any) -> Any:  # layer by layer, not the compiled eval pass
                for child in module.children():
                    x = child(x)
                return x

        def forward(*args: Any, **kwargs: Any) -> Any:
            row: dict[str, Any] = {"module": module, "depth": len(self.children_stack) - 1}
            self.rows.append(row)
            self.children_stack[-1].append(row)
            self.children_stack.append([])
            try:
                output = original(*args, **kwargs)
            finally:
                children = self.children_stack.pop()
            row["output_shape"] = tuple(int(n) for n in np.shape(output))
            own = _own_mult_adds(module, output)
            row["mult_adds"] = own + sum(child["mult_adds"] for child in children)
            return output

        return forward

    def layer_rows(self) -> list[LayerRow]:
        return [
            LayerRow(
                name=self.names[id(row["module"])],
                type=type(row["module"]).__name__,
                depth=row["depth"],
                output_shape=row["output_shape"],
                params=sum(int(p.data.size) for p in row["module"].parameters()),
                mult_adds=row["mult_adds"],
            )
            for row in self.rows
        ]


def _input_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, (int, np.integer)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            "summary: input_shape must be a tuple of ints without the batch, such as "
            f"(1, 28, 28), got {type(input_shape).__name__} {input_shape!r}"
        )
    return tuple(integer(n, "each of input_shape", "summary", minimum=1) for n in input_shape)


def summary(model: Module, input_shape: Sequence[int], batch_size: int = 1) -> ModelSummary:
    """A table of ``model``'s layers for a batch of ``input_shape`` images.

    Runs one forward pass on zeros of shape ``(batch_size, *input_shape)`` (in the dtype of
    the model's parameters), layer by layer, in eval mode under ``no_grad``; the model is
    left as it was (training flag, running statistics, random generators, what an earlier
    forward saved for ``backward``).

    Parameters
    ----------
    model : Module
    input_shape : tuple of int
        One input without the batch, e.g. ``(1, 28, 28)``.
    batch_size : int, default 1

    Returns
    -------
    ModelSummary
        ``print(summary(...))`` shows one row per module call (children indented under
        their container) with its output shape, parameter count and multiply-adds, then the
        total and trainable parameter counts and the total multiply-adds. Multiply-adds are
        for the whole batch: a ``Conv2d`` has ``out elements x in_channels/groups x kh x kw``,
        a ``Linear`` ``out elements x in_features`` (biases not counted); every other layer
        0. A container's row sums its children's.

    Raises
    ------
    TypeError, ValueError
        A bad ``model``, ``input_shape`` or ``batch_size``; an input the model cannot take
        raises the error of the layer that refuses it (e.g. LeNet5's first Linear on a
        32x32 image of a 28x28 model).

    >>> import fastcnn
    >>> fastcnn.summary(fastcnn.models.LeNet5(), (1, 28, 28)).total_params
    61706
    """
    instance_of(model, "model", "summary", Module, "a fastcnn.nn.Module")
    shape = (integer(batch_size, "batch_size", "summary", minimum=1), *_input_shape(input_shape))
    parameter = next(iter(model.parameters()), None)
    dtype = np.float32 if parameter is None else parameter.data.dtype
    modes = [(module, module.training) for module in model.modules()]  # each its own
    model.eval()
    try:
        with no_grad(), _Recorder(model) as recorder:
            model(np.zeros(shape, dtype))
    finally:
        for module, training in modes:
            module.training = training
    return ModelSummary(recorder.layer_rows(), shape, model)
