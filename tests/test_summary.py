"""fastcnn.summary: rows, output shapes, parameter counts and mult-adds of every model."""

import numpy as np
import pytest
from torch_twins import torch_mobilenet_cifar, torch_resnet20

import fastcnn
from fastcnn import models, nn
from fastcnn.train.checkpoint import generator_states

# (model, input shape, parameters): LeNet-5's 61,706 and ResNet-20's 0.27M are the papers'.
MODELS = [
    (lambda: models.LeNet5(), (1, 28, 28), 61_706),
    (lambda: models.ImprovedLeNet5(), (1, 28, 28), 30_380),
    (lambda: models.SimpleConvNet(), (1, 28, 28), 433_890),
    (lambda: models.ResNet20(), (3, 32, 32), 272_474),
    (lambda: models.MobileNetCIFAR(), (3, 32, 32), 274_250),
]


@pytest.mark.parametrize("build, shape, params", MODELS, ids=[f"{p:,}" for *_, p in MODELS])
def test_every_model_has_its_known_parameter_count(build, shape, params):
    model = build()
    table = fastcnn.summary(model, shape)
    assert table.total_params == table.trainable_params == params
    assert table.rows[0].params == params and table.rows[0].depth == 0
    assert f"Total params: {params:,}" in str(table)
    assert table.rows[0].output_shape == model.eval()(np.zeros((1, *shape), np.float32)).shape


def test_lenet5_rows_and_mult_adds_by_hand():
    table = fastcnn.summary(models.LeNet5(), (1, 28, 28), batch_size=2)
    rows = {row.name: row for row in table.rows}
    assert [row.name for row in table.rows][:4] == ["", "conv1", "act1", "pool1"]
    assert len(table.rows) == 13 and all(row.depth == 1 for row in table.rows[1:])
    by_hand = {  # output elements x (in_channels x kh x kw | in_features), per image
        "conv1": 6 * 28 * 28 * (1 * 5 * 5),  # 117,600
        "conv2": 16 * 10 * 10 * (6 * 5 * 5),  # 240,000
        "fc1": 120 * 400,
        "fc2": 84 * 120,
        "fc3": 10 * 84,
    }
    for name, mult_adds in by_hand.items():
        assert rows[name].mult_adds == 2 * mult_adds, name
    assert rows["act1"].mult_adds == rows["pool2"].mult_adds == 0
    assert table.total_mult_adds == 2 * 416_520 == 2 * sum(by_hand.values())
    assert rows["conv2"].output_shape == (2, 16, 10, 10) and rows["conv2"].params == 2_416
    assert rows["flatten"].output_shape == (2, 400) and rows["fc1"].params == 48_120
    text = str(table)
    for line in ("Total params: 61,706", "Trainable params: 61,706", "Total mult-adds: 833,040"):
        assert line in text
    assert "  conv2 (Conv2d)" in text and "[2, 16, 10, 10]" in text and "240,000" not in text


def test_nested_containers_are_indented_and_grouped_conv_counted():
    table = fastcnn.summary(models.ResNet20(), (3, 32, 32))
    text = str(table).splitlines()
    assert any(line.startswith("  layer2 (Sequential)") for line in text)
    assert any(line.startswith("    0 (BasicBlock)") for line in text)
    assert any(line.startswith("      conv1 (Conv2d)") for line in text)
    layer1 = next(row for row in table.rows if row.name == "layer1")
    inside = [row for row in table.rows if row.name.startswith("layer1.") and row.depth == 3]
    assert layer1.mult_adds == sum(row.mult_adds for row in inside) == 6 * 16 * 32 * 32 * 16 * 9
    depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 8, 1))
    counts = [row.mult_adds for row in fastcnn.summary(depthwise, (4, 8, 8)).rows]
    assert counts == [4 * 64 * 9 + 8 * 64 * 4, 4 * 64 * 1 * 9, 8 * 64 * 4]


@pytest.mark.parametrize("build_ours, build_torch", [
    (models.ResNet20, torch_resnet20), (models.MobileNetCIFAR, torch_mobilenet_cifar),
])  # fmt: skip
def test_counts_match_pytorch_hooks(build_ours, build_torch):
    torch = pytest.importorskip("torch")
    twin = build_torch(torch).eval()
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * module.in_channels // module.groups * kh * kw
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    for module in twin.modules():
        module.register_forward_hook(count)
    with torch.no_grad():
        twin(torch.zeros(1, 3, 32, 32))
    table = fastcnn.summary(build_ours(), (3, 32, 32))
    assert table.total_mult_adds == total
    assert table.total_params == sum(p.numel() for p in twin.parameters())


def test_summary_leaves_the_model_as_it_was():
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, rng=rng),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5, rng=rng),
        nn.Linear(3 * 36, 2, rng=rng),
    )
    model[1].eval()  # a frozen BatchNorm inside a model in training mode
    model[5].weight.requires_grad = False
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    out = model(x)  # a training forward, then the summary, then its backward
    generators = generator_states(model)
    table = fastcnn.summary(model, (1, 8, 8))
    assert table.trainable_params == table.total_params - 3 * 36 * 2
    assert [m.training for m in model.modules()] == [True, True, False, True, True, True, True]
    model.backward(np.ones_like(out))  # what the forward saved is still there
    assert all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())
    assert "forward" not in vars(model) and "forward" not in vars(model[0])
    assert generator_states(model) == generators  # eval mode: no dropout mask drawn


@pytest.mark.parametrize(
    "args, error, pattern",
    [
        (("model", (1, 28, 28)), TypeError, "^summary: model must be a fastcnn.nn.Module, got str"),
        ((None, 28), TypeError, r"^summary: input_shape must be a tuple of ints without the "
         r"batch, such as \(1, 28, 28\), got int 28"),
        ((None, (1, 0, 28)), ValueError, "^summary: each of input_shape must be >= 1, got 0"),
        ((None, (1, 28, 28), 0), ValueError, "^summary: batch_size must be >= 1, got 0"),
        ((None, (1, 32, 32)), ValueError, r"Linear expected input with 400 features .*\(1, 576\)"),
        ((None, (28, 28)), ValueError, r"Conv2d: expected 4-D input, got shape \(1, 28, 28\)"),
    ],
)  # fmt: skip
def test_bad_input(args, error, pattern):
    model = models.LeNet5()
    args = tuple(model if a is None else a for a in args[:1]) + args[1:]
    with pytest.raises(error, match=pattern):
        fastcnn.summary(*args)
    assert model.training and "forward" not in vars(model.conv1)  # put back after an error
