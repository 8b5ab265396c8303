"""conv2d / max_pool2d / avg_pool2d forward and every gradient against PyTorch (float32)."""

import numpy as np
import pytest

from fastcnn import functional as F

torch = pytest.importorskip("torch")
RTOL, ATOL = 1e-4, 1e-5

CONV = [
    ((8, 1, 28, 28), 6, (5, 5), 1, 2),  # LeNet conv1
    ((8, 6, 14, 14), 16, (5, 5), 1, 0),  # LeNet conv2
    ((4, 8, 16, 16), 8, (3, 3), 1, 1),  # VGG-like
    ((3, 3, 11, 9), 4, (3, 2), (2, 1), (1, 2)),
]


@pytest.mark.parametrize("case", CONV)
def test_conv2d_matches_torch(case):
    shape, k, kernel, stride, padding = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((k, shape[1], *kernel)) * 0.2).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
    out = F.conv2d(x, w, b, stride, padding)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=RTOL, atol=ATOL)
    g = rng.standard_normal(out.shape).astype(np.float32)
    t_out.backward(torch.tensor(g))
    grads = F.conv2d_backward(g, x, w, stride, padding)
    for mine, theirs in zip(grads, (tx.grad, tw.grad, tb.grad), strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=RTOL, atol=1e-4)


POOL = [
    ((8, 6, 28, 28), 2, None, 0),
    ((8, 16, 10, 10), 2, None, 0),
    ((2, 3, 9, 8), 3, 2, 1),
    ((2, 3, 9, 8), (3, 2), (1, 2), (1, 1)),
]


@pytest.mark.parametrize("case", POOL)
def test_max_pool2d_matches_torch(case):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    t_out, t_idx = torch.nn.functional.max_pool2d(tx, kernel, stride, padding, return_indices=True)
    out, idx = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    np.testing.assert_array_equal(out, t_out.detach().numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())
    g = rng.standard_normal(out.shape).astype(np.float32)
    t_out.backward(torch.tensor(g))
    np.testing.assert_allclose(
        F.max_pool2d_backward(g, idx, shape), tx.grad.numpy(), rtol=RTOL, atol=ATOL
    )


def test_max_pool2d_nan_and_ties_match_torch():
    x = np.array(
        [[[[1, 3, 3, 0], [3, np.nan, 2, np.nan], [np.nan, 0, 5, 5], [1, 1, 5, 5]]]], np.float32
    )
    for stride in (1, 2):
        t_out, t_idx = torch.nn.functional.max_pool2d(
            torch.tensor(x), 2, stride, return_indices=True
        )
        out, idx = F.max_pool2d(x, 2, stride, return_indices=True)
        np.testing.assert_array_equal(out, t_out.numpy())
        np.testing.assert_array_equal(idx, t_idx.numpy())


@pytest.mark.parametrize("case", POOL)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_matches_torch(case, count_include_pad):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    t_out = torch.nn.functional.avg_pool2d(
        tx, kernel, stride, padding, count_include_pad=count_include_pad
    )
    out = F.avg_pool2d(x, kernel, stride, padding, count_include_pad)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=RTOL, atol=ATOL)
    g = rng.standard_normal(out.shape).astype(np.float32)
    t_out.backward(torch.tensor(g))
    grad = F.avg_pool2d_backward(g, shape, kernel, stride, padding, count_include_pad)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape, out_features", [((64, 400), 120), ((256, 84), 10), ((3, 5, 7), 4)])
def test_linear_matches_torch(shape, out_features):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((out_features, shape[-1])) * 0.1).astype(np.float32)
    b = rng.standard_normal(out_features).astype(np.float32)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_out = torch.nn.functional.linear(tx, tw, tb)
    out = F.linear(x, w, b)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=RTOL, atol=ATOL)
    g = rng.standard_normal(out.shape).astype(np.float32)
    t_out.backward(torch.tensor(g))
    for mine, theirs in zip(F.linear_backward(g, x, w), (tx.grad, tw.grad, tb.grad), strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=RTOL, atol=1e-4)
