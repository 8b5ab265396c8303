"""The losses' options against torch.nn (values and input gradients, float32 and float64):
CrossEntropyLoss's weight, ignore_index, label_smoothing and reduction='none', NLLLoss on
LogSoftmax, BCEWithLogitsLoss's weight and pos_weight; float64 gradchecks of every loss and
reduction; what 'none' changes in backward and fit. (The plain losses' parity is in
test_nn_torch_parity.py, their bad inputs in test_nn_errors.py.)"""

import warnings

import numpy as np
import pytest

from fastcnn import data, gradcheck, models, nn, optim, train

TOLERANCE = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-13)}
REDUCTIONS = ["mean", "sum", "none"]
N, C = 6, 5


def _logits(dtype, seed=0, scale=3.0):
    return (scale * np.random.default_rng(seed).standard_normal((N, C))).astype(dtype)


def _class_weights(dtype):
    return np.random.default_rng(9).uniform(0.2, 2.0, C).astype(dtype)


def _torch_loss(torch, loss_t, logits, reduction, grad_seed=5):
    """torch's loss and logits gradient; a 'none' loss is backpropagated with a random
    gradient (returned too)."""
    grad = None
    if reduction == "none":
        grad = np.random.default_rng(grad_seed).standard_normal(loss_t.shape).astype(logits.dtype)
        loss_t.backward(torch.tensor(grad))
    else:
        loss_t.backward()
    return loss_t.detach().numpy(), grad


def _check(torch, ours, theirs, input, target, target_t, reduction):
    """ours and theirs on the same input: equal losses and input gradients, in its dtype."""
    input_t = torch.tensor(input, requires_grad=True)
    loss_t, grad = _torch_loss(torch, theirs(input_t, target_t), input, reduction)
    loss = ours(input, target)
    rtol, atol = TOLERANCE[input.dtype.type]
    if reduction == "none":
        assert loss.dtype == input.dtype and loss.shape == loss_t.shape
    else:
        assert isinstance(loss, float)
    np.testing.assert_allclose(loss, loss_t, rtol=rtol, atol=atol)
    input_grad = ours.backward() if grad is None else ours.backward(grad)
    assert input_grad.dtype == input.dtype
    np.testing.assert_allclose(input_grad, input_t.grad.numpy(), rtol=rtol, atol=atol)


# ------------------------------------------------------------------------- cross entropy

CE_OPTIONS = {
    "plain": {},
    "weight": {"weight": True},
    "ignore": {"ignore_index": 2},
    "smoothing": {"label_smoothing": 0.2},
    "all": {"weight": True, "ignore_index": 2, "label_smoothing": 0.3},
}


