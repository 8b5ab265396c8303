"""fastcnn.nn.init: torch.nn.init's formulas (gains, fans, bounds, standard deviations),
in place, seeded; and Conv2d/Linear default initialisation as PyTorch's."""

import math

import numpy as np
import pytest

from fastcnn import nn
from fastcnn.nn import init

# 295k samples: the sample standard deviation is within 0.3% of the true one at 5 sigma.
BIG = (256, 128, 3, 3)


def _array(shape=BIG):
    return np.empty(shape, dtype=np.float32)


@pytest.mark.parametrize(
    "nonlinearity, param",
    [
        ("linear", None),
        ("conv2d", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("leaky_relu", math.sqrt(5)),
        ("selu", None),
    ],
)
def test_calculate_gain_matches_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", [(3, 5), (6, 1, 5, 5), (16, 6, 5, 5), (4, 3, 2)])
def test_fans_match_torch(shape):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init._calculate_fan_in_and_fan_out(np.empty(shape)) == expected
    assert init._calculate_fan_in_and_fan_out(nn.Parameter(np.empty(shape))) == expected


def _check_uniform(array, bound):
    assert np.abs(array).max() <= bound * (1 + 1e-6)
    assert np.abs(array).max() > 0.999 * bound  # the whole range is used
    assert array.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert abs(array.mean()) < 0.01 * bound


def _check_normal(array, std):
    assert array.std() == pytest.approx(std, rel=0.01)
    assert abs(array.mean()) < 0.01 * std


FAN_IN, FAN_OUT = 128 * 9, 256 * 9


def test_kaiming_uniform():
    _check_uniform(init.kaiming_uniform_(_array(), rng=0), math.sqrt(6 / FAN_IN))
    _check_uniform(
        init.kaiming_uniform_(_array(), a=0.2, mode="fan_out", nonlinearity="leaky_relu", rng=0),
        math.sqrt(3) * math.sqrt(2 / (1 + 0.04)) / math.sqrt(FAN_OUT),
    )
    _check_uniform(
        init.kaiming_uniform_(_array(), nonlinearity="relu", rng=0), math.sqrt(6 / FAN_IN)
    )


def test_kaiming_normal():
    _check_normal(init.kaiming_normal_(_array(), nonlinearity="relu", rng=1), math.sqrt(2 / FAN_IN))
    _check_normal(
        init.kaiming_normal_(_array(), mode="fan_out", nonlinearity="tanh", rng=1),
        5 / 3 / math.sqrt(FAN_OUT),
    )


def test_xavier():
    _check_uniform(init.xavier_uniform_(_array(), rng=2), math.sqrt(6 / (FAN_IN + FAN_OUT)))
    _check_normal(
        init.xavier_normal_(_array(), gain=2.0, rng=2), 2 * math.sqrt(2 / (FAN_IN + FAN_OUT))
    )


def test_simple_fills_in_place_and_return_their_argument():
    array = _array((3, 4))
    assert init.zeros_(array) is array and not array.any()
    assert init.ones_(array) is array and (array == 1).all()
    assert init.constant_(array, 2.5) is array and (array == 2.5).all()
    param = nn.Parameter(np.zeros((2, 2)))
    data = param.data
    assert init.uniform_(param, 3, 4, rng=0) is param and param.data is data
    assert ((data >= 3) & (data < 4)).all()
    assert init.normal_(_array((1000,)), 5.0, 0.1, rng=0).mean() == pytest.approx(5, abs=0.02)


def test_same_seed_same_values_and_generator_accepted():
    a = init.kaiming_uniform_(_array((8, 8)), rng=3)
    b = init.kaiming_uniform_(_array((8, 8)), rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, init.kaiming_uniform_(_array((8, 8)), rng=4))
    # Without a seed every call draws fresh values.
    assert not np.array_equal(init.uniform_(_array((8, 8))), init.uniform_(_array((8, 8))))


@pytest.mark.parametrize(
    "make, torch_make",
    [
        (lambda: nn.Conv2d(128, 256, 3, rng=0), lambda t: t.nn.Conv2d(128, 256, 3)),
        (lambda: nn.Linear(1024, 300, rng=0), lambda t: t.nn.Linear(1024, 300)),
    ],
)
def test_default_layer_init_is_torchs(make, torch_make):
    """Weights and biases U(+-1/sqrt(fan_in)), like torch's (compared by distribution)."""
    layer = make()
    fan_in, _ = init._calculate_fan_in_and_fan_out(layer.weight)
    bound = 1 / math.sqrt(fan_in)
    _check_uniform(layer.weight.data, bound)
    assert np.abs(layer.bias.data).max() <= bound
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    torch = pytest.importorskip("torch")
    theirs = torch_make(torch)
    assert theirs.weight.detach().abs().max().item() <= bound * (1 + 1e-6)
    assert theirs.weight.detach().std().item() == pytest.approx(layer.weight.data.std(), rel=0.02)


def test_reset_parameters_redraws():
    layer = nn.Linear(5, 5, rng=0)
    before = layer.weight.data.copy()
    layer.reset_parameters(rng=1)
    assert not np.array_equal(before, layer.weight.data)
    layer.reset_parameters(rng=0)
    np.testing.assert_array_equal(before, layer.weight.data)
