"""Every layer and loss passes a float64 finite-difference check of its input and parameter
gradients (fastcnn.gradcheck), and the check catches a deliberately wrong backward."""

from collections import OrderedDict

import numpy as np
import pytest

from fastcnn import GradcheckError, gradcheck, nn

F64 = np.float64


def _images(shape=(2, 3, 6, 6), seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


LAYERS = {
    "conv": lambda: (nn.Conv2d(3, 4, 3, rng=0, dtype=F64), _images()),
    "conv_stride_pad": lambda: (
        nn.Conv2d(3, 2, (3, 2), stride=(2, 1), padding=(1, 0), rng=1, dtype=F64),
        _images(),
    ),
    "conv_no_bias": lambda: (nn.Conv2d(3, 2, 1, bias=False, rng=2, dtype=F64), _images()),
    "maxpool": lambda: (nn.MaxPool2d(2), _images()),
    "maxpool_overlap_pad": lambda: (nn.MaxPool2d(3, stride=2, padding=1), _images()),
    "avgpool": lambda: (nn.AvgPool2d(2), _images()),
    "avgpool_pad": lambda: (nn.AvgPool2d(3, 2, 1), _images()),
    "avgpool_pad_exclude": lambda: (nn.AvgPool2d(3, 2, 1, count_include_pad=False), _images()),
    "linear": lambda: (nn.Linear(5, 4, rng=0, dtype=F64), _images((3, 5))),
    "linear_3d_input": lambda: (nn.Linear(5, 4, rng=0, dtype=F64), _images((2, 3, 5))),
    "linear_no_bias": lambda: (nn.Linear(5, 4, bias=False, rng=0, dtype=F64), _images((3, 5))),
    "flatten": lambda: (nn.Flatten(), _images()),
    "flatten_middle": lambda: (nn.Flatten(1, 2), _images()),
    "relu": lambda: (nn.ReLU(), _images()),
    "sigmoid": lambda: (nn.Sigmoid(), 3 * _images()),
    "tanh": lambda: (nn.Tanh(), _images()),
    "silu": lambda: (nn.SiLU(), 3 * _images()),
    "softmax_dim1": lambda: (nn.Softmax(dim=1), _images()),
    "softmax_last": lambda: (nn.Softmax(dim=-1), _images()),
    "log_softmax_dim1": lambda: (nn.LogSoftmax(dim=1), _images()),
    "log_softmax_last": lambda: (nn.LogSoftmax(dim=-1), 3 * _images()),
    "identity": lambda: (nn.Identity(), _images()),
    "dropout_eval": lambda: (nn.Dropout(0.5, rng=0).eval(), _images()),
    "batchnorm1d_train_2d": lambda: (nn.BatchNorm1d(3, dtype=F64), _images((5, 3))),
    "batchnorm1d_train_3d": lambda: (nn.BatchNorm1d(3, dtype=F64), _images((4, 3, 5))),
    "batchnorm2d_train": lambda: (nn.BatchNorm2d(3, dtype=F64), _images()),
    "batchnorm2d_eval": lambda: (_trained_batchnorm().eval(), _images()),
    "batchnorm2d_no_affine": lambda: (nn.BatchNorm2d(3, affine=False, dtype=F64), _images()),
    "batchnorm2d_no_running": lambda: (
        nn.BatchNorm2d(3, track_running_stats=False, dtype=F64).eval(),
        _images(),
    ),
}


def _trained_batchnorm():
    """A BatchNorm2d whose running statistics and affine parameters are not the defaults."""
    bn = nn.BatchNorm2d(3, dtype=F64)
    bn(3 * _images(seed=5) + 1)
    rng = np.random.default_rng(6)
    bn.weight.data[...] = rng.uniform(0.5, 2, 3)
    bn.bias.data[...] = rng.standard_normal(3)
    return bn


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_layer_passes_gradcheck(case):
    layer, x = LAYERS[case]()
    assert gradcheck(layer, x) is True


def _small_network():
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=F64)),
                ("bn1", nn.BatchNorm2d(3, dtype=F64)),
                ("act1", nn.SiLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(12, 4, rng=1, dtype=F64)),
                ("act2", nn.Tanh()),
                ("fc2", nn.Linear(4, 3, rng=2, dtype=F64)),
            ]
        )
    )


