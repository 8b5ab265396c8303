"""Bad arguments to every layer, loss and model: the exception type and its message
(which names the offending value and the fix), one table row per case."""

import numpy as np
import pytest

from fastcnn import models, nn

F32 = np.float32


def _x(*shape, dtype=F32):
    return np.ones(shape, dtype=dtype)


CONSTRUCTORS = [
    (lambda: nn.Conv2d(0, 6, 5), ValueError, r"Conv2d: in_channels must be positive, got 0"),
    (lambda: nn.Conv2d(1.5, 6, 5), TypeError, r"Conv2d: in_channels must be an int, got float"),
    (lambda: nn.Conv2d(1, True, 5), TypeError, r"Conv2d: out_channels must be an int, got bool"),
    (lambda: nn.Conv2d(1, 6, 0), ValueError, r"Conv2d: kernel_size must be positive, got 0"),
    (
        lambda: nn.Conv2d(1, 6, (3, 3, 3)),
        TypeError,
        r"Conv2d: kernel_size must be an int or a pair of ints, got \(3, 3, 3\)",
    ),
    (
        lambda: nn.Conv2d(1, 6, 3, stride=(1, 0)),
        ValueError,
        r"Conv2d: stride must be positive, got \(1, 0\)",
    ),
    (lambda: nn.Conv2d(1, 6, 3, padding=-1), ValueError, r"Conv2d: padding must be >= 0"),
    (
        lambda: nn.Conv2d(1, 6, 3, padding=1.5),
        TypeError,
        r"Conv2d: padding must be an int or a pair of ints, got 1.5",
    ),
    (
        lambda: nn.Conv2d(1, 6, 3, padding="full"),
        ValueError,
        r"Conv2d: Invalid padding string 'full', should be one of \{'same', 'valid'\}",
    ),
    (
        lambda: nn.Conv2d(1, 6, 3, stride=2, padding="same"),
        ValueError,
        r"Conv2d: padding='same' is not supported for strided convolutions \(stride=\(2, 2\)\)",
    ),
    (
        lambda: nn.Conv2d(1, 6, (3, 4), padding="same"),
        ValueError,
        r"Conv2d: padding='same' needs odd kernel sizes here .* got kernel_size=\(3, 4\)",
    ),
    (
        lambda: nn.Conv2d(4, 6, 3, groups=3),
        ValueError,
        r"Conv2d: in_channels must be divisible by groups, got in_channels=4 and groups=3",
    ),
    (
        lambda: nn.Conv2d(4, 6, 3, groups=4),
        ValueError,
        r"Conv2d: out_channels must be divisible by groups, got out_channels=6 and groups=4",
    ),
    (lambda: nn.Conv2d(4, 4, 3, groups=0), ValueError, r"Conv2d: groups must be positive, got 0"),
    (
        lambda: nn.Conv2d(4, 4, 3, groups=2.0),
        TypeError,
        r"Conv2d: groups must be an int, got float 2.0",
    ),
    (
        lambda: nn.Conv2d(1, 6, 3, dilation=0),
        ValueError,
        r"Conv2d: dilation must be positive, got 0",
    ),
    (
        lambda: nn.Conv2d(1, 6, 3, dilation=(1, 2, 3)),
        TypeError,
        r"Conv2d: dilation must be an int or a pair of ints, got \(1, 2, 3\)",
    ),
    (
        lambda: nn.Conv2d(1, 6, (2, 3), dilation=(1, 2), padding="same"),
        ValueError,
        r"Conv2d: padding='same' needs .* got kernel_size=\(2, 3\), dilation=\(1, 2\)",
    ),
    (
        lambda: nn.Conv2d(1, 6, 3, dtype=np.int32),
        TypeError,
        r"Conv2d: dtype must be np.float32 or np.float64, got int32",
    ),
    (
        lambda: nn.Conv2d(1, 6, 3, rng="seed"),
        TypeError,
        r"Conv2d: rng must be a np.random.Generator, an int seed or None, got str",
    ),
    (lambda: nn.Linear(0, 3), ValueError, r"Linear: in_features must be positive, got 0"),
    (lambda: nn.Linear(3, 2.0), TypeError, r"Linear: out_features must be an int, got float"),
    (
        lambda: nn.Linear(3, 2, dtype="float16"),
        TypeError,
        r"Linear: dtype must be np.float32 or np.float64, got float16",
    ),
    (lambda: nn.MaxPool2d(0), ValueError, r"MaxPool2d: kernel_size must be positive, got 0"),
    (lambda: nn.MaxPool2d(2, stride=0), ValueError, r"MaxPool2d: stride must be positive"),
    (
        lambda: nn.MaxPool2d(2, padding=2),
        ValueError,
        r"MaxPool2d: padding \(2, 2\) must be at most half the kernel size \(2, 2\)",
    ),
    (
        lambda: nn.AvgPool2d(2.0),
        TypeError,
        r"AvgPool2d: kernel_size must be an int or a pair of ints, got 2.0",
    ),
    (
        lambda: nn.AvgPool2d(3, padding=(0, 2)),
        ValueError,
        r"AvgPool2d: padding \(0, 2\) must be at most half",
    ),
    (lambda: nn.Flatten(start_dim=1.0), TypeError, r"Flatten: start_dim must be an int"),
    (lambda: nn.Softmax(dim=None), TypeError, r"Softmax: dim must be an int, got NoneType"),
    (
        lambda: nn.Dropout(1.5),
        ValueError,
        r"Dropout: p must be a number in \[0, 1\], got 1.5",
    ),
    (lambda: nn.Dropout(-0.1), ValueError, r"Dropout: p must be a number in \[0, 1\], got -0.1"),
    (lambda: nn.Dropout("0.5"), TypeError, r"Dropout: p must be a real number, got str '0.5'"),
    (lambda: nn.Dropout(rng=1.5), TypeError, r"Dropout: rng must be a np.random.Generator"),
    (
        lambda: nn.Dropout2d(2),
        ValueError,
        r"Dropout2d: p must be a number in \[0, 1\], got 2.0",
    ),
    (
        lambda: nn.Dropout2d(inplace="yes"),
        TypeError,
        r"Dropout2d: inplace must be True or False, got 'yes'",
    ),
    (lambda: nn.Dropout2d(rng=0.5), TypeError, r"Dropout2d: rng must be a np.random.Generator"),
    (
        lambda: nn.LeakyReLU("0.1"),
        TypeError,
        r"LeakyReLU: negative_slope must be a real number, got str '0.1'",
    ),
    (
        lambda: nn.LeakyReLU(float("inf")),
        ValueError,
        r"LeakyReLU: negative_slope must be a finite number, got inf",
    ),
    (
        lambda: nn.LeakyReLU(0.1, inplace=1),
        TypeError,
        r"LeakyReLU: inplace must be True or False, got 1",
    ),
    (lambda: nn.ELU(alpha=None), TypeError, r"ELU: alpha must be a real number, got NoneType"),
    (lambda: nn.ELU(alpha=float("nan")), ValueError, r"ELU: alpha must be a number, got nan"),
    (
        lambda: nn.GELU(approximate="exact"),
        ValueError,
        r"GELU: approximate must be 'none' or 'tanh', got 'exact'",
    ),
    (
        lambda: nn.GELU(approximate=None),
        TypeError,
        r"GELU: approximate must be 'none' or 'tanh', got NoneType",
    ),
    (
        lambda: nn.Hardswish(inplace="no"),
        TypeError,
        r"Hardswish: inplace must be True or False, got 'no'",
    ),
    (
        lambda: nn.ModuleList([nn.ReLU(), np.ones(2)]),
        TypeError,
        r"ModuleList: ndarray is not a Module subclass",
    ),
    (
        lambda: nn.ModuleList(nn.ReLU()),
        TypeError,
        r"ModuleList.extend should be called with an iterable, but got ReLU",
    ),
    (lambda: nn.ModuleList([nn.ReLU()])["0"], TypeError, r"ModuleList indices must be integers"),
    (
        lambda: nn.ModuleList([nn.ReLU()])[1],
        IndexError,
        r"index 1 is out of range for a ModuleList of 1",
    ),
    (
        lambda: nn.ModuleList()(np.ones(2)),
        NotImplementedError,
        r'Module \[ModuleList\] is missing the required "forward" function',
    ),
    (
        lambda: nn.ModuleDict({"a": nn.ReLU()})["b"],
        KeyError,
        r"ModuleDict has no module 'b'; its keys are \['a'\]",
    ),
    (lambda: nn.ModuleDict({1: nn.ReLU()}), TypeError, r"module name must be a str, got int"),
    (
        lambda: nn.ModuleDict({"a.b": nn.ReLU()}),
        KeyError,
        r"module name can.+t be empty or contain",
    ),
    (
        lambda: nn.ModuleDict({"keys": nn.ReLU()}),
        KeyError,
        r"attribute 'keys' already exists \(a ModuleDict method\)",
    ),
    (
        lambda: nn.ModuleDict({"a": "relu"}),
        TypeError,
        r"ModuleDict: str is not a Module subclass",
    ),
    (
        lambda: nn.ModuleDict([("a", nn.ReLU(), 1)]),
        ValueError,
        r"ModuleDict update sequence element #0 has length 3; 2 is required",
    ),
    (
        lambda: nn.ModuleDict([nn.ReLU()]),
        TypeError,
        r"ModuleDict update sequence element #0 should be Iterable; is ReLU",
    ),
    (
        lambda: nn.ModuleDict()(np.ones(2)),
        NotImplementedError,
        r'Module \[ModuleDict\] is missing the required "forward" function',
    ),
    (lambda: nn.BatchNorm2d(0), ValueError, r"BatchNorm2d: num_features must be positive"),
    (
        lambda: nn.BatchNorm1d(3, eps=0),
        ValueError,
        r"BatchNorm1d: eps must be a number in \(0, inf\], got 0",
    ),
    (
        lambda: nn.BatchNorm2d(3, momentum=1.5),
        ValueError,
        r"BatchNorm2d: momentum must be a number in \[0, 1\], got 1.5",
    ),
    (
        lambda: nn.BatchNorm2d(3, momentum="0.1"),
        TypeError,
        r"BatchNorm2d: momentum must be a real number, got str '0.1'",
    ),
    (
        lambda: nn.GroupNorm(4, 6),
        ValueError,
        r"GroupNorm: num_channels \(6\) must be divisible by num_groups \(4\)",
    ),
    (lambda: nn.GroupNorm(0, 6), ValueError, r"GroupNorm: num_groups must be positive, got 0"),
    (lambda: nn.GroupNorm(2, 6.0), TypeError, r"GroupNorm: num_channels must be an int, got float"),
    (
        lambda: nn.GroupNorm(2, 6, eps=0),
        ValueError,
        r"GroupNorm: eps must be a number in \(0, inf\]",
    ),
    (lambda: nn.GroupNorm(2, 6, affine=1), TypeError, r"GroupNorm: affine must be True or False"),
    (
        lambda: nn.LayerNorm(()),
        ValueError,
        r"LayerNorm: normalized_shape must have at least one dimension, got \(\)",
    ),
    (
        lambda: nn.LayerNorm(4.0),
        TypeError,
        r"LayerNorm: normalized_shape must be an int or a sequence of ints, got float 4.0",
    ),
    (
        lambda: nn.LayerNorm((3, 0)),
        ValueError,
        r"LayerNorm: normalized_shape must be positive, got 0",
    ),
    (
        lambda: nn.LayerNorm(4, elementwise_affine="yes"),
        TypeError,
        r"LayerNorm: elementwise_affine must be True or False, got 'yes'",
    ),
    (
        lambda: nn.LayerNorm(4, dtype=np.int64),
        TypeError,
        r"LayerNorm: dtype must be np.float32 or np.float64, got int64",
    ),
    (
        lambda: nn.AdaptiveAvgPool2d((2, 2, 2)),
        TypeError,
        r"AdaptiveAvgPool2d: output_size must be an int, None or a pair of them .* got "
        r"\(2, 2, 2\)",
    ),
    (
        lambda: nn.AdaptiveAvgPool2d(2.0),
        TypeError,
        r"AdaptiveAvgPool2d: output_size must be an int, None or a pair of them",
    ),
    (
        lambda: nn.AdaptiveMaxPool2d((2, -1)),
        ValueError,
        r"AdaptiveMaxPool2d: output_size must be >= 0, got \(2, -1\)",
    ),
    (
        lambda: nn.AdaptiveMaxPool2d(2, return_indices=1),
        TypeError,
        r"AdaptiveMaxPool2d: return_indices must be True or False, got 1",
    ),
    (
        lambda: nn.CrossEntropyLoss(reduction="elementwise"),
        ValueError,
        r"CrossEntropyLoss: reduction must be 'mean', 'sum' or 'none', got 'elementwise'",
    ),
    (
        lambda: nn.MSELoss(reduction="avg"),
        ValueError,
        r"MSELoss: reduction must be 'mean', 'sum' or 'none', got 'avg'",
    ),
    (
        lambda: nn.NLLLoss(reduction=None),
        ValueError,
        r"NLLLoss: reduction must be 'mean', 'sum' or 'none', got None",
    ),
    (
        lambda: nn.BCEWithLogitsLoss(reduction="batchmean"),
        ValueError,
        r"BCEWithLogitsLoss: reduction must be 'mean', 'sum' or 'none', got 'batchmean'",
    ),
    (
        lambda: nn.CrossEntropyLoss(weight=np.ones((2, 5))),
        ValueError,
        r"CrossEntropyLoss: weight must be 1-D \(one weight per class\), got shape \(2, 5\)",
    ),
    (
        lambda: nn.NLLLoss(weight=[1.0, np.nan]),
        ValueError,
        r"NLLLoss: weight must be finite, got array\(\[ 1., nan\]\)",
    ),
    (
        lambda: nn.CrossEntropyLoss(weight=["a", "b"]),
        TypeError,
        r"CrossEntropyLoss: weight must be an array of real numbers or None, got dtype <U1",
    ),
    (
        lambda: nn.CrossEntropyLoss(label_smoothing=1.5),
        ValueError,
        r"CrossEntropyLoss: label_smoothing must be a number in \[0, 1\], got 1.5",
    ),
    (
        lambda: nn.CrossEntropyLoss(label_smoothing=-0.1),
        ValueError,
        r"CrossEntropyLoss: label_smoothing must be a number in \[0, 1\], got -0.1",
    ),
    (
        lambda: nn.CrossEntropyLoss(label_smoothing=np.nan),
        ValueError,
        r"CrossEntropyLoss: label_smoothing must be a number in \[0, 1\], got nan",
    ),
    (
        lambda: nn.CrossEntropyLoss(label_smoothing="0.1"),
        TypeError,
        r"CrossEntropyLoss: label_smoothing must be a real number, got str '0.1'",
    ),
    (
        lambda: nn.CrossEntropyLoss(ignore_index=1.0),
        TypeError,
        r"CrossEntropyLoss: ignore_index must be an int, got float 1.0",
    ),
    (
        lambda: nn.BCEWithLogitsLoss(pos_weight=[np.inf]),
        ValueError,
        r"BCEWithLogitsLoss: pos_weight must be finite",
    ),
    (
        lambda: nn.BCEWithLogitsLoss(weight=np.array([True])),
        TypeError,
        r"BCEWithLogitsLoss: weight must be an array of real numbers or None, got dtype bool",
    ),
    (
        lambda: nn.LogSoftmax(dim="1"),
        TypeError,
        r"LogSoftmax: dim must be an int, got str '1'",
    ),
    (
        lambda: nn.init.kaiming_uniform_(np.zeros(3)),
        ValueError,
        r"Fan in and fan out can not be computed for tensor with fewer than 2 dimensions",
    ),
    (
        lambda: nn.init.kaiming_normal_(np.zeros((2, 2)), mode="fan_avg"),
        ValueError,
        r"Mode fan_avg not supported, please use one of fan_in, fan_out",
    ),
    (lambda: nn.init.calculate_gain("gelu"), ValueError, r"Unsupported nonlinearity gelu"),
    (
        lambda: nn.init.uniform_([1.0, 2.0]),
        TypeError,
        r"uniform_: expected a floating NumPy array or Parameter, got list",
    ),
    (
        lambda: nn.Parameter(np.arange(3)),
        TypeError,
        r"Parameter data must be a floating array, got dtype int64",
    ),
    (
        lambda: models.LeNet5(activation="gelu"),
        ValueError,
        r"LeNet5: activation must be one of 'relu', 'sigmoid', 'tanh', 'silu', got 'gelu'",
    ),
    (
        lambda: models.LeNet5(input_size=30),
        ValueError,
        r"LeNet5: input_size must be 28 or 32, got 30",
    ),
    (
        lambda: models.LeNet5(in_channels=0),
        ValueError,
        r"^LeNet5: in_channels must be positive, got 0",
    ),
    (lambda: models.LeNet5(rng="x"), TypeError, r"LeNet5: rng must be a np.random.Generator"),
    (
        lambda: models.ImprovedLeNet5(num_classes=0),
        ValueError,
        r"^ImprovedLeNet5: num_classes must be positive, got 0",
    ),
    (
        lambda: models.SimpleConvNet(input_dim=(28, 28)),
        ValueError,
        r"SimpleConvNet: input_dim must be \(channels, height, width\), got \(28, 28\)",
    ),
    (
        lambda: models.SimpleConvNet(input_dim=(1, 28, 0)),
        ValueError,
        r"SimpleConvNet: input_dim must be positive, got 0",
    ),
    (
        lambda: models.SimpleConvNet(input_dim=(1, 6, 6), filter_size=6),
        ValueError,
        r"SimpleConvNet: the convolution's output \(1, 1\) is too small for a 2x2 pool",
    ),
]


