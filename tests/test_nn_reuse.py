"""No silent wrong gradients: a module used twice in one forward pass, backward before
forward, twice after one forward or after an eval forward, and containers nested in
other modules (fastcnn.nn.module's cache stack, Sequential's nested input gradient)."""

from pathlib import Path

import numpy as np
import pytest

from fastcnn import gradcheck, nn

F64 = np.float64


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


class ResidualBlock(nn.Module):
    """relu(conv2(relu(conv1(x))) + x), with one ReLU instance for both activations."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, rng=0, dtype=F64)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, rng=1, dtype=F64)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)

    def backward(self, grad_output, input_grad=True):
        grad = self.relu.backward(grad_output)  # the second use first
        grad_x = grad
        grad = self.relu.backward(self.conv2.backward(grad))
        return self.conv1.backward(grad) + grad_x


class TwiceConv(nn.Module):
    """conv(tanh(conv(x))): one Conv2d used twice, its weight gradient the sum of both."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, rng=0, dtype=F64)
        self.tanh = nn.Tanh()

    def forward(self, x):
        return self.conv(self.tanh(self.conv(x)))

    def backward(self, grad_output, input_grad=True):
        return self.conv.backward(self.tanh.backward(self.conv.backward(grad_output)))


class SiameseSequential(nn.Module):
    """One Sequential (with a fused Conv2d -> ReLU -> MaxPool2d stage) on two inputs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 2, 3, rng=0, dtype=F64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
        )

    def forward(self, x):
        left = self.features(x)
        right = self.features(x[:, :, ::-1, :].copy())
        self._save_for_backward(outputs=(left, right))
        return left * right

    def backward(self, grad_output, input_grad=True):
        left, right = self._saved()["outputs"]
        grad_flipped = self.features.backward(grad_output * left)  # the second call first
        grad = self.features.backward(grad_output * right)
        return grad + grad_flipped[:, :, ::-1, :]


class BlockWithSequential(nn.Module):
    """A Sequential inside a custom block: its backward must return its input gradient
    without being asked, as the block's backward needs it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4, rng=0, dtype=F64), nn.Tanh())
        self.head = nn.Linear(4, 2, rng=1, dtype=F64)

    def forward(self, x):
        return self.head(self.body(x) + x)

    def backward(self, grad_output, input_grad=True):
        grad = self.head.backward(grad_output)
        return self.body.backward(grad) + grad


class BlockOfModuleList(nn.Module):
    """Layers held in a ModuleList, one Linear applied twice."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(3, 3, rng=i, dtype=F64) for i in range(2)])
        self.act = nn.GELU()

    def forward(self, x):
        for layer in [self.layers[0], self.layers[1], self.layers[0]]:
            x = self.act(layer(x))
        return x

    def backward(self, grad_output, input_grad=True):
        grad = grad_output
        for layer in [self.layers[0], self.layers[1], self.layers[0]]:
            grad = layer.backward(self.act.backward(grad))
        return grad


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: ResidualBlock(2), (2, 2, 5, 5)),
        (TwiceConv, (2, 2, 4, 4)),
        (SiameseSequential, (2, 1, 6, 6)),
        (BlockWithSequential, (3, 4)),
        (BlockOfModuleList, (2, 3)),
        (lambda: nn.Sequential(nn.Linear(3, 4, rng=0, dtype=F64), BlockWithSequential()), (2, 3)),
    ],
    ids=[
        "residual-relu-twice",
        "conv-twice",
        "sequential-twice",
        "nested-sequential",
        "modulelist-reuse",
        "block-in-sequential",
    ],
)
def test_a_module_used_twice_passes_gradcheck(make, shape):
    assert gradcheck(make(), _x(shape))


def test_a_shared_conv_gets_the_sum_of_both_uses():
    block, x = TwiceConv(), _x((2, 2, 4, 4))
    grad = _x((2, 2, 4, 4), seed=1)
    block(x)
    block.backward(grad)
    # the same computation with two convolutions holding copies of the weight
    first, second = (
        nn.Conv2d(2, 2, 3, padding=1, dtype=F64),
        nn.Conv2d(2, 2, 3, padding=1, dtype=F64),
    )
    for conv in (first, second):
        conv.load_state_dict(block.conv.state_dict())
    tanh = nn.Tanh()
    second(tanh(first(x)))
    first.backward(tanh.backward(second.backward(grad)))
    np.testing.assert_allclose(block.conv.weight.grad, first.weight.grad + second.weight.grad)
    np.testing.assert_allclose(block.conv.bias.grad, first.bias.grad + second.bias.grad)


def test_a_new_forward_pass_replaces_the_caches():
    """Forwards without backward (evaluation loops) keep one pass's caches, not all."""
    block, x = ResidualBlock(2), _x((1, 2, 4, 4))
    for _ in range(5):
        block(x)
    assert len(block.relu._ctx.entries) == 2  # the two uses of the last pass
    block.backward(np.ones_like(x))
    with pytest.raises(RuntimeError, match=r"ReLU.backward\(\) was called more times than forward"):
        block.backward(np.ones_like(x))


