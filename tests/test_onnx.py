"""fastcnn.onnx.export: the file onnxruntime and ONNX's reference evaluator run gives the
model's evaluation output, at another batch size than the example's."""

import io
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import fastcnn
from fastcnn import models, nn
from fastcnn.onnx import export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx.reference import ReferenceEvaluator  # noqa: E402  (after the importorskip)

TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}


def every_layer_model():
    """Each exportable layer, most with settings other than the defaults."""
    rng = np.random.default_rng(1)
    bn2 = nn.BatchNorm2d(4)
    bn1_3d = nn.BatchNorm1d(4)
    bn1_2d = nn.BatchNorm1d(8, affine=False, eps=1e-3)
    for bn in (bn2, bn1_3d, bn1_2d):
        bn.running_mean[...] = rng.normal(size=bn.num_features)
        bn.running_var[...] = rng.uniform(0.5, 2.0, size=bn.num_features)
        if bn.affine:
            bn.weight.data[...] = rng.uniform(0.5, 1.5, size=bn.num_features)
            bn.bias.data[...] = rng.normal(size=bn.num_features)
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0)),  # 12x12 -> 6x6
                ("bn1", bn2),
                ("relu", nn.ReLU()),
                ("avg1", nn.AvgPool2d(3, stride=1, padding=1)),  # 6x6
                ("conv2", nn.Conv2d(4, 4, (3, 2), padding=(1, 0), bias=False, rng=1)),  # 6x5
                ("silu", nn.SiLU()),
                ("max", nn.MaxPool2d(2)),  # 3x2
                ("avg2", nn.AvgPool2d(2, padding=1, count_include_pad=False)),  # 2x2
                ("drop", nn.Dropout(0.5, rng=0)),
                ("tanh", nn.Tanh()),
                ("flat2", nn.Flatten(2)),  # (N, 4, 4)
                ("bn2", bn1_3d),
                ("fc3d", nn.Linear(4, 6, rng=2)),  # on (N, 4, 4): MatMul + Add
                ("sigmoid", nn.Sigmoid()),
                ("id", nn.Identity()),
                ("flat", nn.Flatten()),  # (N, 24)
                ("fc1", nn.Linear(24, 8, rng=3)),
                ("bn3", bn1_2d),
                ("head", nn.Sequential(nn.Linear(8, 5, bias=False, rng=4), nn.Softmax(dim=-1))),
            ]
        )
    )


def new_activations_model():
    """LeakyReLU, ELU, GELU (both forms), Hardswish, Dropout2d and LogSoftmax, on values that reach
    their kinks and tails. (ONNX's LeakyRelu and Elu take their slopes as float32
    attributes: slopes exact in float32 keep float64 models exact.)"""
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=0),
        nn.Dropout2d(0.5, rng=0),
        nn.LeakyReLU(0.25),
        nn.Flatten(),
        nn.Linear(3 * 5 * 5, 16, rng=1),
        nn.ELU(0.75),
        nn.Linear(16, 16, rng=2),
        nn.GELU(),
        nn.Linear(16, 16, rng=3),
        nn.GELU(approximate="tanh"),
        nn.Linear(16, 16, rng=4),
        nn.Hardswish(),
        nn.LogSoftmax(dim=1),
    )


def norm_and_adaptive_pool_model():
    """GroupNorm, LayerNorm and the adaptive pools, in each form export writes."""
    rng = np.random.default_rng(2)
    layers = [nn.GroupNorm(2, 4), nn.LayerNorm((6, 4)), nn.LayerNorm(4, bias=False)]
    for layer in layers:
        for param in layer.parameters():
            param.data[...] = rng.uniform(0.5, 1.5, param.shape)
    group_norm, layer_norm_2d, layer_norm_no_bias = layers
    return nn.Sequential(
        OrderedDict(
            [
                ("gn_plain", nn.GroupNorm(1, 3, eps=1e-3, affine=False)),
                ("conv", nn.Conv2d(3, 4, 3, padding=1, rng=0)),  # (N, 4, 12, 8)
                ("gn", group_norm),
                ("relu", nn.ReLU()),
                ("max_even", nn.AdaptiveMaxPool2d((6, None))),  # MaxPool 2x1: 6x8
                ("avg_even", nn.AdaptiveAvgPool2d((None, 4))),  # AveragePool 1x2: 6x4
                ("ln2d", layer_norm_2d),
                ("max_global", nn.AdaptiveMaxPool2d(1)),  # GlobalMaxPool
                ("flat", nn.Flatten()),
                ("ln", layer_norm_no_bias),
                ("fc", nn.Linear(4, 3, rng=1)),
                ("ln_plain", nn.LayerNorm(3, elementwise_affine=False)),
            ]
        )
    )