@pytest.mark.parametrize("make, error, match", CONSTRUCTORS)
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def _ce(logits, target):
    return nn.CrossEntropyLoss()(logits, target)


FORWARDS = [
    (
        nn.Conv2d(1, 6, 5),
        _x(2, 1, 8, 8, dtype=np.float64),
        TypeError,
        r"Conv2d: input is float64 but the layer's parameters are float32: pass "
        r"x.astype\(np.float32\) or convert the layer with .to\(np.float64\)",
    ),
    (
        nn.Conv2d(1, 6, 5, dtype=np.float64),
        _x(2, 1, 8, 8),
        TypeError,
        r"Conv2d: input is float32 but the layer's parameters are float64",
    ),
    (
        nn.Conv2d(1, 6, 5),
        np.ones((2, 1, 8, 8), np.uint8),
        TypeError,
        r"Conv2d: input has dtype uint8; fastcnn computes in float32 or float64 only",
    ),
    (
        nn.Conv2d(1, 6, 5),
        _x(1, 28, 28),
        ValueError,
        r"Conv2d: expected 4-D input, got shape \(1, 28, 28\) \(for one image, pass x\[None\]\)",
    ),
    (
        nn.Conv2d(1, 6, 5),
        _x(2, 3, 8, 8),
        ValueError,
        r"Conv2d expected input with 1 channels \(dim 1\), got shape \(2, 3, 8, 8\)",
    ),
    (
        nn.Conv2d(1, 6, 5),
        _x(2, 1, 4, 4),
        ValueError,
        r"Conv2d: kernel size \(5, 5\) is larger than the padded input \(4, 4\)",
    ),
    (
        nn.Linear(400, 120),
        _x(64, 256),
        ValueError,
        r"Linear expected input with 400 features \(last dim\), got shape \(64, 256\)",
    ),
    (
        nn.Linear(4, 2),
        _x(3, 4, dtype=np.float64),
        TypeError,
        r"Linear: input is float64 but the layer's parameters are float32",
    ),
    (nn.Linear(4, 2), np.float32(1.0), ValueError, r"Linear: input must have at least 1 dimension"),
    (nn.MaxPool2d(2), _x(4, 6), ValueError, r"MaxPool2d: expected 4-D input, got shape \(4, 6\)"),
    (
        nn.MaxPool2d(4),
        _x(1, 1, 3, 3),
        ValueError,
        r"MaxPool2d: kernel size \(4, 4\) is larger than the padded input",
    ),
    (
        nn.AvgPool2d(2),
        np.ones((1, 1, 4, 4), np.int64),
        TypeError,
        r"AvgPool2d: input has dtype int64",
    ),
    (
        nn.BatchNorm1d(3),
        _x(2, 3, 4, 4),
        ValueError,
        r"BatchNorm1d: expected 2-D or 3-D input, got shape \(2, 3, 4, 4\)",
    ),
    (
        nn.BatchNorm2d(3),
        _x(2, 4, 5, 5),
        ValueError,
        r"BatchNorm2d expected input with 3 channels \(dim 1\), got shape \(2, 4, 5, 5\)",
    ),
    (
        nn.BatchNorm1d(3),
        _x(1, 3),
        ValueError,
        r"BatchNorm1d: Expected more than 1 value per channel when training, got input size "
        r"\(1, 3\)",
    ),
    (
        nn.BatchNorm2d(3),
        _x(1, 3, 1, 1),  # the kernel's statistics need two values per channel
        ValueError,
        r"BatchNorm2d: Expected more than 1 value per channel when training, got input size "
        r"\(1, 3, 1, 1\)",
    ),
    (
        nn.BatchNorm2d(3),
        _x(0, 3, 4, 4),
        ValueError,
        r"BatchNorm2d: Expected more than 1 value per channel when training, got input size "
        r"\(0, 3, 4, 4\)",
    ),
    (
        nn.BatchNorm2d(3),
        _x(2, 3, 4, 4, dtype=np.float64),
        TypeError,
        r"BatchNorm2d: input is float64 but the layer's parameters are float32",
    ),
    (
        nn.GroupNorm(2, 4),
        _x(2, 6, 3, 3),
        ValueError,
        r"GroupNorm expected input with 4 channels \(dim 1\), got shape \(2, 6, 3, 3\)",
    ),
    (
        nn.GroupNorm(2, 6),
        _x(6),
        ValueError,
        r"GroupNorm: expected input of shape \(N, C, \*\) with at least 2 dimensions",
    ),
    (
        nn.GroupNorm(2, 6),
        _x(2, 6, dtype=np.float64),
        TypeError,
        r"GroupNorm: input is float64 but the layer's parameters are float32",
    ),
    (
        nn.LayerNorm((3, 4)),
        _x(2, 4, 3),
        ValueError,
        r"LayerNorm: given normalized_shape=\(3, 4\), expected input of shape \(\*, 3, 4\), "
        r"got shape \(2, 4, 3\)",
    ),
    (
        nn.LayerNorm((3, 4)),
        _x(4),
        ValueError,
        r"LayerNorm: given normalized_shape=\(3, 4\), .* got shape \(4,\)",
    ),
    (nn.LayerNorm(4), np.ones((2, 4), np.int32), TypeError, r"LayerNorm: input has dtype int32"),
    (
        nn.AdaptiveAvgPool2d(2),
        _x(3, 4),
        ValueError,
        r"AdaptiveAvgPool2d: expected 3-D or 4-D input, got shape \(3, 4\)",
    ),
    (
        nn.AdaptiveMaxPool2d(2),
        _x(2, 3, 0, 4),
        ValueError,
        r"AdaptiveMaxPool2d: input of shape \(2, 3, 0, 4\) has an empty channel or spatial",
    ),
    (
        nn.AdaptiveMaxPool2d(1),
        np.ones((2, 3, 4, 4), np.int32),
        TypeError,
        r"AdaptiveMaxPool2d: input has dtype int32",
    ),
    (
        nn.Flatten(2, 5),
        _x(2, 3, 4),
        IndexError,
        r"Flatten: Dimension out of range \(expected to be in range of \[-3, 2\], but got 5\)",
    ),
    (nn.Flatten(2, 1), _x(2, 3, 4), ValueError, r"Flatten: start_dim cannot come after end_dim"),
    (
        nn.Softmax(dim=2),
        _x(4, 10),
        IndexError,
        r"Softmax: Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)",
    ),
    (
        nn.LogSoftmax(dim=-3),
        _x(4, 10),
        IndexError,
        r"LogSoftmax: Dimension out of range \(expected to be in range of \[-2, 1\], but got -3\)",
    ),
    (nn.ReLU(), np.arange(4), TypeError, r"ReLU: input has dtype int64"),
    (nn.Sigmoid(), np.array(["a"]), TypeError, r"Sigmoid: input has dtype <U1"),
    (nn.Dropout(), np.ones(3, bool), TypeError, r"Dropout: input has dtype bool"),
    (nn.LeakyReLU(), np.arange(3), TypeError, r"LeakyReLU: input has dtype int64"),
    (nn.ELU(), np.ones(3, np.float16), TypeError, r"ELU: input has dtype float16"),
    (nn.GELU(), np.array([1j]), TypeError, r"GELU: input has dtype complex128"),
    (nn.Hardswish(), np.arange(3), TypeError, r"Hardswish: input has dtype int64"),
    (
        nn.Dropout2d(),
        _x(4, 6),
        ValueError,
        r"Dropout2d: expected a 4-D \(N, C, H, W\) or 3-D \(C, H, W\) input, got shape "
        r"\(4, 6\) \(use Dropout to drop single elements\)",
    ),
    (nn.Dropout2d(), np.ones((1, 2, 2, 2), np.int8), TypeError, r"Dropout2d: input has dtype int8"),
    (
        models.LeNet5(),
        _x(2, 1, 32, 32),
        ValueError,
        r"Linear expected input with 400 features \(last dim\), got shape \(2, 576\)",
    ),
    (
        nn.Conv2d(4, 8, 3, groups=4),
        _x(2, 8, 6, 6),
        ValueError,
        r"Conv2d expected input with 4 channels \(dim 1\), got shape \(2, 8, 6, 6\)",
    ),
    (
        nn.Conv2d(2, 2, 3, dilation=3),
        _x(1, 2, 6, 6),
        ValueError,
        r"Conv2d: dilated kernel size \(7, 7\) is larger than the padded input \(6, 6\)",
    ),
    (
        models.LeNet5(),
        _x(2, 3, 28, 28),
        ValueError,
        r"Conv2d expected input with 1 channels \(dim 1\), got shape \(2, 3, 28, 28\)",
    ),
]


