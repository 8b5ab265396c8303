"""Each layer and loss against its torch.nn twin in float32: with weights copied from the torch
module's state dict (torch tensors, no key mapping), the forward output, the input gradient,
every parameter gradient and every buffer agree."""

import numpy as np
import pytest

from fastcnn import nn

torch = pytest.importorskip("torch")
tnn = torch.nn

RTOL, ATOL = 1e-4, 1e-5


def _close(ours, theirs, what):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def _forward_backward_torch(module, x, grad_seed):
    x_t = torch.tensor(x, requires_grad=True)
    out = module(x_t)
    grad = np.random.default_rng(grad_seed).standard_normal(tuple(out.shape)).astype(np.float32)
    out.backward(torch.tensor(grad))
    return out, x_t.grad, grad


def _check_parity(ours, theirs, x, grad_seed=1):
    """Load theirs' state into ours, run one forward/backward on both, compare everything."""
    ours.load_state_dict(theirs.state_dict())
    out_t, grad_x_t, grad = _forward_backward_torch(theirs, x, grad_seed)
    out = ours(x)
    assert out.dtype == np.float32
    _close(out, out_t, "output")
    _close(ours.backward(grad), grad_x_t, "input gradient")
    torch_params = dict(theirs.named_parameters())
    assert [name for name, _ in ours.named_parameters()] == list(torch_params)
    for name, param in ours.named_parameters():
        _close(param.grad, torch_params[name].grad, f"gradient of {name}")
    torch_buffers = dict(theirs.named_buffers())
    assert [name for name, _ in ours.named_buffers()] == list(torch_buffers)
    for name, buffer in ours.named_buffers():
        _close(buffer, torch_buffers[name], f"buffer {name}")