MODELS = {
    "lenet5": (lambda: models.LeNet5(rng=0), (1, 28, 28)),
    "lenet5-tanh-32": (
        lambda: models.LeNet5(3, 4, input_size=32, activation="tanh", rng=0),
        (3, 32, 32),
    ),
    "improved-lenet5": (lambda: models.ImprovedLeNet5(rng=0), (1, 28, 28)),
    "simple": (lambda: models.SimpleConvNet(rng=0), (1, 28, 28)),
    "simple-strided": (
        lambda: models.SimpleConvNet((2, 15, 15), 6, 3, pad=1, stride=2, rng=0),
        (2, 15, 15),
    ),
    "every-layer": (every_layer_model, (3, 12, 12)),
    "resnet20": (lambda: models.ResNet20(rng=0), (3, 16, 16)),
    "mobilenet": (lambda: models.MobileNetCIFAR(rng=0), (3, 32, 32)),
    "residual": (
        lambda: nn.Sequential(
            nn.Residual(nn.Sequential(nn.Linear(6, 6, rng=0), nn.Tanh())),
            nn.Residual(nn.Linear(6, 4, rng=1), shortcut=nn.Linear(6, 4, rng=2)),
        ),
        (6,),
    ),
    "concat": (
        lambda: nn.Sequential(
            nn.Concat(
                nn.Conv2d(3, 4, 1, rng=0),
                nn.Sequential(nn.Conv2d(3, 2, 3, padding=1, rng=1), nn.ReLU()),
            ),
            nn.Concat(nn.Flatten(), nn.Sequential(nn.Flatten(), nn.Linear(6 * 5 * 5, 3, rng=2))),
        ),
        (3, 5, 5),
    ),
    "norm-and-adaptive-pool": (norm_and_adaptive_pool_model, (3, 12, 8)),
    "global-average-pool": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.AdaptiveAvgPool2d((1, 1))),
        (3, 7, 5),
    ),
    "depthwise-dilated-grouped": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, rng=0),  # multiplier 2
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=2, dilation=2, rng=1),
            nn.Conv2d(6, 4, 1, groups=2, bias=False, rng=2),
            nn.Flatten(),
        ),
        (3, 11, 12),
    ),
}


def exported(model, example):
    buffer = io.BytesIO()
    export(model, example, buffer)
    return buffer.getvalue()


