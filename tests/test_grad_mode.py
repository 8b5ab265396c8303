"""fastcnn.no_grad, enable_grad, set_grad_enabled, is_grad_enabled and inference_mode:
torch's names and meaning, per thread; under no_grad a forward keeps no cache."""

import threading

import numpy as np
import pytest

import fastcnn
from fastcnn import models, nn


def test_no_grad_as_block_and_decorator_nests_and_restores():
    assert fastcnn.is_grad_enabled()
    with fastcnn.no_grad():
        assert not fastcnn.is_grad_enabled()
        with fastcnn.enable_grad():
            assert fastcnn.is_grad_enabled()
        assert not fastcnn.is_grad_enabled()
    assert fastcnn.is_grad_enabled()

    @fastcnn.no_grad()
    def inside():
        return fastcnn.is_grad_enabled()

    assert inside() is False and fastcnn.is_grad_enabled()
    with pytest.raises(KeyError), fastcnn.no_grad():
        raise KeyError("restored even on an exception")
    assert fastcnn.is_grad_enabled()


def test_set_grad_enabled_acts_at_once_and_as_a_block():
    fastcnn.set_grad_enabled(False)
    try:
        assert not fastcnn.is_grad_enabled()
    finally:
        fastcnn.set_grad_enabled(True)
    with fastcnn.set_grad_enabled(False):
        assert not fastcnn.is_grad_enabled()
    assert fastcnn.is_grad_enabled()
    with fastcnn.inference_mode():
        assert not fastcnn.is_grad_enabled()
        with fastcnn.inference_mode(False):
            assert fastcnn.is_grad_enabled()
    with pytest.raises(TypeError, match="set_grad_enabled: mode must be True or False"):
        fastcnn.set_grad_enabled("no")
    with pytest.raises(TypeError, match="inference_mode: mode must be True or False"):
        fastcnn.inference_mode(1)


def test_the_mode_is_per_thread():
    seen = []
    with fastcnn.no_grad():
        thread = threading.Thread(target=lambda: seen.append(fastcnn.is_grad_enabled()))
        thread.start()
        thread.join()
    assert seen == [True]


@pytest.mark.parametrize("training", [True, False])
def test_no_grad_forward_gives_the_same_output_and_refuses_backward(training):
    model = models.LeNet5(rng=0).train(training)
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    expected = model(x)
    with fastcnn.no_grad():
        out = model(x)
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(RuntimeError, match=r"ran under fastcnn.no_grad\(\)"):
        model.backward(np.ones_like(out))
    conv = nn.Conv2d(1, 2, 3, rng=0)
    with fastcnn.no_grad():
        conv(x)
    with pytest.raises(RuntimeError, match="Conv2d.backward.*no_grad"):
        conv.backward(np.ones((3, 2, 26, 26), np.float32))


def test_evaluate_and_predict_keep_no_cache():
    model = models.LeNet5(rng=0)
    x = np.zeros((4, 1, 28, 28), np.float32)
    fastcnn.train.predict(model, x)
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones((4, 10), np.float32))
    assert model.training  # the mode is restored