def _x(shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


CASES = {
    "conv": (
        lambda: nn.Conv2d(3, 8, 5, padding=2, rng=0),
        lambda: tnn.Conv2d(3, 8, 5, padding=2),
        (4, 3, 12, 12),
    ),
    "conv_stride_rect": (
        lambda: nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), rng=0),
        lambda: tnn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0)),
        (3, 2, 9, 8),
    ),
    "conv_no_bias": (
        lambda: nn.Conv2d(1, 6, 3, bias=False, rng=0),
        lambda: tnn.Conv2d(1, 6, 3, bias=False),
        (5, 1, 10, 10),
    ),
    "conv_same": (
        lambda: nn.Conv2d(2, 3, (3, 5), padding="same", rng=0),
        lambda: tnn.Conv2d(2, 3, (3, 5), padding="same"),
        (2, 2, 7, 9),
    ),
    "conv_valid": (
        lambda: nn.Conv2d(2, 3, 3, padding="valid", rng=0),
        lambda: tnn.Conv2d(2, 3, 3, padding="valid"),
        (2, 2, 7, 9),
    ),
    "maxpool": (lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2), (4, 3, 8, 8)),
    "maxpool_pad_stride": (
        lambda: nn.MaxPool2d(3, stride=2, padding=1),
        lambda: tnn.MaxPool2d(3, stride=2, padding=1),
        (2, 3, 9, 9),
    ),
    "avgpool": (lambda: nn.AvgPool2d(2), lambda: tnn.AvgPool2d(2), (4, 3, 8, 8)),
    "avgpool_pad": (lambda: nn.AvgPool2d(3, 2, 1), lambda: tnn.AvgPool2d(3, 2, 1), (2, 3, 9, 9)),
    "avgpool_pad_exclude": (
        lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        lambda: tnn.AvgPool2d(3, 2, 1, count_include_pad=False),
        (2, 3, 9, 9),
    ),
    "adaptive_avg_global": (
        lambda: nn.AdaptiveAvgPool2d(1),
        lambda: tnn.AdaptiveAvgPool2d(1),
        (4, 3, 7, 5),
    ),
    "adaptive_avg_bins": (
        lambda: nn.AdaptiveAvgPool2d((3, None)),
        lambda: tnn.AdaptiveAvgPool2d((3, None)),
        (2, 3, 7, 5),
    ),
    "adaptive_max_bins": (
        lambda: nn.AdaptiveMaxPool2d((4, 3)),
        lambda: tnn.AdaptiveMaxPool2d((4, 3)),
        (2, 3, 7, 5),
    ),
    "adaptive_max_even": (
        lambda: nn.AdaptiveMaxPool2d(2),
        lambda: tnn.AdaptiveMaxPool2d(2),
        (2, 3, 8, 6),
    ),
    "groupnorm": (lambda: nn.GroupNorm(2, 6), lambda: tnn.GroupNorm(2, 6), (4, 6, 5, 5)),
    "layernorm": (lambda: nn.LayerNorm((5, 5)), lambda: tnn.LayerNorm((5, 5)), (4, 6, 5, 5)),
    "linear": (lambda: nn.Linear(400, 120, rng=0), lambda: tnn.Linear(400, 120), (64, 400)),
    "linear_3d": (lambda: nn.Linear(7, 3, rng=0), lambda: tnn.Linear(7, 3), (2, 5, 7)),
    "linear_no_bias": (
        lambda: nn.Linear(7, 3, bias=False, rng=0),
        lambda: tnn.Linear(7, 3, bias=False),
        (6, 7),
    ),
    "flatten": (lambda: nn.Flatten(), lambda: tnn.Flatten(), (4, 3, 5, 5)),
    "flatten_dims": (lambda: nn.Flatten(0, 2), lambda: tnn.Flatten(0, 2), (4, 3, 5, 5)),
    "relu": (lambda: nn.ReLU(), lambda: tnn.ReLU(), (4, 3, 5, 5)),
    "sigmoid": (lambda: nn.Sigmoid(), lambda: tnn.Sigmoid(), (4, 3, 5, 5)),
    "tanh": (lambda: nn.Tanh(), lambda: tnn.Tanh(), (4, 3, 5, 5)),
    "silu": (lambda: nn.SiLU(), lambda: tnn.SiLU(), (4, 3, 5, 5)),
    "softmax": (lambda: nn.Softmax(dim=1), lambda: tnn.Softmax(dim=1), (4, 10)),
    "softmax_last": (lambda: nn.Softmax(dim=-1), lambda: tnn.Softmax(dim=-1), (2, 3, 4, 5)),
    "log_softmax": (lambda: nn.LogSoftmax(dim=1), lambda: tnn.LogSoftmax(dim=1), (4, 10)),
    "log_softmax_last": (
        lambda: nn.LogSoftmax(dim=-1),
        lambda: tnn.LogSoftmax(dim=-1),
        (2, 3, 4, 5),
    ),
    "identity": (lambda: nn.Identity(), lambda: tnn.Identity(), (4, 3)),
    "leaky_relu": (lambda: nn.LeakyReLU(), lambda: tnn.LeakyReLU(), (4, 3, 5, 5)),
    "leaky_relu_slope": (lambda: nn.LeakyReLU(0.3), lambda: tnn.LeakyReLU(0.3), (4, 6)),
    "elu": (lambda: nn.ELU(), lambda: tnn.ELU(), (4, 3, 5, 5)),
    "elu_alpha": (lambda: nn.ELU(0.5), lambda: tnn.ELU(0.5), (4, 6)),
    "gelu": (lambda: nn.GELU(), lambda: tnn.GELU(), (4, 3, 5, 5)),
    "gelu_tanh": (lambda: nn.GELU("tanh"), lambda: tnn.GELU("tanh"), (4, 3, 5, 5)),
    "hardswish": (lambda: nn.Hardswish(), lambda: tnn.Hardswish(), (4, 3, 5, 5)),
    "dropout2d_eval": (
        lambda: nn.Dropout2d(0.3, rng=0).eval(),
        lambda: tnn.Dropout2d(0.3).eval(),
        (4, 3, 5, 5),
    ),
    "dropout_eval": (
        lambda: nn.Dropout(0.3, rng=0).eval(),
        lambda: tnn.Dropout(0.3).eval(),
        (4, 3, 5, 5),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_torch(case):
    make_ours, make_theirs, shape = CASES[case]
    torch.manual_seed(0)
    _check_parity(make_ours(), make_theirs(), _x(shape, scale=3.0))


def test_activations_at_extreme_inputs_match_torch_without_warnings():
    x = np.array([[-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4]], dtype=np.float32)
    for ours, theirs in [
        (nn.Sigmoid(), tnn.Sigmoid()),
        (nn.SiLU(), tnn.SiLU()),
        (nn.Tanh(), tnn.Tanh()),
        (nn.Softmax(dim=1), tnn.Softmax(dim=1)),
        (nn.LeakyReLU(), tnn.LeakyReLU()),
        (nn.ELU(), tnn.ELU()),
        (nn.GELU(), tnn.GELU()),
        (nn.GELU("tanh"), tnn.GELU("tanh")),
        (nn.Hardswish(), tnn.Hardswish()),
    ]:
        _check_parity(ours, theirs, x)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (nn.LeakyReLU(), tnn.LeakyReLU()),
        (nn.LeakyReLU(-0.5), tnn.LeakyReLU(-0.5)),
        (nn.ELU(0.5), tnn.ELU(0.5)),
        (nn.Hardswish(), tnn.Hardswish()),
    ],
    ids=repr,
)
def test_activation_gradients_at_the_kinks_and_nan_match_torch(ours, theirs):
    """torch's conventions: LeakyReLU's slope and ELU's alpha at 0; Hardswish 0 at -3 and
    1 at 3; a NaN input's gradient where torch puts it."""
    x = np.array([[-3.0, 0.0, 3.0, np.nan, -1.0, 1.0]], dtype=np.float32)
    out_t, grad_x_t, grad = _forward_backward_torch(theirs, x, grad_seed=0)
    np.testing.assert_array_equal(ours(x), out_t.detach().numpy())
    np.testing.assert_allclose(ours.backward(grad), grad_x_t.numpy(), rtol=1e-6)


