"""LeakyReLU, GELU, ELU, Hardswish and Dropout2d: against fastcnn._reference's twins, the
float64 gradient check, torch's values at kinks and infinities (without NumPy warnings),
inplace, repr, and the same bits for any thread count."""

import warnings

import numpy as np
import pytest

import fastcnn
from fastcnn import _reference as ref
from fastcnn import gradcheck, nn

# (layer, its reference forward, its reference backward given (g, x))
ACTIVATIONS = {
    "leaky_relu": (
        lambda: nn.LeakyReLU(),
        lambda x: ref.leaky_relu(x, 0.01),
        lambda g, x: ref.leaky_relu_backward(g, x, 0.01),
    ),
    "leaky_relu_negative": (
        lambda: nn.LeakyReLU(-0.3),
        lambda x: ref.leaky_relu(x, -0.3),
        lambda g, x: ref.leaky_relu_backward(g, x, -0.3),
    ),
    "elu": (lambda: nn.ELU(), lambda x: ref.elu(x, 1.0), lambda g, x: ref.elu_backward(g, x, 1.0)),
    "elu_alpha": (
        lambda: nn.ELU(alpha=0.4),
        lambda x: ref.elu(x, 0.4),
        lambda g, x: ref.elu_backward(g, x, 0.4),
    ),
    "gelu": (
        lambda: nn.GELU(),
        lambda x: ref.gelu(x, "none"),
        lambda g, x: ref.gelu_backward(g, x, "none"),
    ),
    "gelu_tanh": (
        lambda: nn.GELU(approximate="tanh"),
        lambda x: ref.gelu(x, "tanh"),
        lambda g, x: ref.gelu_backward(g, x, "tanh"),
    ),
    "hardswish": (lambda: nn.Hardswish(), ref.hardswish, ref.hardswish_backward),
}

# the kinks, both sides of them, and values far out
SPECIAL = np.array([-40.0, -8.0, -3.0, -2.999, -1e-3, 0.0, 1e-3, 2.999, 3.0, 8.0, 40.0])


