"""fastcnn.optim.lr_scheduler: StepLR and CosineAnnealingLR against torch's, state dicts, errors."""

import math
import warnings

import numpy as np
import pytest

from fastcnn.nn.parameter import Parameter
from fastcnn.optim import SGD, Adam
from fastcnn.optim.lr_scheduler import CosineAnnealingLR, StepLR

SCHEDULERS = {
    "step": (StepLR, dict(step_size=3, gamma=0.5)),
    "step-1": (StepLR, dict(step_size=1, gamma=0.9)),
    "cosine": (CosineAnnealingLR, dict(T_max=7, eta_min=0.001)),
    "cosine-1": (CosineAnnealingLR, dict(T_max=1)),
    "cosine-10": (CosineAnnealingLR, dict(T_max=10)),
}
LRS = (0.1, 0.03)


def two_groups(params):
    return [{"params": params[:1], "lr": LRS[0]}, {"params": params[1:], "lr": LRS[1]}]


def fastcnn_lrs(name, epochs):
    cls, kwargs = SCHEDULERS[name]
    params = [Parameter(np.ones(3, np.float32)), Parameter(np.ones(2, np.float32))]
    optimizer = SGD(two_groups(params), momentum=0.9)
    scheduler = cls(optimizer, **kwargs)
    lrs = [scheduler.get_last_lr()]
    for _ in range(epochs):
        for param in params:
            param.grad = np.ones(param.shape, np.float32)
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
        assert lrs[-1] == [group["lr"] for group in optimizer.param_groups]
    return lrs, params


def torch_lrs(torch, name, epochs):
    cls, kwargs = SCHEDULERS[name]
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    optimizer = torch.optim.SGD(two_groups(params), momentum=0.9)
    scheduler = getattr(torch.optim.lr_scheduler, cls.__name__)(optimizer, **kwargs)
    lrs = [scheduler.get_last_lr()]
    for _ in range(epochs):
        for param in params:
            param.grad = torch.ones(param.shape)
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    return lrs, params


@pytest.mark.parametrize("name", SCHEDULERS)
def test_lr_sequence_equals_torch_over_three_periods(name):
    torch = pytest.importorskip("torch")
    kwargs = SCHEDULERS[name][1]
    epochs = 3 * kwargs.get("T_max", kwargs.get("step_size"))
    epochs = max(epochs, 12)
    ours, our_params = fastcnn_lrs(name, epochs)
    theirs, their_params = torch_lrs(torch, name, epochs)
    assert ours == theirs  # exactly: same formula, same order of float operations
    for ours_param, theirs_param in zip(our_params, their_params, strict=True):
        np.testing.assert_allclose(ours_param.data, theirs_param.detach().numpy(), rtol=1e-5)


def test_step_lr_values():
    lrs, _ = fastcnn_lrs("step", 7)
    assert [lr[0] for lr in lrs] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025]


def test_cosine_reaches_eta_min_and_comes_back():
    lrs, _ = fastcnn_lrs("cosine", 14)
    assert lrs[7][0] == pytest.approx(0.001, abs=1e-15)
    assert lrs[14][0] == pytest.approx(0.1, rel=1e-12)
    closed_form = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * t / 7)) / 2 for t in range(15)]
    np.testing.assert_allclose([lr[0] for lr in lrs], closed_form, rtol=1e-12)


def test_initial_lr_and_base_lrs():
    optimizer = SGD(two_groups([Parameter(np.ones(1)), Parameter(np.ones(1))]))
    scheduler = StepLR(optimizer, step_size=2)
    assert [g["initial_lr"] for g in optimizer.param_groups] == list(LRS)
    assert scheduler.base_lrs == list(LRS)
    assert scheduler.last_epoch == 0
    assert scheduler.get_last_lr() == list(LRS)


def test_get_last_lr_is_a_copy():
    optimizer = SGD([Parameter(np.ones(1))], lr=0.1)
    scheduler = StepLR(optimizer, step_size=2)
    scheduler.get_last_lr().append(5)
    assert scheduler.get_last_lr() == [0.1]


def make(name, lr=0.1):
    cls, kwargs = SCHEDULERS[name]
    param = Parameter(np.ones(2, np.float32))
    optimizer = Adam([param], lr=lr)
    return param, optimizer, cls(optimizer, **kwargs)


