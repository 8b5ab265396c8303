"""fastcnn.gradcheck itself: functions with an explicit backward, failure reports, refusals,
and that checking a module leaves its gradients and buffers as they were."""

import numpy as np
import pytest

import fastcnn
from fastcnn import GradcheckError, functional, gradcheck, nn


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_function_with_backward_conv2d():
    x, w, b = (
        _rng().standard_normal((2, 2, 5, 5)),
        _rng(1).standard_normal((3, 2, 3, 3)),
        _rng(2).standard_normal(3),
    )

    def backward(grad, x, w, b):
        return functional.conv2d_backward(grad, x, w, stride=2, padding=1)

    def forward(x, w, b):
        return functional.conv2d(x, w, b, stride=2, padding=1)

    assert gradcheck(forward, (x, w, b), backward=backward) is True


def test_function_inputs_without_gradient_are_skipped():
    x = _rng().standard_normal((2, 3, 4, 4))

    def forward(x, kernel):
        return functional.max_pool2d(x, kernel)

    def backward(grad, x, kernel):
        _, indices = functional.max_pool2d(x, kernel, return_indices=True)
        return functional.max_pool2d_backward(grad, indices, x.shape), None

    assert gradcheck(forward, (x, 2), backward=backward)


def test_function_with_wrong_backward_reports_worst_element():
    x = _rng().standard_normal((3, 4))

    def wrong_backward(grad, x):
        grad_x = 2 * x * grad
        grad_x[2, 1] += 0.5
        return (grad_x,)

    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: x**2, (x,), backward=wrong_backward)
    message = str(info.value)
    assert "input 0 at index (2, 1)" in message
    assert "|difference| 0.5 > atol + rtol * |numerical|" in message
    assert "1 of 12 elements fail" in message
    assert gradcheck(lambda x: x**2, (x,), backward=wrong_backward, raise_exception=False) is False


def test_nan_gradient_fails():
    x = _rng().standard_normal(4)
    with pytest.raises(GradcheckError, match="analytical nan"):
        gradcheck(np.sin, (x,), backward=lambda g, x: np.full_like(x, np.nan))


def test_tolerances_are_respected():
    x = _rng().standard_normal(5)

    def off_by_a_little(g, x):
        return g * np.cos(x) + 0.01

    assert not gradcheck(np.sin, (x,), backward=off_by_a_little, raise_exception=False)
    assert gradcheck(np.sin, (x,), backward=off_by_a_little, atol=0.02)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: gradcheck(nn.Linear(3, 2, rng=0), np.zeros((2, 3))),
            TypeError,
            r"parameter 'weight' is float32; finite differences need float64.*module\.double\(\)",
        ),
        (
            lambda: gradcheck(nn.ReLU(), np.zeros((2, 3), np.float32)),
            TypeError,
            r"the input \(inputs\[0\]\) is float32",
        ),
        (lambda: gradcheck(np.sin, (np.zeros(3),)), TypeError, r"function with backward="),
        (
            lambda: gradcheck(nn.ReLU(), np.zeros(3), backward=lambda g, x: g),
            TypeError,
            r"backward= is for functions",
        ),
        (
            lambda: gradcheck(np.sin, (np.zeros(3), np.zeros(3)), backward=lambda g, x, y: (g,)),
            TypeError,
            r"returned 1 gradients for 2 inputs",
        ),
    ],
)
def test_refusals(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_module_backward_returning_none_fails_clearly():
    class NoInputGrad(nn.ReLU):
        def backward(self, grad_output, input_grad=True):
            return None

    with pytest.raises(GradcheckError, match=r"returned None as the gradient of the input"):
        gradcheck(NoInputGrad(), np.ones(3))


def test_module_gradients_and_buffers_are_restored():
    model = nn.Sequential(
        nn.Linear(3, 4, rng=0, dtype=np.float64), nn.BatchNorm1d(4, dtype=np.float64)
    )
    x = _rng().standard_normal((5, 3))
    model(x)
    model.backward(np.ones((5, 4)))
    grads = [p.grad.copy() for p in model.parameters()]
    state = {k: v.copy() for k, v in model.state_dict().items()}
    assert gradcheck(model, x)
    for param, grad in zip(model.parameters(), grads, strict=True):
        np.testing.assert_array_equal(param.grad, grad)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_exported_from_package():
    assert fastcnn.gradcheck is gradcheck
    assert "gradcheck" in fastcnn.__all__ and "GradcheckError" in fastcnn.__all__
    assert issubclass(GradcheckError, RuntimeError)