def test_sequential_network_passes_gradcheck():
    assert gradcheck(_small_network(), _images((3, 2, 4, 4)))


LOSSES = {
    "ce_labels_mean": (nn.CrossEntropyLoss(), lambda rng: np.array([0, 4, 2, 2])),
    "ce_labels_sum": (nn.CrossEntropyLoss(reduction="sum"), lambda rng: np.array([1, 0, 3, 4])),
    "ce_probs_mean": (nn.CrossEntropyLoss(), lambda rng: rng.dirichlet(np.ones(5), 4)),
    "ce_probs_sum": (
        nn.CrossEntropyLoss(reduction="sum"),
        lambda rng: rng.dirichlet(np.ones(5), 4),
    ),
    "ce_unnormalised_targets": (nn.CrossEntropyLoss(), lambda rng: rng.uniform(0, 2, (4, 5))),
    "mse_mean": (nn.MSELoss(), lambda rng: rng.standard_normal((4, 5))),
    "mse_sum": (nn.MSELoss(reduction="sum"), lambda rng: rng.standard_normal((4, 5))),
}


@pytest.mark.parametrize("case", sorted(LOSSES))
def test_loss_passes_gradcheck(case):
    loss_fn, make_target = LOSSES[case]
    rng = np.random.default_rng(1)
    assert gradcheck(loss_fn, (3 * rng.standard_normal((4, 5)), make_target(rng)))


def test_dropout_train_backward_uses_the_forward_mask():
    # Dropout in training is random, so finite differences do not apply: the gradient must be
    # the output gradient through the same mask and scale as the forward.
    dropout = nn.Dropout(0.25, rng=3)
    x = _images() + 10  # no zeros, so the mask is readable from the output
    out = dropout(x)
    scale = out / x
    assert set(np.unique(np.round(scale, 12))) == {0.0, np.round(1 / 0.75, 12)}
    grad = np.random.default_rng(4).standard_normal(x.shape)
    np.testing.assert_allclose(dropout.backward(grad), grad * scale, rtol=1e-12)


# ------------------------------------------------------------ gradcheck catches bad backward


class _LinearWithWrongWeightGrad(nn.Linear):
    def backward(self, grad_output, input_grad=True):
        grad_input = super().backward(grad_output, input_grad)
        self.weight.grad[0, 1] *= 1.01  # one element off by 1%
        return grad_input


class _ReLUWithWrongInputGrad(nn.ReLU):
    def backward(self, grad_output, input_grad=True):
        return grad_output  # ignores the mask


class _BatchNormWithoutStatsGrad(nn.BatchNorm2d):
    def backward(self, grad_output, input_grad=True):
        # Treats the batch statistics as constants: the common BatchNorm mistake.
        saved = self._saved()
        per_channel = (1, -1, 1, 1)
        inv_std = saved["inv_std"].reshape(per_channel)
        x_hat = saved["input"].reshape(grad_output.shape) - saved["mean"].reshape(per_channel)
        x_hat = x_hat * inv_std
        self.weight.accumulate_grad(np.sum(grad_output * x_hat, axis=(0, 2, 3)))
        self.bias.accumulate_grad(np.sum(grad_output, axis=(0, 2, 3)))
        return grad_output * self.weight.data.reshape(per_channel) * inv_std


@pytest.mark.parametrize(
    "make, where",
    [
        (
            lambda: (_LinearWithWrongWeightGrad(5, 4, rng=0, dtype=F64), _images((3, 5))),
            r"parameter 'weight' of _LinearWithWrongWeightGrad at index \(0, 1\)",
        ),
        (lambda: (_ReLUWithWrongInputGrad(), _images()), r"the input of _ReLUWithWrongInputGrad"),
        (
            lambda: (_BatchNormWithoutStatsGrad(3, dtype=F64), _images()),
            r"the input of _BatchNormWithoutStatsGrad",
        ),
    ],
)
def test_gradcheck_catches_a_wrong_backward(make, where):
    layer, x = make()
    with pytest.raises(GradcheckError, match=where + r".*analytical .*numerical .* fail"):
        gradcheck(layer, x)
    assert gradcheck(layer, x, raise_exception=False) is False