def advance(param, optimizer, scheduler, epochs):
    for _ in range(epochs):
        param.grad = np.ones(2, np.float32)
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("name", SCHEDULERS)
def test_state_dict_round_trip_continues_identically(name):
    param, optimizer, scheduler = make(name)
    advance(param, optimizer, scheduler, 25)
    expected = [scheduler.get_last_lr()]
    optimizer_state, scheduler_state = optimizer.state_dict(), scheduler.state_dict()
    advance(param, optimizer, scheduler, 1)
    expected.append(scheduler.get_last_lr())

    # The PyTorch recipe: build the scheduler, then load both states.
    new_param, new_optimizer, new_scheduler = make(name, lr=0.7)
    new_optimizer.load_state_dict(optimizer_state)
    new_scheduler.load_state_dict(scheduler_state)
    resumed = [new_scheduler.get_last_lr()]
    advance(new_param, new_optimizer, new_scheduler, 1)
    resumed.append(new_scheduler.get_last_lr())
    assert resumed == expected
    assert new_scheduler.state_dict() == scheduler.state_dict()


def test_state_dict_keys_match_torch_s_values():
    torch = pytest.importorskip("torch")
    ours_params = [Parameter(np.ones(1, np.float32))]
    ours = CosineAnnealingLR(SGD(ours_params, lr=0.1), T_max=5, eta_min=0.01)
    theirs = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1), T_max=5, eta_min=0.01
    )
    their_state = theirs.state_dict()
    for key, value in ours.state_dict().items():
        assert their_state[key] == value


def test_resume_with_last_epoch_needs_initial_lr():
    optimizer = SGD([Parameter(np.ones(1))], lr=0.1)
    with pytest.raises(KeyError, match=r"'initial_lr' is not specified in param_groups\[0\]"):
        StepLR(optimizer, step_size=2, last_epoch=4)


def test_resume_with_last_epoch_matches_torch():
    torch = pytest.importorskip("torch")
    optimizer = SGD([{"params": [Parameter(np.ones(1))], "initial_lr": 0.1, "lr": 0.05}])
    ours = CosineAnnealingLR(optimizer, T_max=6, last_epoch=4)
    torch_optimizer = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.ones(1))], "initial_lr": 0.1, "lr": 0.05}]
    )
    theirs = torch.optim.lr_scheduler.CosineAnnealingLR(torch_optimizer, T_max=6, last_epoch=4)
    assert ours.last_epoch == theirs.last_epoch == 5
    for _ in range(8):
        optimizer._opt_called = torch_optimizer._opt_called = True
        ours.step()
        theirs.step()
        assert ours.get_last_lr() == theirs.get_last_lr()


def test_warns_when_stepped_before_the_optimizer():
    _, optimizer, scheduler = make("step")
    with pytest.warns(UserWarning, match=r"`lr_scheduler.step\(\)` before `optimizer.step\(\)`"):
        scheduler.step()
    param, optimizer, scheduler = make("step")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        advance(param, optimizer, scheduler, 2)


BAD = [
    (StepLR, dict(step_size=0), ValueError, "step_size must be >= 1, got 0"),
    (StepLR, dict(step_size=2.5), TypeError, "step_size must be an int, got float 2.5"),
    (StepLR, dict(step_size=2, gamma="x"), TypeError, "gamma must be a real number, got str"),
    (StepLR, dict(step_size=2, gamma=math.nan), ValueError, "gamma must be a number, got nan"),
    (CosineAnnealingLR, dict(T_max=0), ValueError, "T_max must be >= 1, got 0"),
    (CosineAnnealingLR, dict(T_max=True), TypeError, "T_max must be an int, got bool"),
    (CosineAnnealingLR, dict(T_max=3, eta_min=None), TypeError, "eta_min must be a real number"),
    (CosineAnnealingLR, dict(T_max=3, last_epoch=-2), ValueError, "last_epoch must be >= -1"),
    (StepLR, dict(step_size=np.int64(0)), ValueError, "^StepLR: step_size must be >= 1, got 0"),
    (CosineAnnealingLR, dict(T_max=3, last_epoch=1.0), TypeError, "last_epoch must be an int"),
]


@pytest.mark.parametrize("cls, kwargs, error, message", BAD, ids=str)
def test_bad_arguments(cls, kwargs, error, message):
    optimizer = SGD([Parameter(np.ones(1))], lr=0.1)
    with pytest.raises(error, match=message):
        cls(optimizer, **kwargs)


def test_needs_an_optimizer():
    with pytest.raises(
        TypeError, match="^StepLR: optimizer must be a fastcnn.optim.Optimizer, got list"
    ):
        StepLR([Parameter(np.ones(1))], step_size=1)


def test_load_state_dict_rejects_foreign_state():
    _, optimizer, scheduler = make("cosine")
    step_state = make("step")[2].state_dict()
    with pytest.raises(ValueError, match=r"CosineAnnealingLR state dict has the keys \['T_max'"):
        scheduler.load_state_dict(step_state)
    state = scheduler.state_dict()
    state["base_lrs"] = [0.1, 0.2]
    with pytest.raises(ValueError, match="2 base_lrs, but the optimizer has 1 parameter groups"):
        scheduler.load_state_dict(state)