def _ce_pair(torch, options, reduction, dtype):
    """CrossEntropyLoss of ``options`` in fastcnn and in torch."""
    kwargs = dict(options, reduction=reduction)
    if kwargs.pop("weight", False):
        kwargs["weight"] = _class_weights(dtype)
    torch_kwargs = dict(kwargs)
    if "weight" in kwargs:
        torch_kwargs["weight"] = torch.tensor(kwargs["weight"])
    return nn.CrossEntropyLoss(**kwargs), torch.nn.CrossEntropyLoss(**torch_kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", sorted(CE_OPTIONS))
def test_cross_entropy_labels_match_torch(options, reduction, dtype):
    torch = pytest.importorskip("torch")
    labels = np.array([0, 2, 4, 2, 1, 3])  # two ignored with ignore_index=2
    ours, theirs = _ce_pair(torch, CE_OPTIONS[options], reduction, dtype)
    _check(torch, ours, theirs, _logits(dtype), labels, torch.tensor(labels), reduction)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probabilities_with_weight_and_smoothing_match_torch(reduction, dtype):
    torch = pytest.importorskip("torch")
    probs = np.random.default_rng(3).dirichlet(np.ones(C), N).astype(dtype)
    options = {"weight": True, "label_smoothing": 0.3}
    ours, theirs = _ce_pair(torch, options, reduction, dtype)
    _check(torch, ours, theirs, _logits(dtype), probs, torch.tensor(probs), reduction)


def test_cross_entropy_every_target_ignored_is_nan_with_zero_gradient_as_torch():
    torch = pytest.importorskip("torch")
    labels = np.full(N, -100)
    for options in ({}, {"label_smoothing": 0.1}):
        logits = _logits(np.float32)
        logits_t = torch.tensor(logits, requires_grad=True)
        loss_t = torch.nn.CrossEntropyLoss(**options)(logits_t, torch.tensor(labels))
        loss_t.backward()
        loss_fn = nn.CrossEntropyLoss(**options)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # 0 / 0 quietly, as torch
            assert np.isnan(loss_fn(logits, labels)) and np.isnan(loss_t.item())
            np.testing.assert_array_equal(loss_fn.backward(), logits_t.grad.numpy())


def test_ignored_samples_change_nothing():
    """The loss and gradient of a batch with ignored samples are those of the batch without
    them (the ignored rows' gradient is zero), for each reduction."""
    logits, labels = _logits(np.float64), np.array([0, -100, 4, 2, -100, 3])
    kept = labels != -100
    for reduction in ("mean", "sum"):
        loss_fn = nn.CrossEntropyLoss(weight=_class_weights(np.float64), reduction=reduction)
        loss, grad = loss_fn(logits, labels), loss_fn.backward()
        assert loss == pytest.approx(loss_fn(logits[kept], labels[kept]), rel=1e-14)
        np.testing.assert_allclose(grad[kept], loss_fn.backward(), rtol=1e-14)
        np.testing.assert_array_equal(grad[~kept], 0)


def test_reduction_none_is_what_mean_and_sum_reduce():
    logits, labels = _logits(np.float64), np.array([0, 1, 4, 2, 1, 3])
    weight = _class_weights(np.float64)
    losses = nn.CrossEntropyLoss(weight=weight, reduction="none")(logits, labels)
    assert losses.shape == (N,)
    assert nn.CrossEntropyLoss(weight=weight, reduction="sum")(logits, labels) == pytest.approx(
        losses.sum(), rel=1e-14
    )
    mean = nn.CrossEntropyLoss(weight=weight)(logits, labels)
    assert mean == pytest.approx(losses.sum() / weight[labels].sum(), rel=1e-14)  # torch's


def test_weight_is_a_buffer_in_the_state_dict_as_torch():
    torch = pytest.importorskip("torch")
    weight = _class_weights(np.float32)
    ours = nn.CrossEntropyLoss(weight=weight)
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    np.testing.assert_array_equal(ours.state_dict()["weight"], weight)
    bce = nn.BCEWithLogitsLoss(pos_weight=np.ones(3))
    assert list(bce.state_dict()) == ["pos_weight"]
    assert list(nn.CrossEntropyLoss().state_dict()) == []


def test_repr_names_the_options_that_differ_from_the_defaults():
    assert repr(nn.NLLLoss()) == "NLLLoss()"
    loss_fn = nn.CrossEntropyLoss(ignore_index=0, reduction="none", label_smoothing=0.1)
    assert (
        repr(loss_fn) == "CrossEntropyLoss(reduction='none', ignore_index=0, label_smoothing=0.1)"
    )


# ---------------------------------------------------------------------------------- NLL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_of_log_softmax_matches_torch(reduction, dtype):
    torch = pytest.importorskip("torch")
    labels = np.array([0, 2, 4, 2, 1, 3])
    weight = _class_weights(dtype)
    ours = nn.LogSoftmax(dim=1)
    nll = nn.NLLLoss(weight=weight, ignore_index=4, reduction=reduction)
    theirs = torch.nn.NLLLoss(weight=torch.tensor(weight), ignore_index=4, reduction=reduction)
    logits = _logits(dtype)
    logits_t = torch.tensor(logits, requires_grad=True)
    log_probs_t = torch.nn.LogSoftmax(dim=1)(logits_t)
    loss_t, grad = _torch_loss(torch, theirs(log_probs_t, torch.tensor(labels)), logits, reduction)
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(nll(ours(logits), labels), loss_t, rtol=rtol, atol=atol)
    logits_grad = ours.backward(nll.backward() if grad is None else nll.backward(grad))
    np.testing.assert_allclose(logits_grad, logits_t.grad.numpy(), rtol=rtol, atol=atol)


def test_nll_of_log_softmax_equals_cross_entropy():
    logits, labels = _logits(np.float64), np.array([0, 2, 4, 2, 1, 3])
    weight = _class_weights(np.float64)
    nll = nn.NLLLoss(weight=weight)(nn.LogSoftmax(dim=1)(logits), labels)
    assert nll == pytest.approx(nn.CrossEntropyLoss(weight=weight)(logits, labels), rel=1e-14)


# ---------------------------------------------------------------------------------- BCE

BCE_OPTIONS = {
    "plain": {},
    "weight": {"weight": (N, 1)},  # one weight per sample, broadcast over the classes
    "pos_weight": {"pos_weight": (C,)},
    "both": {"weight": (N, C), "pos_weight": (C,)},
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", sorted(BCE_OPTIONS))
def test_bce_with_logits_matches_torch(options, reduction, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    kwargs = {
        k: rng.uniform(0.3, 3.0, shape).astype(dtype) for k, shape in BCE_OPTIONS[options].items()
    }
    ours = nn.BCEWithLogitsLoss(reduction=reduction, **kwargs)
    theirs = torch.nn.BCEWithLogitsLoss(
        reduction=reduction, **{k: torch.tensor(v) for k, v in kwargs.items()}
    )
    target = rng.uniform(0, 1, (N, C)).astype(dtype)
    target[0] = [0, 1, 0, 1, 1]  # hard labels too
    _check(torch, ours, theirs, _logits(dtype), target, torch.tensor(target), reduction)


def test_bce_with_logits_is_stable_for_huge_logits():
    torch = pytest.importorskip("torch")
    logits = np.array([[1e30, -1e30, 88.0, -104.0, 3e38]], dtype=np.float32)
    target = np.array([[0.0, 1.0, 0.0, 1.0, 1.0]], dtype=np.float32)
    pos_weight = np.full(5, 2.0, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning
        for reduction in ("sum", "none"):
            ours = nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight)
            theirs = torch.nn.BCEWithLogitsLoss(
                reduction=reduction, pos_weight=torch.tensor(pos_weight)
            )
            _check(torch, ours, theirs, logits, target, torch.tensor(target), reduction)


# ---------------------------------------------------------------- MSE, 'none' and backward


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_reduction_none_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    target = _logits(dtype, seed=1)
    ours, theirs = nn.MSELoss(reduction="none"), torch.nn.MSELoss(reduction="none")
    _check(torch, ours, theirs, _logits(dtype), target, torch.tensor(target), "none")


def test_none_backward_scales_each_sample_by_its_gradient():
    logits, labels = _logits(np.float64), np.array([0, 1, 4, 2, 1, 3])
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    loss_fn(logits, labels)
    per_sample_grad = np.arange(N, dtype=np.float64)
    grad = loss_fn.backward(per_sample_grad)
    mean_fn = nn.CrossEntropyLoss(reduction="sum")
    mean_fn(logits, labels)
    np.testing.assert_allclose(grad, mean_fn.backward() * per_sample_grad[:, None], rtol=1e-14)


# ------------------------------------------------------------------------------ gradcheck

GRADCHECK_CASES = {
    "ce_weight_ignore_smoothing": (
        lambda r: nn.CrossEntropyLoss(
            weight=_class_weights(np.float64), ignore_index=2, reduction=r, label_smoothing=0.2
        ),
        lambda rng: np.array([0, 2, 4, 2, 1, 3]),
    ),
    "ce_probs_weight_smoothing": (
        lambda r: nn.CrossEntropyLoss(
            weight=_class_weights(np.float64), reduction=r, label_smoothing=0.1
        ),
        lambda rng: rng.dirichlet(np.ones(C), N),
    ),
    "nll_weight_ignore": (
        lambda r: nn.NLLLoss(weight=_class_weights(np.float64), ignore_index=4, reduction=r),
        lambda rng: np.array([0, 2, 4, 2, 1, 3]),
    ),
    "bce_weight_pos_weight": (
        lambda r: nn.BCEWithLogitsLoss(
            weight=np.linspace(0.5, 2, N)[:, None], reduction=r, pos_weight=np.linspace(1, 3, C)
        ),
        lambda rng: rng.uniform(0, 1, (N, C)),
    ),
    "mse": (lambda r: nn.MSELoss(reduction=r), lambda rng: rng.standard_normal((N, C))),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", sorted(GRADCHECK_CASES))
def test_loss_passes_gradcheck(case, reduction):
    make_loss, make_target = GRADCHECK_CASES[case]
    rng = np.random.default_rng(1)
    assert gradcheck(make_loss(reduction), (3 * rng.standard_normal((N, C)), make_target(rng)))


# ----------------------------------------------------------------------------------- fit


def test_fit_trains_with_a_weighted_smoothed_cross_entropy():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    labels = np.arange(16) % 10
    model = models.LeNet5(rng=0)
    loss_fn = nn.CrossEntropyLoss(weight=np.linspace(0.5, 1.5, 10), label_smoothing=0.1)
    loader = data.DataLoader(data.ArrayDataset(images, labels), 8)
    history = train.fit(
        model, loss_fn, optim.SGD(model.parameters(), lr=0.05), loader, loader, epochs=2,
        progress=False,
    )  # fmt: skip
    assert len(history.epochs) == 2
    assert history.epochs[1]["train_loss"] < history.epochs[0]["train_loss"]
