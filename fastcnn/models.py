"""Ready-made networks: LeNet-5, an improved LeNet-5, the NumPy book's SimpleConvNet, and
the CIFAR ResNet-20.

Each is a ``Sequential`` built from an ``OrderedDict``, so its state-dict keys
(``conv1.weight``, ``fc1.bias``, ...) are those of the same network written in PyTorch
as ``torch.nn.Sequential(OrderedDict(...))`` with the same names: a PyTorch state dict
loads with no key mapping.

Training step: ``loss = loss_fn(model(x), y)`` then ``model.backward(loss_fn.backward())``
fills every ``param.grad`` and returns None: as in PyTorch, where the input does not require
a gradient, the first convolution's input gradient is skipped (about half its backward
cost). ``model.backward(grad, input_grad=True)`` computes and returns it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastcnn import _ops, functional, nn
from fastcnn._validation import generator, grad_like, integer, positive_int, real
from fastcnn.nn import _fusion

__all__ = [
    "BasicBlock",
    "ImprovedLeNet5",
    "LeNet5",
    "MobileNetCIFAR",
    "ResNet20",
    "SimpleConvNet",
    "depthwise_separable",
]

# What every model takes as rng: a Generator, an int seed, or None (fresh entropy).
RngT = np.random.Generator | int | None

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "silu": nn.SiLU}

# LeNet-5's first convolution pads 28x28 input (MNIST) by 2 so it sees 32x32, the size of
# the original paper's input, which it takes unpadded.
_LENET_PADDING = {28: 2, 32: 0}


def _activation(name, owner):
    if name not in ACTIVATIONS:
        allowed = ", ".join(repr(key) for key in ACTIVATIONS)
        raise ValueError(f"{owner}: activation must be one of {allowed}, got {name!r}")
    return ACTIVATIONS[name]


class LeNet5(nn.Sequential):
    """LeNet-5 (LeCun et al., 1998) with max pooling and a modern activation.

    conv1 6@5x5 -> act1 -> pool1 2x2 -> conv2 16@5x5 -> act2 -> pool2 2x2 -> flatten ->
    fc1 400-120 -> act3 -> fc2 120-84 -> act4 -> fc3 84-num_classes (logits).

    Parameters
    ----------
    in_channels : int, default 1
    num_classes : int, default 10
    input_size : {28, 32}, default 28
        Height and width of the input; conv1 pads 28x28 input by 2 so both reach 5x5x16 = 400
        features before fc1.
    activation : {"relu", "sigmoid", "tanh", "silu"}, default "relu"
    rng : np.random.Generator or int, optional
        Draws every layer's initial weights in turn: the same seed gives the same model.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        activation: str = "relu",
        *,
        rng: RngT = None,
    ) -> None:
        in_channels, num_classes = _sizes(
            "LeNet5", in_channels=in_channels, num_classes=num_classes
        )
        if integer(input_size, "input_size", "LeNet5") not in _LENET_PADDING:
            raise ValueError(f"LeNet5: input_size must be 28 or 32, got {input_size!r}")
        act = _activation(activation, "LeNet5")
        rng = generator(rng, "LeNet5")
        super().__init__(
            OrderedDict(
                [
                    (
                        "conv1",
                        nn.Conv2d(in_channels, 6, 5, padding=_LENET_PADDING[input_size], rng=rng),
                    ),
                    ("act1", act()),
                    ("pool1", nn.MaxPool2d(2)),
                    ("conv2", nn.Conv2d(6, 16, 5, rng=rng)),
                    ("act2", act()),
                    ("pool2", nn.MaxPool2d(2)),
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(16 * 5 * 5, 120, rng=rng)),
                    ("act3", act()),
                    ("fc2", nn.Linear(120, 84, rng=rng)),
                    ("act4", act()),
                    ("fc3", nn.Linear(84, num_classes, rng=rng)),
                ]
            )
        )


