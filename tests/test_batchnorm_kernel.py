"""The BatchNorm kernels (csrc/_batchnorm.pyx, run by nn.BatchNorm1d/2d) against their
pure-NumPy twins in fastcnn._reference: training forward with the batch's statistics and
the running-statistics update, evaluation forward, and both backwards; odd shapes (N=1,
C=1, H*W=1, 2-D and 3-D BatchNorm1d input), non-contiguous input and an empty batch.

Not bit for bit (the statistics take a square root and divisions): float32 close, float64
tight. Gradients by finite differences are in test_kernel_gradients.py, the 1-vs-2-vs-3
thread bits in test_threads.py, torch parity in test_nn_torch_parity.py.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastcnn import _reference as ref
from fastcnn import nn

TOLERANCE = {np.float32: {"rtol": 1e-5, "atol": 1e-5}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}

SHAPES = [
    (5, 3, 4, 6),  # BatchNorm2d
    (1, 2, 3, 5),  # one image
    (7, 1, 1, 1),  # one channel of one pixel
    (6, 4),  # BatchNorm1d on (N, C)
    (3, 2, 7),  # BatchNorm1d on (N, C, L)
]


def make_layer(shape, dtype, rng, **options):
    layer_type = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    layer = layer_type(shape[1], dtype=dtype, **options)
    if layer.affine:
        layer.weight.data[...] = rng.uniform(0.5, 2, shape[1])
        layer.bias.data[...] = rng.standard_normal(shape[1])
    return layer


def affine_of(layer):
    if not layer.affine:
        return None, None
    return layer.weight.data, layer.bias.data


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_train_and_eval_match_the_reference(shape, dtype):
    rng = np.random.default_rng(len(shape) * 10 + shape[0])
    x = (3 * rng.standard_normal(shape) + 1).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    layer = make_layer(shape, dtype, rng)
    weight, bias = affine_of(layer)
    tolerance = TOLERANCE[dtype]

    # training: the batch's statistics, and the running estimates move towards them
    want, mean, var = ref.batch_norm_train(x, weight, bias, layer.eps)
    assert_allclose(layer(x), want, **tolerance)
    count = x.size // shape[1]
    assert_allclose(layer.running_mean, 0.1 * mean, **tolerance)
    assert_allclose(layer.running_var, 0.9 + 0.1 * var * count / (count - 1), **tolerance)
    want_grads = ref.batch_norm_backward(grad, x, mean, var, weight, layer.eps, True)
    got_grads = (layer.backward(grad), layer.weight.grad, layer.bias.grad)
    for got, expected in zip(got_grads, want_grads, strict=True):
        assert got.dtype == dtype
        assert_allclose(got, expected, **tolerance)

    # evaluation: the running statistics; the gradient does not reach them
    layer.eval().zero_grad()
    running = layer.running_mean.copy(), layer.running_var.copy()
    assert_allclose(
        layer(x), ref.batch_norm_eval(x, *running, weight, bias, layer.eps), **tolerance
    )
    want_grads = ref.batch_norm_backward(grad, x, *running, weight, layer.eps, False)
    got_grads = (layer.backward(grad), layer.weight.grad, layer.bias.grad)
    for got, expected in zip(got_grads, want_grads, strict=True):
        assert_allclose(got, expected, **tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_without_affine_or_running_stats_matches_the_reference(dtype):
    rng = np.random.default_rng(3)
    shape = (4, 3, 5, 2)
    x, grad = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    layer = nn.BatchNorm2d(3, affine=False, track_running_stats=False, dtype=dtype).eval()
    want, mean, var = ref.batch_norm_train(x, None, None, layer.eps)
    assert_allclose(layer(x), want, **TOLERANCE[dtype])  # batch statistics in eval too
    want_grad = ref.batch_norm_backward(grad, x, mean, var, None, layer.eps, True)[0]
    assert_allclose(layer.backward(grad), want_grad, **TOLERANCE[dtype])
    layer(x)
    assert layer.backward(grad, input_grad=False) is None


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_non_contiguous_input_gives_the_contiguous_bits(training):
    rng = np.random.default_rng(4)
    wide = rng.standard_normal((3, 4, 6, 10)).astype(np.float32)
    x = wide[:, :, 1:, ::2]  # strided views of input and gradient
    grad = wide.transpose(0, 1, 3, 2)[:, :, ::2, :5]
    results = []
    for x_in, grad_in in ((x, grad), (np.ascontiguousarray(x), np.ascontiguousarray(grad))):
        layer = make_layer(x.shape, np.float32, np.random.default_rng(5)).train(training)
        results.append((layer(x_in), layer.backward(grad_in), layer.weight.grad, layer.bias.grad))
    for got, want in zip(*results, strict=True):
        assert_array_equal(got, want)


def test_batch_norm_of_an_empty_batch_in_eval():
    layer = make_layer((0, 3, 4, 4), np.float32, np.random.default_rng(6)).eval()
    x = np.zeros((0, 3, 4, 4), np.float32)
    assert layer(x).shape == x.shape
    assert layer.backward(x).shape == x.shape
    assert_array_equal(layer.weight.grad, np.zeros(3))
    assert_array_equal(layer.bias.grad, np.zeros(3))


@pytest.mark.parametrize("offset, spread", [(0, 1), (1000, 0.01)])
def test_float32_batch_statistics_are_about_as_accurate_as_torch(offset, spread):
    """Each row is summed in float32 lanes (the statistics in double). On a batch whose mean
    is 1e5 standard deviations from zero, where the float32 output's rounding alone costs
    about 3e-3, the output stays within twice torch's float32 error from the float64 truth
    (a one-pass E[x^2] - E[x]^2 in float32 would be off by far more)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = (offset + spread * rng.standard_normal((32, 4, 16, 16))).astype(np.float32)
    normalise = torch.nn.functional.batch_norm
    truth = normalise(torch.from_numpy(x.astype(np.float64)), None, None, training=True)
    theirs = normalise(torch.from_numpy(x), None, None, training=True)
    ours = nn.BatchNorm2d(4, affine=False, track_running_stats=False)(x)
    our_error = np.abs(ours - truth.numpy()).max()
    assert our_error <= np.abs(theirs.numpy() - truth.numpy()).max() * 2 + 1e-7