@pytest.mark.parametrize(
    "module, x, grad",
    [
        (nn.ReLU(), np.ones((2, 3)), np.ones((2, 3))),
        (nn.Linear(3, 2), np.ones((2, 3), np.float32), np.ones((2, 2))),
        (nn.Conv2d(1, 1, 3), np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 2, 2))),
        (nn.Sequential(nn.Linear(3, 2), nn.ReLU()), np.ones((2, 3), np.float32), np.ones((2, 2))),
        (nn.GELU(), np.ones((2, 3)), np.ones((2, 3))),
        (nn.Dropout2d(), np.ones((1, 2, 3, 3)), np.ones((1, 2, 3, 3))),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "",
)
def test_backward_twice_after_one_forward_is_a_clear_error(module, x, grad):
    name = type(module).__name__
    with pytest.raises(RuntimeError, match=rf"{name}.backward\(\) was called before forward"):
        module.backward(grad)
    module(x)
    module.backward(grad)
    with pytest.raises(
        RuntimeError,
        match=rf"{name}.backward\(\) was called more times than forward\(\).*'Trying to "
        r"backward through the graph a second time'.*call the module's forward again",
    ):
        module.backward(grad)
    module(x)  # a new forward makes backward work again
    module.backward(grad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.BatchNorm2d(2, dtype=F64),
        lambda: nn.Dropout(0.5, rng=0),
        lambda: nn.Dropout2d(0.5, rng=0),
        lambda: ResidualBlock(2),
    ],
    ids=["batchnorm", "dropout", "dropout2d", "residual"],
)
def test_gradients_in_eval_mode_are_correct(make):
    """PyTorch computes gradients in eval mode too (saliency maps): so does fastcnn, of the
    eval computation (BatchNorm's running statistics, Dropout the identity)."""
    module = make()
    for buffer in module.buffers():
        if buffer.dtype.kind == "f":
            buffer[...] = np.random.default_rng(2).uniform(0.5, 2.0, buffer.shape)
    assert gradcheck(module.eval(), _x((2, 2, 4, 4)))


def test_nested_sequential_returns_its_input_gradient_only_when_nested():
    inner = nn.Sequential(nn.Linear(3, 3, rng=0, dtype=F64), nn.Tanh())
    x, grad = _x((2, 3)), _x((2, 3), seed=1)
    inner(x)
    assert inner.backward(grad) is None  # top level: skips the model input's gradient
    outer = nn.Sequential(nn.Tanh(), inner)
    outer(x)
    assert outer.backward(grad) is None
    outer(x)
    assert outer.backward(grad, input_grad=True).shape == x.shape
    assert gradcheck(nn.Sequential(inner, nn.Sequential(nn.Tanh(), nn.Sequential(inner))), x)


def test_the_training_loop_still_skips_the_first_input_gradient(conv_input_grads):
    calls = conv_input_grads
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3, rng=0)), nn.Flatten())
    model(np.ones((2, 1, 5, 5), np.float32))
    model.backward(np.ones((2, 18), np.float32))
    assert calls == [False]  # nested as the first stage: the parent passes its own False


def test_the_readme_residual_example_runs():
    readme = Path(__file__).parent.parent / "README.md"
    if not readme.exists():  # tests run from an installed wheel, outside the checkout
        pytest.skip("README.md is not beside the tests")
    (example,) = [
        b for b in readme.read_text().split("```python\n") if "class Block(nn.Module)" in b
    ]
    exec(compile(example.split("```")[0], str(readme), "exec"), {})