class ImprovedLeNet5(nn.Sequential):
    """A LeNet-5 variant: three 3x3 convolutions (5, 10, 16 channels, padding 1), SiLU,
    and a 2x2 max-pool after each (28 -> 14 -> 7 -> 3), then fc1 144-120 -> fc2 120-84 ->
    fc3 84-num_classes (fc1 takes 16 * (input_size // 8)**2 features: 256 for 32x32).

    Parameters
    ----------
    in_channels : int, default 1
    num_classes : int, default 10
    input_size : int, default 28
        Height and width of the input, at least 8 (the notebook this model comes from
        resizes its images to 32x32).
    rng : np.random.Generator or int, optional
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        *,
        rng: RngT = None,
    ) -> None:
        in_channels, num_classes = _sizes(
            "ImprovedLeNet5", in_channels=in_channels, num_classes=num_classes
        )
        input_size = integer(input_size, "input_size", "ImprovedLeNet5")
        if input_size < 8:
            raise ValueError(
                f"ImprovedLeNet5: input_size must be at least 8 (three 2x2 pools), got {input_size}"
            )
        side = input_size // 8  # after the three pools
        rng = generator(rng, "ImprovedLeNet5")
        layers = []
        for i, (c_in, c_out) in enumerate([(in_channels, 5), (5, 10), (10, 16)], start=1):
            layers += [
                (f"conv{i}", nn.Conv2d(c_in, c_out, 3, padding=1, rng=rng)),
                (f"act{i}", nn.SiLU()),
                (f"pool{i}", nn.MaxPool2d(2)),
            ]
        layers += [
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(16 * side * side, 120, rng=rng)),
            ("act4", nn.SiLU()),
            ("fc2", nn.Linear(120, 84, rng=rng)),
            ("act5", nn.SiLU()),
            ("fc3", nn.Linear(84, num_classes, rng=rng)),
        ]
        super().__init__(OrderedDict(layers))


class SimpleConvNet(nn.Sequential):
    """The NumPy book's (Saito, *Deep Learning from Scratch*, ch. 7) SimpleConvNet:
    conv1 -> relu1 -> pool1 2x2 -> flatten -> fc1 -> relu2 -> fc2.

    Parameters
    ----------
    input_dim : (C, H, W), default (1, 28, 28)
    filter_num, filter_size, pad, stride : int
        conv1's output channels, kernel size, padding and stride (the book's conv_param).
    hidden_size : int, default 100
    output_size : int, default 10
    weight_init_std : float, optional
        The book's initialisation: weights ``weight_init_std * N(0, 1)`` and zero biases
        (it uses 0.01). Default: PyTorch's initialisation, as every fastcnn layer.
    rng : np.random.Generator or int, optional
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        filter_num: int = 30,
        filter_size: int | tuple[int, int] = 5,
        pad: int | tuple[int, int] = 0,
        stride: int | tuple[int, int] = 1,
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: float | None = None,
        *,
        rng: RngT = None,
    ) -> None:
        channels, height, width = _input_dim(input_dim)
        filter_num, hidden_size, output_size = _sizes(
            "SimpleConvNet", filter_num=filter_num, hidden_size=hidden_size, output_size=output_size
        )
        if weight_init_std is not None:
            weight_init_std = real(weight_init_std, "weight_init_std", "SimpleConvNet", low=0)
        rng = generator(rng, "SimpleConvNet")
        conv = nn.Conv2d(channels, filter_num, filter_size, stride, pad, rng=rng)
        geometry = zip((height, width), conv.kernel_size, conv.stride, conv.padding, strict=True)
        conv_hw = [functional.output_size(*axis) for axis in geometry]
        if min(conv_hw) < 2:
            raise ValueError(
                f"SimpleConvNet: the convolution's output {tuple(conv_hw)} is too small for "
                f"a 2x2 pool; use a larger input_dim than {input_dim} or a smaller filter_size"
            )
        pool_features = filter_num * (conv_hw[0] // 2) * (conv_hw[1] // 2)
        super().__init__(
            OrderedDict(
                [
                    ("conv1", conv),
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(2)),
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(pool_features, hidden_size, rng=rng)),
                    ("relu2", nn.ReLU()),
                    ("fc2", nn.Linear(hidden_size, output_size, rng=rng)),
                ]
            )
        )
        if weight_init_std is not None:
            for layer in (self.conv1, self.fc1, self.fc2):
                nn.init.normal_(layer.weight, 0.0, weight_init_std, rng=rng)
                nn.init.zeros_(layer.bias)


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al., 2016), torchvision's names: conv1 3x3 (stride) ->
    bn1 -> relu -> conv2 3x3 -> bn2, plus the shortcut (``downsample``: a strided 1x1
    conv and a BatchNorm where the shape changes, else the identity), then relu.

    Written as any block with two paths is: ``forward`` calls the layers, ``backward``
    calls their backwards in the reverse order and adds the two paths' input gradients.
    The last ReLU is applied with the sum, ``relu(out + identity)`` in one pass on
    fastcnn's threads (``functional.add_relu``; NumPy's sum is one thread and the ReLU a
    second pass), and its gradient is taken from that output here. bn1 and relu run as one
    BatchNorm pass with the ReLU in it, as a Sequential runs them (``nn._fusion``), with
    the same bits.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, rng: RngT = None) -> None:
        super().__init__()
        rng = generator(rng, "BasicBlock")
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False, rng=rng)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False, rng=rng)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            projection = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False, rng=rng)
            self.downsample = nn.Sequential(projection, nn.BatchNorm2d(planes))

    def forward(self, x: ArrayLike) -> NDArray:
        bn1_relu = self._bn1_relu()
        out = bn1_relu(self.conv1(x))
        out = self.bn2(self.conv2(out))
        identity = np.asarray(x) if self.downsample is None else self.downsample(x)
        out = _ops.add_relu(out, identity)
        self._save_for_backward(output=out, bn1_relu=bn1_relu)
        return out

    def _bn1_relu(self) -> _fusion.BatchNormReLU | _Chain:
        """bn1 then relu, fused unless either was replaced by another kind of layer; a
        new stage each call, which keeps that call's values (a block used twice in one
        pass backs through both)."""
        if _fusion.norm_relu_fusable(self.bn1, self.relu):
            return _fusion.BatchNormReLU(self.bn1, self.relu)
        return _Chain(self.bn1, self.relu)

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> NDArray | None:
        saved = self._saved()
        output = saved["output"]
        grad = grad_like(grad_output, output.shape, output.dtype, "BasicBlock")
        grad = _ops.relu_backward(grad, output)  # the ReLU applied with the sum
        # Any: each backward returns an array here (input_grad=True), or None with the
        # caller's input_grad=False, which is then returned
        grad_identity: Any = grad
        if self.downsample is not None:
            grad_identity = self.downsample.backward(grad, input_grad=input_grad)
        grad_body: Any = self.bn2.backward(grad)
        grad_body = self.conv2.backward(grad_body)
        grad_body = saved["bn1_relu"].backward(grad_body, input_grad=True)
        grad_body = self.conv1.backward(grad_body, input_grad=input_grad)
        if not input_grad:
            return None
        return _ops.add(grad_body, grad_identity)