def test_dropout2d_train_keeps_or_drops_whole_channels_as_torch():
    x = np.ones((50, 40, 3, 3), dtype=np.float32)
    ours = nn.Dropout2d(0.25, rng=0)(x)
    theirs = tnn.Dropout2d(0.25)(torch.tensor(x)).numpy()
    for out in (ours, theirs):  # each plane is all 0 or all 1/(1-p)
        planes = out.reshape(50, 40, 9)
        assert (planes == planes[..., :1]).all()
        np.testing.assert_allclose(np.unique(out), [0, 1 / 0.75], rtol=1e-6)
        assert abs((planes[..., 0] != 0).mean() - 0.75) < 0.04  # 2000 planes: 4 sigma


# ------------------------------------------------------------------------------- BatchNorm


BATCHNORMS = {
    "bn1d_2d": (nn.BatchNorm1d, tnn.BatchNorm1d, (16, 6), {}),
    "bn1d_3d": (nn.BatchNorm1d, tnn.BatchNorm1d, (8, 6, 5), {}),
    "bn2d": (nn.BatchNorm2d, tnn.BatchNorm2d, (8, 6, 5, 5), {}),
    "bn2d_cumulative": (nn.BatchNorm2d, tnn.BatchNorm2d, (8, 6, 5, 5), {"momentum": None}),
    "bn2d_no_affine": (nn.BatchNorm2d, tnn.BatchNorm2d, (8, 6, 5, 5), {"affine": False}),
    "bn2d_no_running": (
        nn.BatchNorm2d,
        tnn.BatchNorm2d,
        (8, 6, 5, 5),
        {"track_running_stats": False, "eps": 1e-3},
    ),
}


