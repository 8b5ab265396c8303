"""Layers, losses and containers with PyTorch's names: ``fastcnn.nn`` mirrors ``torch.nn``.

Every module has ``forward`` and an explicit ``backward(grad_output, input_grad=True)``
(there is no autograd); see ``Module``.
"""

from fastcnn.nn import init, utils
from fastcnn.nn.activation import (
    ELU,
    GELU,
    Hardswish,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from fastcnn.nn.batchnorm import BatchNorm1d, BatchNorm2d
from fastcnn.nn.container import Concat, ModuleDict, ModuleList, Residual, Sequential
from fastcnn.nn.conv import Conv2d
from fastcnn.nn.dropout import Dropout, Dropout2d
from fastcnn.nn.flatten import Flatten
from fastcnn.nn.linear import Identity, Linear
from fastcnn.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from fastcnn.nn.module import Module
from fastcnn.nn.normalization import GroupNorm, LayerNorm
from fastcnn.nn.parameter import Parameter
from fastcnn.nn.pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool2d",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Concat",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Dropout2d",
    "ELU",
    "Flatten",
    "GELU",
    "GroupNorm",
    "Hardswish",
    "Identity",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "ModuleDict",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Residual",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "init",
    "utils",
]