class _Chain:
    """Modules called one after the other, backward in reverse: BasicBlock's bn1 -> relu
    where they cannot be fused."""

    def __init__(self, *modules: nn.Module) -> None:
        self.modules = modules

    def __call__(self, x: ArrayLike) -> Any:
        for module in self.modules:
            x = module(x)
        return x

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> Any:
        grad: Any = grad_output
        for module in reversed(self.modules):
            grad = module.backward(grad)
        return grad


class ResNet20(nn.Sequential):
    """The CIFAR ResNet-20 of He et al. (2016), with torchvision's ResNet names.

    conv1 3x3 16 filters (no bias) -> bn1 -> relu -> layer1, layer2, layer3 (three
    ``BasicBlock`` each, 16, 32 and 64 channels; stride 2 at the first block of layer2 and
    layer3, whose shortcut is then a 1x1 projection) -> avgpool (global) -> flatten -> fc.
    The state-dict keys are torchvision's (``conv1.weight``, ``layer1.0.bn1.running_mean``,
    ``layer2.0.downsample.0.weight``, ``fc.bias``): the same network written in PyTorch
    loads it unchanged, and back. Takes any input of at least 8x8 pixels (32x32 CIFAR
    images; MNIST as 28x28 or padded to 32x32).

    Parameters
    ----------
    num_classes : int, default 10
    in_channels : int, default 3
    rng : np.random.Generator or int, optional
        Draws every layer's initial weights in turn.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, *, rng: RngT = None) -> None:
        num_classes, in_channels = _sizes(
            "ResNet20", num_classes=num_classes, in_channels=in_channels
        )
        rng = generator(rng, "ResNet20")
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", nn.Conv2d(in_channels, 16, 3, padding=1, bias=False, rng=rng)),
            ("bn1", nn.BatchNorm2d(16)),
            ("relu", nn.ReLU()),
        ]
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64), start=1):
            blocks = []
            for index in range(3):
                stride = 2 if stage > 1 and index == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, rng=rng))
                in_planes = planes
            layers.append((f"layer{stage}", nn.Sequential(*blocks)))
        layers += [
            ("avgpool", nn.AdaptiveAvgPool2d((1, 1))),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(64, num_classes, rng=rng)),
        ]
        super().__init__(OrderedDict(layers))
        for module in self.modules():  # torchvision's initialisation of ResNet
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", rng=rng)


def depthwise_separable(
    in_channels: int, out_channels: int, stride: int = 1, *, rng: RngT = None
) -> nn.Sequential:
    """MobileNet's block (Howard et al., 2017): a depthwise 3x3 convolution (one filter per
    channel, ``groups=in_channels``; ``stride``) -> BatchNorm -> ReLU, then a pointwise 1x1
    convolution to ``out_channels`` -> BatchNorm -> ReLU. Its keys: ``0`` (depthwise
    weight), ``1``, ``3`` (pointwise), ``4``."""
    rng = generator(rng, "depthwise_separable")
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False, rng=rng),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, 1, bias=False, rng=rng),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


# (out_channels, stride) of MobileNetCIFAR's blocks: 32x32 -> 16 -> 8 -> 4
_MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))


class MobileNetCIFAR(nn.Sequential):
    """A small MobileNet (Howard et al., 2017) for 32x32 images: a 3x3 stem of 32 filters
    (BatchNorm, ReLU), six ``depthwise_separable`` blocks (64, 128, 128, 256, 256 and 512
    channels; stride 2 at the second, fourth and sixth: 32 -> 4 pixels), global average
    pooling, and ``fc`` to the classes: 274,250 parameters. Keys ``conv1``, ``bn1``,
    ``layers.0.0.weight``, ..., ``fc``.

    Parameters
    ----------
    num_classes : int, default 10
    in_channels : int, default 3
    rng : np.random.Generator or int, optional
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, *, rng: RngT = None) -> None:
        num_classes, in_channels = _sizes(
            "MobileNetCIFAR", num_classes=num_classes, in_channels=in_channels
        )
        rng = generator(rng, "MobileNetCIFAR")
        blocks = []
        channels = 32
        for out_channels, stride in _MOBILENET_BLOCKS:
            blocks.append(depthwise_separable(channels, out_channels, stride, rng=rng))
            channels = out_channels
        super().__init__(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_channels, 32, 3, padding=1, bias=False, rng=rng)),
                    ("bn1", nn.BatchNorm2d(32)),
                    ("relu", nn.ReLU()),
                    ("layers", nn.Sequential(*blocks)),
                    ("avgpool", nn.AdaptiveAvgPool2d((1, 1))),
                    ("flatten", nn.Flatten()),
                    ("fc", nn.Linear(channels, num_classes, rng=rng)),
                ]
            )
        )


def _sizes(owner, **sizes):
    """Each size checked as a positive int here, so the message names the model's argument
    (``num_classes``) rather than the layer's (``Linear: out_features``)."""
    return tuple(positive_int(value, name, owner) for name, value in sizes.items())


def _input_dim(input_dim):
    if not isinstance(input_dim, (tuple, list)):
        raise TypeError(
            "SimpleConvNet: input_dim must be a tuple (channels, height, width), got "
            f"{type(input_dim).__name__} {input_dim!r}"
        )
    if len(input_dim) != 3:
        raise ValueError(
            f"SimpleConvNet: input_dim must be (channels, height, width), got {input_dim!r}"
        )
    return tuple(positive_int(v, "input_dim", "SimpleConvNet") for v in input_dim)
