"""Runs of layers inside a Sequential, run as one fused kernel.

``Sequential`` splits its modules into stages: each run of exactly ``Conv2d``, ``ReLU``,
``MaxPool2d`` becomes one ``ConvReLUMaxPool`` stage, each ``BatchNorm1d`` or
``BatchNorm2d`` followed by a ``ReLU`` one ``BatchNormReLU`` stage, every other module is a
stage of its own.
- ``ConvReLUMaxPool`` calls ``functional.conv2d_relu_max_pool2d``, which keeps each image's
  convolution output in cache instead of writing the whole activation to memory three
  times (measured on LeNet-5: see bench/README.md).
- ``BatchNormReLU`` has the BatchNorm kernels apply the ReLU in their last pass, forward
  and backward, sparing the ReLU's own passes over memory (MobileNet's blocks and
  ResNet-20's stem are BatchNorm -> ReLU).

Each gives the bits of its layers run one by one: outputs, gradients and ``.grad`` are
identical, fused or not. The modules keep their parameters, state-dict keys and repr;
only their individual ``backward`` is unavailable after a fused forward (the
Sequential's backward is the one to call).

Subclasses are never fused: they may override forward or backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from numpy.typing import ArrayLike, NDArray

from fastcnn import _conv_plan
from fastcnn._grad_mode import is_grad_enabled
from fastcnn._validation import grad_like, image_input, window_output_hw
from fastcnn.nn.activation import ReLU
from fastcnn.nn.batchnorm import BatchNorm1d, BatchNorm2d, _BatchNorm
from fastcnn.nn.conv import Conv2d, accumulate_grads
from fastcnn.nn.module import Module
from fastcnn.nn.pooling import MaxPool2d

FUSED_PATTERN = (Conv2d, ReLU, MaxPool2d)

_UNFUSED_BACKWARD = (
    "the last forward ran this layer fused with its neighbours (Conv2d -> ReLU -> "
    "MaxPool2d) inside a Sequential: call that Sequential's backward"
)
_UNFUSED_NORM_BACKWARD = (
    "the last forward ran this layer fused with its neighbour (BatchNorm -> ReLU) inside a "
    "Sequential: call that Sequential's backward"
)


class ConvReLUMaxPool:
    """One stage: a Conv2d, the ReLU and the MaxPool2d after it, forward and backward."""

    def __init__(self, conv: Conv2d, relu: ReLU, pool: MaxPool2d) -> None:
        self.modules = (conv, relu, pool)
        # (x, plan, packs, out, indices, columns) of the last call; None before one
        self.saved: Any = None
        # ConvPlan -> PoolPlan over its output
        self._pool_plans: dict[_conv_plan.ConvPlan, _conv_plan.PoolPlan] = {}

    def _pool_plan(self, plan: _conv_plan.ConvPlan) -> _conv_plan.PoolPlan:
        pool_plan = self._pool_plans.get(plan)
        if pool_plan is None:
            pool = self.modules[2]
            kernel, stride, padding = pool.kernel_size, pool.stride, pool.padding
            out_hw = window_output_hw("MaxPool2d", plan.out_hw, kernel, stride, padding)
            pool_plan = _conv_plan.pool_plan(kernel, stride, padding, out_hw)
            self._pool_plans = {plan: pool_plan}  # the plan of the last batch shape
        return pool_plan

    def __call__(self, input: ArrayLike) -> NDArray[Any]:
        conv = self.modules[0]
        x = image_input(input, "Conv2d", conv.weight.dtype, conv.in_channels)
        plan = _conv_plan.plan_for(
            "Conv2d", x.shape, conv.weight.shape, x.dtype, conv.stride, conv.padding
        )
        packs = _conv_plan.packs_for(conv.weight, plan)
        bias = None if conv.bias is None else conv.bias.data
        out, indices, columns = plan.forward_relu_max_pool(
            self._pool_plan(plan),
            x,
            conv.weight.data,
            bias,
            packs,
            conv.training and is_grad_enabled(),  # the columns, for backward
        )
        self.saved = (x, plan, packs, out, indices, columns)
        for module in self.modules:
            module._backward_unavailable(_UNFUSED_BACKWARD)
        return out

    def backward(self, grad_output: ArrayLike, input_grad: bool) -> NDArray[Any] | None:
        conv = self.modules[0]
        x, plan, packs, out, indices, columns = self.saved
        grad = grad_like(grad_output, out.shape, x.dtype, "MaxPool2d")
        grad_x, grad_w, grad_b = plan.backward_relu_max_pool(
            grad, out, indices, x, packs, input_grad, conv.bias is not None, columns
        )
        accumulate_grads(conv, grad_w, grad_b)
        return grad_x


class BatchNormReLU:
    """One stage: a BatchNorm1d or BatchNorm2d and the ReLU after it, forward and backward."""

    def __init__(self, norm: _BatchNorm, relu: ReLU) -> None:
        self.modules = (norm, relu)
        self.saved: Any = None  # what the BatchNorm's last call saved; None before one

    def __call__(self, input: ArrayLike) -> NDArray[Any]:
        out, self.saved = self.modules[0]._normalise(input, relu=True)
        for module in self.modules:
            module._backward_unavailable(_UNFUSED_NORM_BACKWARD)
        return out

    def backward(self, grad_output: ArrayLike, input_grad: bool) -> NDArray[Any] | None:
        return self.modules[0]._backward(self.saved, grad_output, input_grad)


def norm_relu_fusable(*pair: Module) -> bool:
    """True for exactly a BatchNorm1d or BatchNorm2d and then a ReLU (not subclasses)."""
    return tuple(type(m) for m in pair) in ((BatchNorm2d, ReLU), (BatchNorm1d, ReLU))


# what Sequential runs: a fused stage or a module of its own
FusedStage = ConvReLUMaxPool | BatchNormReLU
Stage = Module | FusedStage


def stages(modules: Sequence[Module]) -> list[Stage]:
    """The modules as a list of stages, each callable with a ``backward`` like a module's."""
    result: list[Stage] = []
    i = 0
    while i < len(modules):
        run = tuple(type(m) for m in modules[i : i + len(FUSED_PATTERN)])
        if run == FUSED_PATTERN and modules[i].groups == 1 and modules[i].dilation == (1, 1):
            # the run's types are FUSED_PATTERN's, checked just above
            result.append(ConvReLUMaxPool(*modules[i : i + len(FUSED_PATTERN)]))  # type: ignore[arg-type]
            i += len(FUSED_PATTERN)
        elif norm_relu_fusable(*modules[i : i + 2]):
            result.append(BatchNormReLU(*modules[i : i + 2]))  # type: ignore[arg-type]
            i += 2
        else:
            result.append(modules[i])
            i += 1
    return result