def _randomise(torch_bn, seed):
    """Non-trivial affine parameters and running statistics on the torch side."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for tensor in (torch_bn.weight, torch_bn.running_mean):
            if tensor is not None:
                tensor.copy_(torch.tensor(rng.standard_normal(tensor.shape)))
        for tensor in (torch_bn.bias, torch_bn.running_var):
            if tensor is not None:
                tensor.copy_(torch.tensor(rng.uniform(0.5, 2.0, tensor.shape)))


@pytest.mark.parametrize("case", sorted(BATCHNORMS))
def test_batchnorm_train_matches_torch_over_steps(case):
    ours_cls, torch_cls, shape, kwargs = BATCHNORMS[case]
    ours, theirs = ours_cls(6, **kwargs), torch_cls(6, **kwargs)
    _randomise(theirs, 0)
    for step in range(3):  # the running statistics must keep agreeing
        _check_parity(ours, theirs, _x(shape, seed=step, scale=2.0) + step, grad_seed=step)
        ours.zero_grad()
        theirs.zero_grad()


@pytest.mark.parametrize("case", sorted(BATCHNORMS))
def test_batchnorm_eval_matches_torch(case):
    ours_cls, torch_cls, shape, kwargs = BATCHNORMS[case]
    ours, theirs = ours_cls(6, **kwargs).eval(), torch_cls(6, **kwargs).eval()
    _randomise(theirs, 1)
    _check_parity(ours, theirs, _x(shape, scale=2.0) + 1)


# --------------------------------------------------------------------------------- Dropout


def test_dropout_train_statistics_and_seeding():
    x = np.ones((200, 500), dtype=np.float32)
    out = nn.Dropout(0.3, rng=7)(x)
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.005  # 100k draws: 5 sigma is 0.0072
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(nn.Dropout(0.3, rng=7)(x), out)  # same seed, same mask
    assert not np.array_equal(nn.Dropout(0.3, rng=8)(x), out)
    # The mean is preserved in expectation, as torch's (which scales the same way).
    torch_out = tnn.Dropout(0.3)(torch.tensor(x)).numpy()
    assert abs(out.mean() - 1) < 0.01 and abs(torch_out.mean() - 1) < 0.01
    np.testing.assert_allclose(np.unique(torch_out), np.unique(out), rtol=1e-6)


def test_dropout_p_one_and_zero_match_torch():
    x = _x((4, 5))
    np.testing.assert_array_equal(nn.Dropout(1.0)(x), tnn.Dropout(1.0)(torch.tensor(x)).numpy())
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)


# ---------------------------------------------------------------------------------- losses


def _loss_parity(ours, theirs, logits, target, target_t):
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = theirs(logits_t, target_t)
    loss_t.backward()
    loss = ours(logits, target)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, loss_t.item(), rtol=RTOL, atol=ATOL)
    grad = ours.backward()
    assert grad.dtype == np.float32
    _close(grad, logits_t.grad, "logits gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_labels_matches_torch(reduction):
    rng = np.random.default_rng(0)
    logits = _x((64, 10), scale=4.0)
    labels = rng.integers(0, 10, 64)
    _loss_parity(
        nn.CrossEntropyLoss(reduction=reduction),
        tnn.CrossEntropyLoss(reduction=reduction),
        logits,
        labels,
        torch.tensor(labels),
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_probabilities_matches_torch(reduction):
    rng = np.random.default_rng(1)
    logits = _x((32, 7), scale=4.0)
    probs = rng.dirichlet(np.ones(7), 32).astype(np.float32)
    _loss_parity(
        nn.CrossEntropyLoss(reduction=reduction),
        tnn.CrossEntropyLoss(reduction=reduction),
        logits,
        probs,
        torch.tensor(probs),
    )


def test_cross_entropy_one_hot_equals_labels():
    logits = _x((16, 5))
    labels = np.random.default_rng(2).integers(0, 5, 16)
    loss_fn = nn.CrossEntropyLoss()
    by_label = loss_fn(logits, labels), loss_fn.backward()
    one_hot = np.eye(5, dtype=np.float32)[labels]
    by_prob = loss_fn(logits, one_hot), loss_fn.backward()
    assert by_label[0] == pytest.approx(by_prob[0], rel=1e-6)
    np.testing.assert_allclose(by_label[1], by_prob[1], rtol=1e-6, atol=1e-7)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [-3e4, 3e4, 0.0]], dtype=np.float32)
    labels = np.array([1, 1])
    _loss_parity(
        nn.CrossEntropyLoss(), tnn.CrossEntropyLoss(), logits, labels, torch.tensor(labels)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_matches_torch(reduction):
    x, target = _x((8, 3, 4)), _x((8, 3, 4), seed=1)
    _loss_parity(
        nn.MSELoss(reduction=reduction),
        tnn.MSELoss(reduction=reduction),
        x,
        target,
        torch.tensor(target),
    )


def test_loss_backward_scales_by_grad_output():
    logits, labels = _x((4, 3)), np.array([0, 1, 2, 0])
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(logits, labels)
    scaled = loss_fn.backward(2.5)
    loss_fn(logits, labels)  # each backward uses up one forward's caches
    np.testing.assert_allclose(scaled, 2.5 * loss_fn.backward(), rtol=1e-6)


def test_relu_passes_the_gradient_of_a_nan_input_as_torch():
    x = np.array([[np.nan, -1.0, 0.0, 2.0]], dtype=np.float32)
    _, grad_x_t, grad = _forward_backward_torch(tnn.ReLU(), x, grad_seed=0)
    relu = nn.ReLU()
    assert np.isnan(relu(x)[0, 0])
    grad_x = relu.backward(grad)
    np.testing.assert_array_equal(grad_x, grad_x_t.numpy())
    assert grad_x[0, 0] == grad[0, 0]
