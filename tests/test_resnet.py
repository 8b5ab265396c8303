"""The models past LeNet-5: nn.Residual, models.BasicBlock and models.ResNet20 (its
torchvision names, gradients, torch parity in train and eval mode), the depthwise-separable
MobileNetCIFAR, and ImprovedLeNet5's input_size."""

import copy

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from torch_twins import torch_mobilenet_cifar, torch_resnet20

import fastcnn
from fastcnn import models, nn


def test_residual_adds_both_paths_and_routes_the_gradient():
    rng = np.random.default_rng(0)
    body = nn.Sequential(
        nn.Linear(6, 6, rng=rng, dtype=np.float64),
        nn.Tanh(),
        nn.Linear(6, 6, rng=rng, dtype=np.float64),
    )
    block = nn.Residual(body)
    x = rng.standard_normal((3, 6))
    np.testing.assert_allclose(block(x), body(x) + x)
    assert fastcnn.gradcheck(block, x)
    projected = nn.Residual(body, nn.Linear(6, 6, rng=rng, dtype=np.float64))
    assert fastcnn.gradcheck(projected, x)
    assert set(projected.state_dict()) == {
        "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
        "shortcut.weight", "shortcut.bias",
    }  # fmt: skip


def test_residual_refuses_paths_of_different_shapes():
    block = nn.Residual(nn.Linear(4, 3, rng=0))
    with pytest.raises(ValueError, match=r"body's output has shape \(2, 3\) but the input"):
        block(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="Residual: int is not a Module"):
        nn.Residual(3)


@pytest.mark.parametrize(("in_planes", "planes", "stride"), [(4, 4, 1), (4, 8, 2), (4, 8, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_basic_block_gradients(in_planes, planes, stride, training):
    block = models.BasicBlock(in_planes, planes, stride, rng=1).to(np.float64)
    block.train(training)
    x = np.random.default_rng(2).standard_normal((3, in_planes, 6, 6))
    assert fastcnn.gradcheck(block, x)
    assert (block.downsample is None) == (stride == 1 and in_planes == planes)


def unfused_block_output_and_grads(block, x, grad):
    """BasicBlock's function with each layer called on its own (the reference for its
    fused bn1 -> relu): output, input gradient, then the parameter gradients."""
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    identity = x if block.downsample is None else block.downsample(x)
    total = out + identity
    out = np.maximum(total, 0)
    g = np.where(total > 0, grad, 0).astype(grad.dtype)
    g_identity = g if block.downsample is None else block.downsample.backward(g, True)
    g_body = block.relu.backward(block.conv2.backward(block.bn2.backward(g)))
    g_body = block.conv1.backward(block.bn1.backward(g_body))
    return out, g_body + g_identity, [p.grad for p in block.parameters()]


@pytest.mark.parametrize("stride", [1, 2])
def test_basic_block_fused_bn1_relu_gives_the_layers_bits(stride):
    block = models.BasicBlock(4, 4 * stride, stride, rng=4)
    twin = copy.deepcopy(block)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 6, 6)).astype(np.float32)
    grad = rng.standard_normal((3, 4 * stride, 6 // stride, 6 // stride)).astype(np.float32)
    out = block(x)
    got = [out, block.backward(grad), *(p.grad for p in block.parameters())]
    want_out, want_grad_x, want_param_grads = unfused_block_output_and_grads(twin, x, grad)
    for got_array, want_array in zip(got, [want_out, want_grad_x, *want_param_grads], strict=True):
        assert_array_equal(got_array, want_array)


def test_basic_block_with_another_activation_is_not_fused():
    block = models.BasicBlock(3, 3, rng=6).to(np.float64)
    block.relu = nn.LeakyReLU(0.1)  # bn1 -> relu runs unfused, one layer after the other
    x = np.random.default_rng(7).standard_normal((2, 3, 5, 5))
    assert fastcnn.gradcheck(block, x)


def test_resnet20_has_torchvisions_names_and_size():
    model = models.ResNet20(rng=0)
    keys = list(model.state_dict())
    for key in (
        "conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.0.bn1.weight",
        "layer1.0.conv2.weight", "layer1.0.bn2.bias", "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var", "layer3.2.bn2.num_batches_tracked", "fc.weight",
        "fc.bias",
    ):  # fmt: skip
        assert key in keys
    assert "layer1.0.downsample.0.weight" not in keys  # same shape: the identity
    assert sum(p.data.size for p in model.parameters()) == 272_474


TWINS = {
    "resnet20": (lambda: models.ResNet20(rng=3), torch_resnet20),
    "mobilenet": (lambda: models.MobileNetCIFAR(rng=3), torch_mobilenet_cifar),
}


@pytest.mark.parametrize("name", sorted(TWINS))
@pytest.mark.parametrize("training", [True, False])
def test_models_match_torch(name, training):
    torch = pytest.importorskip("torch")
    make, make_twin = TWINS[name]
    model = make()
    rng = np.random.default_rng(4)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer[...] = rng.normal(0, 0.1, buffer.shape)
        elif name.endswith("running_var"):
            buffer[...] = rng.uniform(0.5, 1.5, buffer.shape)
    twin = make_twin(torch)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    model.train(training)
    twin.train(training)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    labels = np.array([0, 3, 5, 9])
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(model(x), labels)
    grad_x = model.backward(loss_fn.backward(), input_grad=True)

    tx = torch.from_numpy(x).requires_grad_(True)
    tloss = torch.nn.functional.cross_entropy(twin(tx), torch.from_numpy(labels))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-5)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=1e-3, atol=1e-6)
    named = dict(twin.named_parameters())
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad, named[name].grad.numpy(), rtol=1e-3, atol=2e-6)
    torch_buffers = dict(twin.named_buffers())
    for name, buffer in model.named_buffers():
        np.testing.assert_allclose(buffer, torch_buffers[name].numpy(), rtol=1e-5, atol=1e-6)


