"""The layers' policy for inputs and gradients (fastcnn/_validation.py's grad_like):

- a layer checks its input once and runs the same kernel as ``functional``: same bits;
- any memory layout of an input or a gradient gives the bits of a contiguous copy;
- the gradient given to ``backward`` is cast to the layer's dtype, as PyTorch's autograd
  does, while functional's ``*_backward`` refuse mixed dtypes, as torch.nn.functional does.
"""

import numpy as np
import pytest

from fastcnn import functional as F
from fastcnn import nn

F32, F64 = np.float32, np.float64


def _layers():
    """(name, layer factory, input shape) of every layer with one input."""
    return [
        ("Linear", lambda: nn.Linear(6, 4, rng=0), (3, 5, 6)),
        ("Linear-no-bias", lambda: nn.Linear(6, 4, bias=False, rng=0), (3, 6)),
        ("ReLU", nn.ReLU, (2, 3, 4, 6)),
        ("Sigmoid", nn.Sigmoid, (2, 3, 4, 6)),
        ("Tanh", nn.Tanh, (2, 3, 4, 6)),
        ("SiLU", nn.SiLU, (2, 3, 4, 6)),
        ("Softmax", nn.Softmax, (2, 3, 4, 6)),
        ("LogSoftmax", nn.LogSoftmax, (2, 3, 4, 6)),
        ("MaxPool2d", lambda: nn.MaxPool2d(3, 2, 1), (2, 3, 8, 6)),
        ("AvgPool2d", lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 8, 6)),
        ("BatchNorm1d", lambda: nn.BatchNorm1d(3), (4, 3, 6)),
        ("BatchNorm2d", lambda: nn.BatchNorm2d(3), (2, 3, 4, 6)),
        ("Dropout", lambda: nn.Dropout(0.5, rng=0), (2, 3, 4, 6)),
        ("Flatten", nn.Flatten, (2, 3, 4, 6)),
        ("Identity", nn.Identity, (2, 3, 4, 6)),
        ("Conv2d", lambda: nn.Conv2d(3, 4, 3, padding=1, rng=0), (2, 3, 5, 6)),
        ("Conv2d-strided", lambda: nn.Conv2d(3, 8, 3, stride=2, rng=0), (2, 3, 7, 8)),
        (
            "Sequential-fused",
            lambda: nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.ReLU(), nn.MaxPool2d(2)),
            (2, 3, 6, 8),
        ),
        (
            "Sequential-eval",
            lambda: nn.Sequential(
                nn.Conv2d(3, 4, 3, rng=0),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(4 * 2 * 3, 5, rng=1),
            ).eval(),
            (2, 3, 6, 8),
        ),  # fmt: skip
        ("LeakyReLU", nn.LeakyReLU, (2, 3, 4, 6)),
        ("GELU", nn.GELU, (2, 3, 4, 6)),
        ("ELU", nn.ELU, (2, 3, 4, 6)),
        ("Hardswish", nn.Hardswish, (2, 3, 4, 6)),
        ("Dropout2d", lambda: nn.Dropout2d(0.5, rng=0), (2, 3, 4, 6)),
        ("GroupNorm", lambda: nn.GroupNorm(1, 3), (2, 3, 4, 6)),
        ("LayerNorm", lambda: nn.LayerNorm(6), (2, 3, 4, 6)),
        ("AdaptiveAvgPool2d", lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 6)),
        ("AdaptiveMaxPool2d", lambda: nn.AdaptiveMaxPool2d(1), (2, 3, 4, 6)),
    ]


LAYERS = pytest.mark.parametrize(
    "make, shape", [c[1:] for c in _layers()], ids=[c[0] for c in _layers()]
)


def _strided(array):
    """``array``'s values in a non-contiguous view (every other column of a wider array)."""
    wide = np.zeros((*array.shape[:-1], 2 * array.shape[-1]), array.dtype)
    wide[..., ::2] = array
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    return view


def _run(layer, x, grad_for):
    """The output and the input gradient of one forward/backward of ``layer``."""
    out = layer(x)
    return out, layer.backward(grad_for(out), input_grad=True)


@LAYERS
def test_layout_of_input_and_gradient_does_not_change_the_bits(make, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(F32)
    out, grad_x = _run(make(), x, lambda out: np.ones_like(out))
    grad = rng.standard_normal(out.shape).astype(F32)
    out, grad_x = _run(make(), x, lambda out: grad)
    strided_out, strided_grad_x = _run(make(), _strided(x), lambda out: _strided(grad))
    np.testing.assert_array_equal(strided_out, out)
    np.testing.assert_array_equal(strided_grad_x, grad_x)


@LAYERS
def test_gradient_is_cast_to_the_layers_dtype(make, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(F32)
    grad = rng.standard_normal(make()(x).shape)
    _, expected = _run(make(), x, lambda out: grad.astype(F32))
    _, grad_x = _run(make(), x, lambda out: grad)  # float64 into a float32 layer
    assert grad_x.dtype == F32
    np.testing.assert_array_equal(grad_x, expected)


def test_layers_give_functionals_bits():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 7, 9)).astype(F32)
    linear = nn.Linear(9, 5, rng=0)
    np.testing.assert_array_equal(linear(x), F.linear(x, linear.weight.data, linear.bias.data))
    np.testing.assert_array_equal(nn.ReLU()(x), F.relu(x))
    np.testing.assert_array_equal(nn.MaxPool2d(3, 2, 1)(x), F.max_pool2d(x, 3, 2, 1))
    np.testing.assert_array_equal(nn.AvgPool2d(2, 1, 1, False)(x), F.avg_pool2d(x, 2, 1, 1, False))