def _x(shape, seed=0, scale=3.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(ACTIVATIONS))
def test_activation_matches_its_reference(case, dtype):
    make, forward, backward = ACTIVATIONS[case]
    x = np.concatenate([_x(60), SPECIAL]).astype(dtype).reshape(1, 71)
    g = _x(x.shape, seed=1, scale=1.0).astype(dtype)
    layer = make()
    out = layer(x)
    grad = layer.backward(g)
    assert out.dtype == dtype and grad.dtype == dtype
    tolerance = {np.float32: 2e-6, np.float64: 1e-13}[dtype]
    np.testing.assert_allclose(out, forward(x), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grad, backward(g, x), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("case", sorted(ACTIVATIONS))
def test_activation_passes_gradcheck(case):
    x = _x((3, 2, 4))
    x[np.abs(np.abs(x) - 3) < 1e-3] += 0.01  # away from Hardswish's kinks
    x[np.abs(x) < 1e-3] += 0.01  # and LeakyReLU's and ELU's
    assert gradcheck(ACTIVATIONS[case][0](), x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(ACTIVATIONS))
def test_non_finite_and_huge_inputs_give_the_limits_without_warnings(case, dtype):
    info = np.finfo(dtype)
    x = np.array([-np.inf, info.min, -1e30, 1e30, info.max, np.inf, np.nan], dtype=dtype)
    layer = ACTIVATIONS[case][0]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warning
        out = layer(x)
        grad = layer.backward(np.ones_like(x))
    assert np.isnan(out[-1])
    assert np.all(np.isfinite(grad[:-1]))  # the gradient at +-inf is its limit
    assert out[5] == np.inf  # every one of these is x for large x


def test_values_at_the_infinities():
    x = np.array([-np.inf, np.inf])
    for layer, out, grad in [
        (nn.GELU(), [0, np.inf], [0, 1]),
        (nn.GELU("tanh"), [0, np.inf], [0, 1]),
        (nn.Hardswish(), [0, np.inf], [0, 1]),
        (nn.ELU(0.5), [-0.5, np.inf], [0, 1]),
        (nn.LeakyReLU(0.1), [-np.inf, np.inf], [0.1, 1]),
    ]:
        np.testing.assert_array_equal(layer(x), out)
        np.testing.assert_array_equal(layer.backward(np.ones(2)), grad)


def test_gelu_is_accurate_in_the_negative_tail():
    # x * Phi(x) at x = -30 is about -1.5e-196: 1 + erf(x / sqrt 2) would round it to 0
    x = np.array([-30.0, -10.0])
    np.testing.assert_allclose(nn.GELU()(x), ref.gelu(x, "none"), rtol=1e-12)
    assert nn.GELU()(x)[0] < 0


@pytest.mark.parametrize(
    "make", [lambda: nn.LeakyReLU(0.2, True), lambda: nn.ELU(inplace=True), nn.Hardswish]
)
def test_inplace_writes_into_the_input_and_backward_still_works(make):
    x = _x((2, 5))
    layer, plain = make(), make()
    plain.inplace = False
    want, original = plain(x), x.copy()
    if not layer.inplace:
        layer.inplace = True
    out = layer(x)
    assert out is x and not np.array_equal(x, original)
    np.testing.assert_array_equal(out, want)
    g = _x((2, 5), seed=1)
    np.testing.assert_array_equal(layer.backward(g), plain.backward(g))


def test_inplace_refuses_a_read_only_input():
    x = np.ones(3)
    x.flags.writeable = False
    with pytest.raises(
        ValueError, match=r"LeakyReLU\(inplace=True\): the input array is read-only"
    ):
        nn.LeakyReLU(inplace=True)(x)
    with pytest.raises(
        ValueError, match=r"Dropout2d\(inplace=True\): the input array is read-only"
    ):
        nn.Dropout2d(inplace=True)(x.reshape(1, 3, 1))


def test_reprs_are_torchs():
    assert repr(nn.LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(nn.LeakyReLU(0.2, inplace=True)) == "LeakyReLU(negative_slope=0.2, inplace=True)"
    assert repr(nn.ELU()) == "ELU(alpha=1.0)"
    assert repr(nn.ELU(0.5, True)) == "ELU(alpha=0.5, inplace=True)"
    assert repr(nn.GELU()) == "GELU(approximate='none')"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.Hardswish()) == "Hardswish()"
    assert repr(nn.Dropout2d()) == "Dropout2d(p=0.5, inplace=False)"


# ------------------------------------------------------------------------------ Dropout2d


@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (6, 5, 5)])
def test_dropout2d_zeroes_whole_planes(shape):
    x = np.abs(_x(shape)) + 1  # no zeros: the mask reads off the output
    layer = nn.Dropout2d(0.4, rng=3)
    out = layer(x)
    keep = out[..., 0, 0] != 0
    assert 0 < keep.sum() < keep.size
    np.testing.assert_allclose(out, ref.dropout2d(x, keep, 0.4), rtol=1e-15)
    g = _x(shape, seed=1)
    np.testing.assert_allclose(layer.backward(g), ref.dropout2d(g, keep, 0.4), rtol=1e-15)


def test_dropout2d_statistics_seeding_and_eval():
    x = np.ones((400, 250, 2, 2), np.float32)
    out = nn.Dropout2d(0.3, rng=7)(x)
    assert abs((out[..., 0, 0] != 0).mean() - 0.7) < 0.005  # 100k planes: 5 sigma is 0.0072
    np.testing.assert_array_equal(nn.Dropout2d(0.3, rng=7)(x), out)
    assert not np.array_equal(nn.Dropout2d(0.3, rng=8)(x), out)
    layer = nn.Dropout2d(0.3, rng=7).eval()
    assert layer(x) is x
    np.testing.assert_array_equal(layer.backward(np.full_like(x, 2)), 2)
    np.testing.assert_array_equal(nn.Dropout2d(1.0)(x), 0)
    np.testing.assert_array_equal(nn.Dropout2d(0.0)(x), x)


def test_dropout2d_inplace_and_non_finite():
    x = np.array([[[[np.inf]], [[np.nan]], [[1.0]]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = nn.Dropout2d(1.0, inplace=True)(x)
    assert out is x and np.isnan(x[0, :2]).all() and x[0, 2] == 0  # 0 * inf is NaN, as torch


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.GELU(), (64, 300)),
        (lambda: nn.GELU("tanh"), (64, 300)),
        (lambda: nn.ELU(), (64, 300)),
        (lambda: nn.LeakyReLU(), (64, 300)),
        (lambda: nn.Hardswish(), (64, 300)),
        (lambda: nn.Dropout2d(0.5, rng=0), (16, 8, 12, 12)),
    ],
)
def test_same_bits_for_any_thread_count(make, shape):
    x = _x(shape).astype(np.float32)
    g = _x(shape, seed=1).astype(np.float32)
    results = []
    for n in (1, 3):
        with fastcnn.threads(n):
            layer = make()
            results.append((layer(x), layer.backward(g)))
    for first, second in zip(*results, strict=True):
        np.testing.assert_array_equal(first, second)