def onnxruntime_runs(model, dtype):
    """onnxruntime's CPU provider has no float64 Conv, AveragePool, GlobalAveragePool,
    GlobalMaxPool or InstanceNormalization (GroupNorm's export)."""
    no_double = (nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.GroupNorm)
    return dtype == np.float32 or not any(isinstance(m, no_double) for m in model.modules())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_model_matches_fastcnn(name, dtype):
    make, shape = MODELS[name]
    model = make().to(dtype)
    rng = np.random.default_rng(0)
    data = exported(model, rng.standard_normal((2, *shape)).astype(dtype))
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)

    x = rng.standard_normal((5, *shape)).astype(dtype)  # another batch size than the example
    expected = model.eval()(x)
    tolerance = TOLERANCE[dtype]
    outputs = [ReferenceEvaluator(proto).run(None, {"input": x})[0]]
    if onnxruntime_runs(model, dtype):
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        outputs.append(session.run(["output"], {"input": x})[0])
    for output in outputs:
        assert output.dtype == dtype and output.shape == expected.shape
        np.testing.assert_allclose(output, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_new_activations_match_fastcnn(dtype):
    """onnxruntime within 1e-5 in float32. In float64 ONNX's reference evaluator computes
    Erf in float32 (np.vectorize(erf, otypes=["f"])), hence its looser tolerance there."""
    model = new_activations_model().to(dtype)
    rng = np.random.default_rng(0)
    data = exported(model, rng.standard_normal((2, 2, 5, 5)).astype(dtype))
    x = 3 * rng.standard_normal((5, 2, 5, 5)).astype(dtype)
    expected = model.eval()(x)
    outputs = [(ReferenceEvaluator(onnx.load_from_string(data)).run(None, {"input": x})[0], 1e-6)]
    if dtype == np.float32:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        outputs.append((session.run(["output"], {"input": x})[0], 1e-5))
    for output, tolerance in outputs:
        assert output.dtype == dtype and output.shape == expected.shape
        np.testing.assert_allclose(output, expected, rtol=tolerance, atol=tolerance)


def test_the_graph_names_its_input_output_and_batch_axis():
    model = models.LeNet5(rng=0)
    proto = onnx.load_from_string(exported(model, np.zeros((2, 1, 28, 28), np.float32)))
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert graph_input.name == "input" and graph_output.name == "output"
    for value, rest in ((graph_input, [1, 28, 28]), (graph_output, [10])):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == rest
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.opset_import[0].version == 17
    assert {init.name for init in proto.graph.initializer} == set(model.state_dict())


def test_initializers_are_copies():
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    buffer = io.BytesIO()
    export(model, np.ones((2, 3), np.float32), buffer)
    before = model[0].weight.data.copy()
    model[0].weight.data[...] = 7
    weight = onnx.numpy_helper.to_array(
        onnx.load_from_string(buffer.getvalue()).graph.initializer[0]
    )
    np.testing.assert_array_equal(weight, before)


def test_float64_is_declared_as_double():
    model = nn.Sequential(nn.Linear(3, 2, rng=0, dtype=np.float64))
    proto = onnx.load_from_string(exported(model, np.ones((2, 3))))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


@pytest.mark.parametrize("as_path", [str, os.fspath, lambda p: p])
def test_export_to_a_path(tmp_path, as_path):
    model = models.SimpleConvNet(rng=0)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old contents")
    export(model, np.zeros((2, 1, 28, 28), np.float32), as_path(target), opset_version=13)
    assert os.listdir(tmp_path) == ["model.onnx"]  # no temporary file left behind
    proto = onnx.load(str(target))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 13
    buffer = io.BytesIO()
    export(model, np.zeros((2, 1, 28, 28), np.float32), buffer, opset_version=13)
    assert target.read_bytes() == buffer.getvalue()  # a path and a file get the same bytes


def test_training_flags_are_restored():
    model = every_layer_model()
    model.train()
    model.head.eval()  # mixed flags come back as they were
    flags = {name: module.training for name, module in model.named_modules()}
    export(model, np.zeros((2, 3, 12, 12), np.float32), io.BytesIO())
    assert {name: module.training for name, module in model.named_modules()} == flags
    model.eval()
    export(model, np.zeros((2, 3, 12, 12), np.float32), io.BytesIO())
    assert not any(module.training for module in model.modules())


def test_a_single_layer_exports():
    layer = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(np.float32)
    session = ort.InferenceSession(exported(layer, x[:2]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], layer(x), rtol=1e-4, atol=1e-4)


class Custom(nn.Module):
    def forward(self, input):
        return input


class OwnForward(nn.Sequential):
    def forward(self, input):
        return super().forward(input) * 2


@pytest.mark.parametrize(
    "model, pattern",
    [
        (nn.Sequential(nn.ReLU(), nn.ReLU(), Custom()), r"cannot export Custom at model\.2"),
        (
            nn.Sequential(OrderedDict(block=nn.Sequential(nn.Tanh(), Custom()))),
            r"Custom at model\.block\.1",
        ),
        (Custom(), r"Custom at the model itself"),
        (nn.Sequential(nn.MSELoss()), r"MSELoss at model\.0"),
        (OwnForward(nn.ReLU()), r"OwnForward at the model itself is a Sequential with its own"),
    ],
)
def test_an_unsupported_module_is_named(model, pattern):
    with pytest.raises(TypeError, match=pattern) as info:
        export(model, np.zeros((2, 3), np.float32), io.BytesIO())
    assert (
        "supports nn.Sequential (nested too), nn.Residual, nn.Concat and models.BasicBlock "
        "of Conv2d," in (str(info.value))
    )


@pytest.mark.parametrize(
    "model, example, pattern",
    [
        (nn.Sequential(nn.Flatten(0)), np.zeros((2, 3)), r"Flatten at model\.0 .*batch dimension"),
        (
            nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False)),
            np.zeros((2, 3), np.float32),
            r"BatchNorm1d at model\.0 has track_running_stats=False",
        ),
        (
            nn.Sequential(nn.AdaptiveAvgPool2d((3, 2))),
            np.zeros((2, 3, 7, 5), np.float32),
            r"AdaptiveAvgPool2d at model\.0 pools \(7, 5\) to \(3, 2\), .* supports output "
            r"size \(1, 1\), or one that divides",
        ),
        (
            nn.AdaptiveMaxPool2d(1, return_indices=True),
            np.zeros((2, 3, 4, 4), np.float32),
            r"AdaptiveMaxPool2d at the model itself has return_indices=True",
        ),
        (
            nn.AdaptiveMaxPool2d(1),
            np.zeros((3, 4, 4), np.float32),
            r"AdaptiveMaxPool2d at the model itself got input of shape \(3, 4, 4\)",
        ),
        (
            nn.Sequential(nn.LayerNorm((2, 3))),
            np.zeros((2, 3), np.float32),
            r"LayerNorm at model\.0 \(normalized_shape=\(2, 3\)\) normalises over the batch",
        ),
        (nn.Linear(3, 2), np.zeros((2, 3)), r"example_input is float64 but the model is float32"),
        (nn.ReLU(), np.zeros((2, 3), np.int64), r"must be float32 or float64, got int64"),
        (nn.ReLU(), np.float32(1), r"must be a batch"),
        (nn.Linear(3, 2), np.zeros(3, np.float32), r"Linear at the model itself got a 1-D"),
        (
            nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2, dtype=np.float64)),
            np.zeros((2, 3), np.float32),
            r"mixes dtypes \(float32, float64\)",
        ),
    ],
)
def test_what_onnx_cannot_express_is_a_value_error(model, example, pattern):
    with pytest.raises(ValueError, match=pattern):
        export(model, example, io.BytesIO())


