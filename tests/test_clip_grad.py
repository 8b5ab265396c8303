"""fastcnn.nn.utils: clip_grad_norm_ and clip_grad_value_ against torch.nn.utils."""

import math
import warnings

import numpy as np
import pytest

import fastcnn
from fastcnn.nn import Parameter
from fastcnn.nn.utils import clip_grad_norm_, clip_grad_value_

SHAPES = [(4, 3), (5,), (2, 2, 3)]


def gradients(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def with_grads(grads):
    params = [Parameter(np.zeros(g.shape, g.dtype)) for g in grads]
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.copy()
    params.append(Parameter(np.zeros(2, np.float32)))  # no grad: skipped
    return params


def torch_with_grads(torch, grads):
    params = [
        torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype)) for g in grads
    ]
    for param, grad in zip(params, grads, strict=True):
        param.grad = torch.tensor(grad)
    return [*params, torch.nn.Parameter(torch.zeros(2))]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])  # clips / leaves alone
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    grads = gradients()
    params = with_grads(grads)
    total = clip_grad_norm_(params, max_norm, norm_type)
    torch_params = torch_with_grads(torch, grads)
    torch_total = torch.nn.utils.clip_grad_norm_(torch_params, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(torch_total.item(), rel=1e-6)
    for ours, theirs in zip(params[:-1], torch_params, strict=False):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=2e-6, atol=1e-7)
    assert params[-1].grad is None
    # Clipped gradients have (to rounding) the norm max_norm.
    assert clip_grad_norm_(params, max_norm, norm_type) == pytest.approx(min(total, max_norm))


def test_clip_grad_norm_in_float64_is_the_formula():
    grads = gradients(np.float64, seed=1)
    params = with_grads(grads)
    expected_total = math.sqrt(sum(float(np.sum(g**2)) for g in grads))
    total = clip_grad_norm_(iter(params), 0.25)
    assert total == pytest.approx(expected_total, rel=1e-14)
    for param, grad in zip(params, grads, strict=False):
        assert param.grad.dtype == np.float64
        np.testing.assert_allclose(param.grad, grad * 0.25 / (expected_total + 1e-6), rtol=1e-14)


def test_clip_grad_norm_of_a_single_parameter_and_of_none():
    param = Parameter(np.zeros(2, np.float32))
    param.grad = np.array([3.0, 4.0], np.float32)
    assert clip_grad_norm_(param, 1.0) == 5.0
    np.testing.assert_allclose(param.grad, [0.6, 0.8], rtol=1e-6)
    assert clip_grad_norm_([Parameter(np.zeros(2))], 1.0) == 0.0
    with pytest.warns(UserWarning, match="empty generator, no gradient clipping"):
        assert clip_grad_norm_((p for p in []), 1.0) == 0.0


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_clip_grad_norm_with_non_finite_gradients_matches_torch(bad):
    torch = pytest.importorskip("torch")
    grads = gradients(seed=2)
    grads[1][2] = bad
    params = with_grads(grads)
    with pytest.raises(RuntimeError, match="non-finite, so it cannot be clipped"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(params[0].grad, grads[0])  # left alone
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warning
        total = clip_grad_norm_(params, 1.0)
    torch_params = torch_with_grads(torch, grads)
    torch_total = torch.nn.utils.clip_grad_norm_(torch_params, 1.0)
    np.testing.assert_array_equal(total, torch_total.item())
    for ours, theirs in zip(params[:-1], torch_params, strict=False):
        np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())


def test_clip_grad_value_matches_torch():
    torch = pytest.importorskip("torch")
    grads = gradients(seed=3)
    grads[0][0, 0] = math.nan
    params = with_grads(grads)
    assert clip_grad_value_(params, 0.5) is None
    torch_params = torch_with_grads(torch, grads)
    torch.nn.utils.clip_grad_value_(torch_params, 0.5)
    for ours, theirs in zip(params[:-1], torch_params, strict=False):
        np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())
    assert np.abs(np.concatenate([p.grad.ravel() for p in params[:-1]])[1:]).max() == 0.5


def test_nn_utils_is_importable_as_in_torch():
    assert fastcnn.nn.utils.clip_grad_norm_ is clip_grad_norm_
    assert "utils" in fastcnn.nn.__all__