def test_resnet20_on_mnist_sized_input_and_eval_determinism():
    model = models.ResNet20(num_classes=10, in_channels=1, rng=5).eval()
    x = np.random.default_rng(6).standard_normal((3, 1, 28, 28)).astype(np.float32)
    before = fastcnn.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            fastcnn.set_num_threads(threads)
            outs.append(model(x))
    finally:
        fastcnn.set_num_threads(before)
    assert outs[0].shape == (3, 10)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_basic_block_refuses_bad_sizes():
    with pytest.raises(ValueError, match="out_channels"):
        models.BasicBlock(4, 0)
    with pytest.raises(TypeError, match="BasicBlock: rng"):
        models.BasicBlock(4, 4, rng="seed")


def test_resnet20_refuses_bad_sizes():
    with pytest.raises(ValueError, match="ResNet20: num_classes"):
        models.ResNet20(num_classes=0)
    with pytest.raises(TypeError, match="ResNet20: in_channels"):
        models.ResNet20(in_channels=1.5)


@pytest.mark.parametrize(("size", "features"), [(28, 144), (32, 256), (8, 16)])
def test_improved_lenet5_input_size(size, features):
    model = models.ImprovedLeNet5(input_size=size, rng=0)
    assert model.fc1.in_features == features
    assert model(np.zeros((2, 1, size, size), np.float32)).shape == (2, 10)


def test_improved_lenet5_refuses_small_input_size():
    with pytest.raises(ValueError, match="input_size must be at least 8"):
        models.ImprovedLeNet5(input_size=7)


def test_mobilenet_blocks_and_size():
    model = models.MobileNetCIFAR(rng=0)
    assert sum(p.data.size for p in model.parameters()) == 274_250
    depthwise = model.layers[0][0]
    assert (depthwise.groups, depthwise.weight.shape) == (32, (32, 1, 3, 3))
    assert "layers.5.3.weight" in model.state_dict()  # the last pointwise convolution
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert model(x).shape == (2, 10)
    block = models.depthwise_separable(4, 6, stride=2, rng=0).to(np.float64)
    assert fastcnn.gradcheck(block, np.random.default_rng(2).standard_normal((2, 4, 6, 6)))
    with pytest.raises(ValueError, match="MobileNetCIFAR: num_classes"):
        models.MobileNetCIFAR(num_classes=0)
    with pytest.raises(TypeError, match="depthwise_separable: rng"):
        models.depthwise_separable(4, 6, rng="seed")