def test_linear_backward_gives_functionals_bits():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 7)).astype(F32)  # more than one chunk of rows
    grad = rng.standard_normal((20, 5)).astype(F32)
    layer = nn.Linear(7, 5, rng=0)
    layer(x)
    grad_x = layer.backward(grad)
    expected = F.linear_backward(grad, x, layer.weight.data)
    np.testing.assert_array_equal(grad_x, expected[0])
    np.testing.assert_array_equal(layer.weight.grad, expected[1])
    np.testing.assert_array_equal(layer.bias.grad, expected[2])


def test_functional_backward_refuses_a_gradient_of_another_dtype():
    x, weight = np.ones((2, 3), F32), np.ones((4, 3), F32)
    with pytest.raises(TypeError, match=r"linear_backward: grad_output is float64 but the input"):
        F.linear_backward(np.ones((2, 4), F64), x, weight)
    with pytest.raises(TypeError, match=r"relu_backward: grad_output is float64 but the input"):
        F.relu_backward(np.ones((2, 3), F64), x)


def test_relu_keeps_a_0d_shape():
    assert F.relu(np.float32(-2.0)).shape == ()
    relu = nn.ReLU()
    assert relu(np.float32(3.0)).shape == ()
    assert relu.backward(np.float32(2.0)).shape == ()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: nn.Linear(3, 2, bias="no"), TypeError, r"Linear: bias must be True or False"),
        (
            lambda: nn.BatchNorm2d(3, affine="yes"),
            TypeError,
            r"BatchNorm2d: affine must be True or False, got 'yes'",
        ),
        (
            lambda: nn.BatchNorm1d(3, track_running_stats=1),
            TypeError,
            r"BatchNorm1d: track_running_stats must be True or False, got 1",
        ),
        (
            lambda: nn.BatchNorm1d(3, eps=float("nan")),
            ValueError,
            r"BatchNorm1d: eps must be a number in \(0, inf\], got nan",
        ),
        (
            lambda: nn.BatchNorm1d(3, momentum=float("nan")),
            ValueError,
            r"BatchNorm1d: momentum must be a number in \[0, 1\], got nan",
        ),
        (
            lambda: nn.Dropout(float("nan")),
            ValueError,
            r"Dropout: p must be a number in \[0, 1\], got nan",
        ),
        (lambda: nn.Softmax(dim=True), TypeError, r"Softmax: dim must be an int, got bool"),
        (lambda: nn.Flatten(end_dim=None), TypeError, r"Flatten: end_dim must be an int"),
        (
            lambda: nn.init.uniform_(np.zeros(3), a=float("nan")),
            ValueError,
            r"uniform_: a must be a number",
        ),
        (
            lambda: nn.init.normal_(np.zeros(3), std=-1.0),
            ValueError,
            r"normal_: std must be a number in \[0, inf\], got -1.0",
        ),
        (
            lambda: nn.init.xavier_uniform_(np.zeros((2, 2)), gain="2"),
            TypeError,
            r"xavier_uniform_: gain must be a real number, got str '2'",
        ),
        (
            lambda: nn.AvgPool2d(2)(np.ones((1, 0, 4, 4), F32)),
            ValueError,
            r"AvgPool2d: input of shape \(1, 0, 4, 4\) has an empty channel or spatial dim",
        ),
        (
            lambda: nn.MaxPool2d(2)(np.ones((1, 1, 4), F32)),
            ValueError,
            r"MaxPool2d: expected 4-D input, got shape \(1, 1, 4\)",
        ),
        (
            lambda: nn.AvgPool2d((1, 5))(np.ones((1, 1, 4, 4), F32)),
            ValueError,
            r"AvgPool2d: kernel size \(1, 5\) is larger than the padded input \(4, 4\)",
        ),
        (
            lambda: F.max_pool2d(np.ones((1, 1, 4, 4), F32), 2, return_indices="no"),
            TypeError,
            r"max_pool2d: return_indices must be True or False, got 'no'",
        ),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_empty_batch_runs():
    x = np.ones((0, 2, 4, 4), F32)
    pool = nn.MaxPool2d(2)
    assert pool(x).shape == (0, 2, 2, 2)
    assert pool.backward(np.ones((0, 2, 2, 2), F32)).shape == x.shape
    linear = nn.Linear(4, 3)
    assert linear(x).shape == (0, 2, 4, 3)
    assert linear.backward(np.ones((0, 2, 4, 3), F32)).shape == x.shape
    np.testing.assert_array_equal(linear.weight.grad, 0)
