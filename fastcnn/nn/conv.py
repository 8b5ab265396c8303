"""Conv2d: the layer over the convolution plan (fastcnn/_conv_plan.py), as
``fastcnn.functional.conv2d`` is; the layer keeps its weight's packed layouts between calls."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastcnn import _conv_plan
from fastcnn._grad_mode import is_grad_enabled
from fastcnn._validation import (
    conv_groups,
    flag,
    float_dtype,
    generator,
    grad_like,
    image_input,
    non_negative_pair,
    positive_int,
    positive_pair,
)
from fastcnn.nn import init
from fastcnn.nn.module import Module
from fastcnn.nn.parameter import Parameter

__all__ = ["Conv2d"]


class Conv2d(Module):
    """2-D convolution (cross-correlation, as PyTorch) over a batch of NCHW images.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0
        Zeros added on both sides of each spatial axis. "valid" is 0; "same" keeps H and W
        (stride 1 only, and an even ``dilation * (kernel_size - 1)`` on each axis: fastcnn
        pads both sides equally, where PyTorch pads the odd extra row at the bottom).
    dilation : int or (int, int), default 1
        Spacing between the kernel's taps (PyTorch's ``dilation``).
    groups : int, default 1
        Input and output channels split into ``groups`` groups, each output group
        convolving only its input group; in_channels and out_channels must be divisible
        by it. ``groups == in_channels`` is a depthwise convolution (out_channels a
        multiple of in_channels), run by a kernel of its own.
    bias : bool, default True
    rng : np.random.Generator or int, optional
        Draws the initial weights (PyTorch's default: ``kaiming_uniform_(a=sqrt(5))``, bias
        U(+-1/sqrt(fan_in))). The same seed gives the same weights.
    dtype : np.float32 (default) or np.float64
        Of the parameters; the input must have the same dtype.

    Attributes
    ----------
    weight : Parameter, shape (out_channels, in_channels // groups, kH, kW)
    bias : Parameter, shape (out_channels,), or None

    Shape
    -----
    Input (N, C_in, H, W), output (N, C_out, OH, OW) with::

        OH = floor((H + 2*padding[0] - dilation[0]*(kernel_size[0] - 1) - 1) / stride[0]) + 1
        OW = floor((W + 2*padding[1] - dilation[1]*(kernel_size[1] - 1) - 1) / stride[1]) + 1
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels", "Conv2d")
        self.out_channels = positive_int(out_channels, "out_channels", "Conv2d")
        self.kernel_size = positive_pair(kernel_size, "kernel_size", "Conv2d")
        self.stride = positive_pair(stride, "stride", "Conv2d")
        self.dilation = positive_pair(dilation, "dilation", "Conv2d")
        self.groups = conv_groups(groups, self.in_channels, self.out_channels, "Conv2d")
        self._padding_given = padding
        self.padding = self._resolve_padding(padding)
        bias = flag(bias, "bias", "Conv2d")
        dtype = float_dtype(dtype, "Conv2d")
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = Parameter(np.empty(shape, dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        self.reset_parameters(rng)

    def _resolve_padding(self, padding: int | tuple[int, int] | str) -> tuple[int, int]:
        """(pad_h, pad_w) from an int, a pair, "valid" or "same"."""
        if not isinstance(padding, str):
            return non_negative_pair(padding, "padding", "Conv2d")
        if padding not in ("same", "valid"):
            raise ValueError(
                f"Conv2d: Invalid padding string {padding!r}, should be one of "
                "{'same', 'valid'} (or ints)"
            )
        if padding == "valid":
            return (0, 0)
        if self.stride != (1, 1):
            raise ValueError(
                f"Conv2d: padding='same' is not supported for strided convolutions "
                f"(stride={self.stride}); give the padding as ints"
            )
        # PyTorch pads dilation*(k - 1) in all, the odd one at the end: equal sides if even
        total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
        if any(t % 2 for t in total):
            raise ValueError(
                f"Conv2d: padding='same' needs odd kernel sizes here (fastcnn pads both sides "
                f"equally, so dilation * (kernel_size - 1) must be even), got "
                f"kernel_size={self.kernel_size}, dilation={self.dilation}"
            )
        return (total[0] // 2, total[1] // 2)

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        """Redraw the weights with PyTorch's default initialisation."""
        init.reset_weight_and_bias(self.weight, self.bias, generator(rng, "Conv2d"))

    def forward(self, input: ArrayLike) -> NDArray[Any]:
        x = image_input(input, "Conv2d", self.weight.dtype, self.in_channels)
        plan = _conv_plan.plan_for(
            "Conv2d", x.shape, self.weight.shape, x.dtype, self.stride, self.padding,
            self.dilation, self.groups,
        )  # fmt: skip
        packs = _conv_plan.packs_for(self.weight, plan)
        bias = None if self.bias is None else self.bias.data
        # While training, keep the im2col matrices: backward then need not rebuild them.
        save_columns = self.training and is_grad_enabled()
        out, columns = plan.forward(x, self.weight.data, bias, packs, save_columns)
        self._save_for_backward(input=x, plan=plan, packs=packs, columns=columns)
        return out

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray[Any] | None:
        """Accumulate weight/bias gradients; return the input gradient (None if not
        ``input_grad``: the kernel then skips about half its work)."""
        saved = self._saved()
        x, plan = saved["input"], saved["plan"]
        input_grad = flag(input_grad, "input_grad", "Conv2d.backward")
        out_shape = (x.shape[0], self.out_channels, *plan.out_hw)
        grad = grad_like(grad_output, out_shape, x.dtype, "Conv2d")
        has_bias = self.bias is not None
        grad_x, grad_w, grad_b = plan.backward(
            grad, x, saved["packs"], input_grad, has_bias, saved["columns"]
        )
        accumulate_grads(self, grad_w, grad_b)
        return grad_x

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if isinstance(self._padding_given, str):
            text += f", padding={self._padding_given}"
        elif self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if self.bias is not None else ", bias=False")


def accumulate_grads(conv: Conv2d, grad_w: NDArray[Any], grad_b: NDArray[Any] | None) -> None:
    """Add a Conv2d's weight and bias gradients into their ``.grad`` (also the fused
    stage's: nn/_fusion.py)."""
    conv.weight.accumulate_grad(grad_w)
    if conv.bias is not None:
        conv.bias.accumulate_grad(grad_b)  # type: ignore[arg-type]  # None only without bias