@pytest.mark.parametrize(
    "module, x, error, match",
    FORWARDS,
    ids=[f"{type(row[0]).__name__}-{i}" for i, row in enumerate(FORWARDS)],
)
def test_bad_forward_input(module, x, error, match):
    with pytest.raises(error, match=match):
        module(x)


LOGITS = _x(4, 10)

LOSS_CALLS = [
    (lambda: _ce(LOGITS, np.array([0, 1, 10, 2])), IndexError, r"Target 10 is out of bounds\."),
    (lambda: _ce(LOGITS, np.array([0, -1, 1, 2])), IndexError, r"Target -1 is out of bounds\."),
    (
        lambda: nn.CrossEntropyLoss(ignore_index=-1)(LOGITS, np.array([0, -1, -100, 2])),
        IndexError,
        r"Target -100 is out of bounds\. \(CrossEntropyLoss: class labels must lie in \[0, 9\] "
        r"for 10 classes, or equal ignore_index=-1\)",
    ),
    (
        lambda: nn.CrossEntropyLoss(ignore_index=0)(LOGITS, _x(4, 10)),
        ValueError,
        r"CrossEntropyLoss: ignore_index=0 is not supported with probability targets",
    ),
    (
        lambda: nn.CrossEntropyLoss(weight=np.ones(9))(LOGITS, np.arange(4)),
        ValueError,
        r"CrossEntropyLoss: weight has 9 entries but the logits have 10 classes; pass one "
        r"weight per class",
    ),
    (
        lambda: nn.NLLLoss(weight=np.ones(11))(LOGITS, np.arange(4)),
        ValueError,
        r"NLLLoss: weight has 11 entries but the log-probabilities have 10 classes",
    ),
    (
        lambda: nn.NLLLoss()(LOGITS, np.array([0, 1, 10, 2])),
        IndexError,
        r"Target 10 is out of bounds\. \(NLLLoss: class labels must lie in \[0, 9\]",
    ),
    (
        lambda: nn.NLLLoss()(LOGITS, _x(4, 10)),
        TypeError,
        r"NLLLoss: target must be integer class labels, got dtype float32 \(convert it with "
        r"y\.astype\(np\.int64\)\)",
    ),
    (
        lambda: nn.NLLLoss()(_x(4), np.arange(4)),
        ValueError,
        r"NLLLoss: expected log-probabilities of shape \(N, C\) with N >= 1, got shape \(4,\)",
    ),
    (
        lambda: nn.BCEWithLogitsLoss()(_x(4, 3), _x(4, 1)),
        ValueError,
        r"BCEWithLogitsLoss: target shape \(4, 1\) differs from input shape \(4, 3\); they "
        r"must be equal",
    ),
    (
        lambda: nn.BCEWithLogitsLoss()(np.ones((4, 3), np.int64), np.ones((4, 3))),
        TypeError,
        r"BCEWithLogitsLoss: input has dtype int64",
    ),
    (
        lambda: nn.BCEWithLogitsLoss()(_x(2), np.array(["a", "b"])),
        TypeError,
        r"BCEWithLogitsLoss: target must be numeric, got dtype <U1",
    ),
    (
        lambda: nn.BCEWithLogitsLoss(pos_weight=np.ones(4))(_x(2, 3), _x(2, 3)),
        ValueError,
        r"BCEWithLogitsLoss: pos_weight of shape \(4,\) does not broadcast to the input's "
        r"shape \(2, 3\) over the last \(class\) dimension",
    ),
    (
        lambda: nn.BCEWithLogitsLoss(weight=np.ones((3, 1)))(_x(2, 3), _x(2, 3)),
        ValueError,
        r"BCEWithLogitsLoss: weight of shape \(3, 1\) does not broadcast to the input's shape",
    ),
    (
        lambda: nn.BCEWithLogitsLoss()(_x(0, 3), _x(0, 3)),
        ValueError,
        r"BCEWithLogitsLoss: input of shape \(0, 3\) is empty",
    ),
    (
        lambda: _backward_after_none(nn.CrossEntropyLoss, LOGITS, np.arange(4), 1.0),
        ValueError,
        r"CrossEntropyLoss.backward: with reduction='none' the loss is an array of shape "
        r"\(4,\); pass its gradient",
    ),
    (
        lambda: _backward_after_none(nn.BCEWithLogitsLoss, LOGITS, LOGITS, np.ones(4)),
        ValueError,
        r"BCEWithLogitsLoss.backward: grad_output has shape \(4,\), expected \(4, 10\)",
    ),
    (
        lambda: _ce(LOGITS, np.array([0, 1, 2])),
        ValueError,
        r"Expected input batch_size \(4\) to match target batch_size \(3\)\.",
    ),
    (
        lambda: _ce(LOGITS, np.zeros((4, 1), np.int64)),
        ValueError,
        r"CrossEntropyLoss: class-label targets must be 1-D \(N,\), got shape \(4, 1\)",
    ),
    (
        lambda: _ce(LOGITS, _x(4, 9)),
        ValueError,
        r"CrossEntropyLoss: probability targets must have the logits' shape \(4, 10\), got "
        r"\(4, 9\)",
    ),
    (
        lambda: _ce(LOGITS, np.array([0.0, 1.0, 2.0, 3.0])),
        ValueError,
        r"for class labels pass an integer array, e\.g\. y\.astype\(np\.int64\)",
    ),
    (
        lambda: _ce(LOGITS, np.ones(4, bool)),
        TypeError,
        r"CrossEntropyLoss: target must be integer class labels or float probabilities, got "
        r"dtype bool",
    ),
    (
        lambda: _ce(_x(10), np.array([1])),
        ValueError,
        r"CrossEntropyLoss: expected logits of shape \(N, C\) with N >= 1, got shape \(10,\)",
    ),
    (
        lambda: _ce(np.ones((4, 10), np.int32), np.arange(4)),
        TypeError,
        r"CrossEntropyLoss: input has dtype int32",
    ),
    (
        lambda: nn.MSELoss()(_x(4, 3), _x(4, 1)),
        ValueError,
        r"MSELoss: target shape \(4, 1\) differs from input shape \(4, 3\)",
    ),
    (
        lambda: nn.MSELoss()(_x(2), np.array(["a", "b"])),
        TypeError,
        r"MSELoss: target must be numeric, got dtype <U1",
    ),
    (lambda: nn.MSELoss()(_x(0), _x(0)), ValueError, r"MSELoss: input of shape \(0,\) is empty"),
    (
        lambda: nn.CrossEntropyLoss().backward(),
        RuntimeError,
        r"CrossEntropyLoss.backward\(\) was called before forward\(\)",
    ),
]


