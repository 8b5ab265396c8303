"""Float64 finite-difference checks of the kernels' backward passes.

PyTorch's gradcheck tolerances (eps 1e-6, atol 1e-5, rtol 1e-3): every element for small
shapes, plus Chainer's check along a random direction, which is cheap for larger ones.
"""

import numpy as np
import pytest

from fastcnn import functional as F
from fastcnn import nn
from fastcnn.gradcheck import gradcheck

EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3


def numeric_grad(f, x, eps=EPS):
    """d f(x) / dx by central differences, element by element (f returns a scalar)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        up = f()
        flat[i] = keep - eps
        down = f()
        flat[i] = keep
        gflat[i] = (up - down) / (2 * eps)
    return grad


def directional_check(f, analytic, arrays, rng):
    """Chainer's check: f(x + eps*d) - f(x - eps*d) over 2 eps vs <grad, d>."""
    dirs = [rng.standard_normal(a.shape) for a in arrays]
    for a, d in zip(arrays, dirs, strict=True):
        a += EPS * d
    up = f()
    for a, d in zip(arrays, dirs, strict=True):
        a -= 2 * EPS * d
    down = f()
    for a, d in zip(arrays, dirs, strict=True):
        a += EPS * d
    numeric = (up - down) / (2 * EPS)
    predicted = sum(np.vdot(g, d) for g, d in zip(analytic, dirs, strict=True))
    assert numeric == pytest.approx(predicted, rel=RTOL, abs=ATOL)


CONV = [
    ((2, 2, 5, 6), 3, (3, 2), (1, 1), (1, 0)),
    ((1, 3, 7, 5), 2, (3, 3), (2, 2), (1, 1)),
    ((3, 1, 6, 6), 2, (2, 4), (1, 3), (0, 2)),
]


@pytest.mark.parametrize("case", CONV)
def test_conv2d_gradients_elementwise(case):
    shape, k, kernel, stride, padding = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((k, shape[1], *kernel))
    b = rng.standard_normal(k)
    out = F.conv2d(x, w, b, stride, padding)
    probe = rng.standard_normal(out.shape)  # loss = <conv2d(x, w, b), probe>

    def loss():
        return float(np.vdot(F.conv2d(x, w, b, stride, padding), probe))

    grad_x, grad_w, grad_b = F.conv2d_backward(probe, x, w, stride, padding)
    for analytic, wrt in ((grad_x, x), (grad_w, w), (grad_b, b)):
        np.testing.assert_allclose(analytic, numeric_grad(loss, wrt), rtol=RTOL, atol=ATOL)


def test_conv2d_gradients_directional_lenet_shape():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 14, 14))
    w = rng.standard_normal((16, 6, 5, 5))
    b = rng.standard_normal(16)
    probe = rng.standard_normal((4, 16, 10, 10))

    def loss():
        return float(np.vdot(F.conv2d(x, w, b), probe))

    directional_check(loss, F.conv2d_backward(probe, x, w), [x, w, b], rng)


POOL = [
    ((2, 2, 6, 7), (2, 2), None, (0, 0)),
    ((1, 2, 7, 7), (3, 3), (2, 2), (1, 1)),
    ((2, 1, 5, 8), (3, 2), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("case", POOL)
def test_max_pool2d_gradient_elementwise(case):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(2)
    # distinct values spaced far beyond eps: the argmax does not flip during differencing
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.1
    out, index = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    probe = rng.standard_normal(out.shape)

    def loss():
        return float(np.vdot(F.max_pool2d(x, kernel, stride, padding), probe))

    analytic = F.max_pool2d_backward(probe, index, shape)
    np.testing.assert_allclose(analytic, numeric_grad(loss, x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", POOL)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_gradient_elementwise(case, count_include_pad):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    out = F.avg_pool2d(x, kernel, stride, padding, count_include_pad)
    probe = rng.standard_normal(out.shape)

    def loss():
        return float(np.vdot(F.avg_pool2d(x, kernel, stride, padding, count_include_pad), probe))

    analytic = F.avg_pool2d_backward(probe, shape, kernel, stride, padding, count_include_pad)
    np.testing.assert_allclose(analytic, numeric_grad(loss, x), rtol=RTOL, atol=ATOL)


def test_col2im_is_the_gradient_of_im2col():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 5, 4))
    probe = rng.standard_normal(F.im2col(x, (2, 3), 1, 1).shape)

    def loss():
        return float(np.vdot(F.im2col(x, (2, 3), 1, 1), probe))

    analytic = F.col2im(probe, x.shape, (2, 3), 1, 1)
    np.testing.assert_allclose(analytic, numeric_grad(loss, x), rtol=RTOL, atol=ATOL)


def test_linear_gradients_elementwise():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 2, 6))
    w = rng.standard_normal((4, 6))
    b = rng.standard_normal(4)
    probe = rng.standard_normal((5, 2, 4))

    def loss():
        return float(np.vdot(F.linear(x, w, b), probe))

    grad_x, grad_w, grad_b = F.linear_backward(probe, x, w)
    for analytic, wrt in ((grad_x, x), (grad_w, w), (grad_b, b)):
        np.testing.assert_allclose(analytic, numeric_grad(loss, wrt), rtol=RTOL, atol=ATOL)


def _batch_norm_with_statistics(layer, rng):
    """layer with running statistics and affine parameters that are not the defaults."""
    layer(3 * rng.standard_normal((6, layer.num_features, 3)) + 1)
    layer.weight.data[...] = rng.uniform(0.5, 2, layer.num_features)
    layer.bias.data[...] = rng.standard_normal(layer.num_features)
    return layer


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda rng: nn.BatchNorm2d(1, dtype=np.float64), (1, 1, 3, 4)),  # N=1, C=1
        (lambda rng: nn.BatchNorm2d(2, dtype=np.float64), (5, 2, 1, 1)),  # H*W=1
        (
            lambda rng: _batch_norm_with_statistics(
                nn.BatchNorm1d(3, dtype=np.float64), rng
            ).eval(),
            (4, 3, 5),
        ),
    ],
    ids=["train-N1-C1", "train-HW1", "eval-1d"],
)
def test_batch_norm_kernel_gradients(make, shape):
    # (the layers' usual shapes are in test_nn_gradients.py; these are the kernel's edges)
    rng = np.random.default_rng(6)
    assert gradcheck(make(rng), rng.standard_normal(shape)) is True
