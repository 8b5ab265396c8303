"""nn.Concat: branches side by side, joined along a dim; its backward's routing (float64
gradient checks, shared modules, eval mode), torch parity, and its errors."""

import numpy as np
import pytest

import fastcnn
from fastcnn import nn


def inception_like(rng, dtype=np.float64):
    return nn.Concat(
        nn.Conv2d(3, 2, 1, rng=rng, dtype=dtype),
        nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, rng=rng, dtype=dtype), nn.ReLU()),
        nn.MaxPool2d(3, stride=1, padding=1),
    )


def test_joins_the_branches_along_the_channels():
    rng = np.random.default_rng(0)
    block = inception_like(rng)
    x = rng.standard_normal((2, 3, 5, 5))
    branches = list(block.children())
    expected = np.concatenate([branch(x) for branch in branches], axis=1)
    np.testing.assert_array_equal(block(x), expected)
    assert block(x).shape == (2, 8, 5, 5)
    assert set(block.state_dict()) == {"0.weight", "0.bias", "1.0.weight", "1.0.bias"}


@pytest.mark.parametrize("dim", [1, -1, 0])
def test_gradients(dim):
    rng = np.random.default_rng(1)
    block = nn.Concat(
        nn.Linear(4, 3, rng=rng, dtype=np.float64),
        nn.Sequential(nn.Linear(4, 2, rng=rng, dtype=np.float64), nn.Tanh()),
        dim=dim,
    )
    if dim == 0:  # along the batch: the branches' outputs must agree in features
        block = nn.Concat(
            nn.Linear(4, 3, rng=rng, dtype=np.float64), nn.Linear(4, 3, rng=rng, dtype=np.float64)
        )
        block.dim = 0
    assert fastcnn.gradcheck(block, rng.standard_normal((3, 4)))


def test_gradients_of_conv_branches_in_train_and_eval_mode():
    rng = np.random.default_rng(2)
    block = inception_like(rng)
    x = rng.standard_normal((2, 3, 5, 5))
    assert fastcnn.gradcheck(block, x)
    assert fastcnn.gradcheck(block.eval(), x)  # the Sequential branch runs compiled


def test_a_module_shared_by_two_branches_gets_both_gradients():
    rng = np.random.default_rng(3)
    shared = nn.Linear(4, 4, rng=rng, dtype=np.float64)
    block = nn.Concat(shared, nn.Sequential(shared, nn.Tanh()))
    assert fastcnn.gradcheck(block, rng.standard_normal((2, 4)))


def test_backward_without_input_grad_fills_the_parameters_and_returns_none():
    rng = np.random.default_rng(4)
    block = inception_like(rng)
    x = rng.standard_normal((2, 3, 5, 5))
    out = block(x)
    assert block.backward(np.ones_like(out), input_grad=False) is None
    assert all(p.grad is not None for p in block.parameters())


def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    block = inception_like(rng, np.float32)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    grad = rng.standard_normal((2, 8, 6, 6)).astype(np.float32)
    out = block(x)
    grad_x = block.backward(grad, input_grad=True)

    conv_a, (conv_b, _), _ = block[0], block[1], block[2]
    t_a = torch.nn.Conv2d(3, 2, 1)
    t_b = torch.nn.Conv2d(3, 3, 3, padding=1)
    for t_conv, conv in ((t_a, conv_a), (t_b, conv_b)):
        t_conv.load_state_dict({k: torch.from_numpy(v) for k, v in conv.state_dict().items()})
    tx = torch.from_numpy(x).requires_grad_()
    t_out = torch.cat(
        [t_a(tx), torch.relu(t_b(tx)), torch.nn.functional.max_pool2d(tx, 3, 1, 1)], dim=1
    )
    t_out.backward(torch.from_numpy(grad))
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv_b.weight.grad, t_b.weight.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("make", "x_shape", "error", "message"),
    [
        (lambda: nn.Concat(), None, ValueError, "Concat: give at least one branch"),
        (lambda: nn.Concat(3), None, TypeError, "Concat: int is not a Module"),
        (lambda: nn.Concat(nn.ReLU(), dim=1.0), None, TypeError, "dim must be an int, got float"),
        (
            lambda: nn.Concat(nn.Linear(4, 3, rng=0), nn.Flatten(0)),
            (2, 4),
            ValueError,
            r"branch 1's output has shape \(8,\) but branch 0's has \(2, 3\)",
        ),
        (
            lambda: nn.Concat(nn.Linear(4, 3, rng=0), nn.Linear(4, 3, rng=0), dim=2),
            (2, 4),
            ValueError,
            r"dim=2 is out of range for the branches' 2-d outputs",
        ),
        (
            lambda: nn.Concat(nn.Conv2d(3, 2, 1, rng=0), nn.Conv2d(3, 2, 3, rng=0)),
            (1, 3, 5, 5),
            ValueError,
            r"may differ along dim=1 only",
        ),
    ],
)
def test_bad_use_gets_a_clear_error(make, x_shape, error, message):
    with pytest.raises(error, match=message):
        block = make()
        block(np.zeros(x_shape, np.float32))


def test_backward_with_a_gradient_of_the_wrong_size_is_refused():
    block = nn.Concat(nn.Linear(4, 3, rng=0), nn.Linear(4, 2, rng=1))
    block(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"had 5 along dim=1: pass the gradient"):
        block.backward(np.zeros((2, 4), np.float32))