@pytest.mark.parametrize("call, error, match", LOSS_CALLS)
def test_bad_loss_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _backward_after_none(loss_class, input, target, grad):
    loss_fn = loss_class(reduction="none")
    loss_fn(input, target)
    return loss_fn.backward(grad)


def test_loss_backward_needs_a_scalar_grad_output():
    loss_fn = nn.MSELoss()
    loss_fn(_x(2, 2), _x(2, 2))
    with pytest.raises(ValueError, match=r"MSELoss.backward: grad_output must be a scalar"):
        loss_fn.backward(np.ones(2))


@pytest.mark.parametrize(
    "module, x, grad, match",
    [
        (
            nn.Conv2d(1, 2, 3),
            _x(2, 1, 5, 5),
            _x(2, 2, 4, 4),
            r"Conv2d.backward: grad_output has shape \(2, 2, 4, 4\), expected \(2, 2, 3, 3\)",
        ),
        (
            nn.Linear(3, 2),
            _x(4, 3),
            _x(4, 3),
            r"Linear.backward: grad_output has shape \(4, 3\), expected \(4, 2\)",
        ),
        (
            nn.MaxPool2d(2),
            _x(1, 1, 4, 4),
            _x(1, 1, 4, 4),
            r"MaxPool2d.backward: grad_output has shape \(1, 1, 4, 4\), expected \(1, 1, 2, 2\)",
        ),
        (
            nn.BatchNorm1d(3),
            _x(4, 3),
            _x(3),
            r"BatchNorm1d.backward: grad_output has shape \(3,\), expected \(4, 3\)",
        ),
        (
            nn.BatchNorm2d(3),
            _x(2, 3, 4, 4),
            _x(2, 3, 16),  # as many values as the kernel's (N, C, H*W) view: still refused
            r"BatchNorm2d.backward: grad_output has shape \(2, 3, 16\), expected \(2, 3, 4, 4\)",
        ),
        (
            nn.GroupNorm(2, 4),
            _x(2, 4, 3),
            _x(2, 4),
            r"GroupNorm.backward: grad_output has shape \(2, 4\), expected \(2, 4, 3\)",
        ),
        (
            nn.LayerNorm(4),
            _x(3, 4),
            _x(4),
            r"LayerNorm.backward: grad_output has shape \(4,\), expected \(3, 4\)",
        ),
        (
            nn.AdaptiveAvgPool2d(2),
            _x(3, 4, 4),
            _x(1, 3, 2, 2),
            r"AdaptiveAvgPool2d.backward: grad_output has shape \(1, 3, 2, 2\), expected "
            r"\(3, 2, 2\)",
        ),
        (
            nn.AdaptiveMaxPool2d((3, 2)),
            _x(1, 2, 7, 5),
            _x(1, 2, 2, 3),
            r"AdaptiveMaxPool2d.backward: grad_output has shape \(1, 2, 2, 3\), expected "
            r"\(1, 2, 3, 2\)",
        ),
        (
            nn.Flatten(),
            _x(2, 3, 4),
            _x(2, 3, 4),
            r"Flatten.backward: grad_output has shape \(2, 3, 4\), expected \(2, 12\)",
        ),
        (
            nn.GELU(),
            _x(2, 3),
            _x(3),
            r"GELU.backward: grad_output has shape \(3,\), expected \(2, 3\)",
        ),
        (
            nn.Dropout2d(),
            _x(2, 3, 4, 4),
            _x(2, 3),
            r"Dropout2d.backward: grad_output has shape \(2, 3\), expected \(2, 3, 4, 4\)",
        ),
    ],
)
def test_bad_grad_output_shape(module, x, grad, match):
    module(x)
    with pytest.raises(ValueError, match=match):
        module.backward(grad)