def test_layer_norm_needs_opset_17():
    with pytest.raises(ValueError, match=r"LayerNorm at model\.0 needs .* opset_version=17 or"):
        export(
            nn.Sequential(nn.LayerNorm(3)),
            np.zeros((2, 3), np.float32),
            io.BytesIO(),
            opset_version=13,
        )
    model = nn.Sequential(nn.GroupNorm(1, 3), nn.AdaptiveAvgPool2d(1))  # opset 13 is fine
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    buffer = io.BytesIO()
    export(model, x, buffer, opset_version=13)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model(x), atol=1e-5)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.GroupNorm(3, 6), (4, 6, 5, 5)),
        (nn.GroupNorm(2, 4), (4, 4)),
        (nn.LayerNorm((5, 5)), (4, 6, 5, 5)),
        (nn.AdaptiveAvgPool2d(1), (4, 6, 7, 5)),
        (nn.AdaptiveMaxPool2d((1, 1)), (4, 6, 7, 5)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, nn.Module) else None,
)
def test_norm_and_global_pool_agree_with_onnxruntime_within_1e5(layer, shape):
    rng = np.random.default_rng(0)
    for param in layer.parameters():
        param.data[...] = rng.uniform(0.5, 1.5, param.shape)
    x = (3 * rng.standard_normal(shape) + 1).astype(np.float32)
    session = ort.InferenceSession(exported(layer, x[:2]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [12, 10**6, 17.0, True])
def test_bad_opset_version(opset):
    with pytest.raises(ValueError, match="opset_version must be an int from 13"):
        export(nn.ReLU(), np.zeros((2, 3), np.float32), io.BytesIO(), opset_version=opset)


def test_bad_model_or_file():
    with pytest.raises(TypeError, match="model must be a fastcnn.nn.Module, got str"):
        export("model", np.zeros((2, 3), np.float32), io.BytesIO())
    with pytest.raises(TypeError, match="f must be a path or a binary file object, got int"):
        export(nn.ReLU(), np.zeros((2, 3), np.float32), 3)


def test_without_onnx_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install "fastcnn\[onnx\]"'):
        export(nn.ReLU(), np.zeros((2, 3), np.float32), io.BytesIO())


def test_import_fastcnn_does_not_import_onnx():
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    code = "import sys, fastcnn; fastcnn.onnx.export; print('onnx' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, PYTHONPATH=package_parent),
    )  # fmt: skip
    assert result.stdout.strip() == "False"
