"""fastcnn.optim.lr_scheduler: every scheduler against torch's (lr and momentum sequences),
state dicts (through a checkpoint file), errors."""

import math
import warnings

import numpy as np
import pytest

import fastcnn
from fastcnn.nn.parameter import Parameter
from fastcnn.optim import SGD, Adam, Optimizer
from fastcnn.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

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
    (MultiStepLR, dict(milestones=[5, 2]), ValueError, r"^MultiStepLR: milestones must be incr"),
    (MultiStepLR, dict(milestones=3), TypeError, r"milestones must be a list of epoch indices"),
    (MultiStepLR, dict(milestones=[1, -2]), ValueError, r"milestones\[1\] must be >= 0, got -2"),
    (MultiStepLR, dict(milestones=[1.5]), TypeError, r"milestones\[0\] must be an int, got f"),
    (LinearLR, dict(start_factor=0), ValueError, r"^LinearLR: start_factor must be a number in"),
    (LinearLR, dict(end_factor=1.5), ValueError, r"end_factor must be a number in \[0.0, 1.0\]"),
    (LinearLR, dict(total_iters=0), ValueError, r"^LinearLR: total_iters must be >= 1, got 0"),
    (OneCycleLR, dict(max_lr=0.1), ValueError, r"give total_steps, or both epochs and steps_pe"),
    (OneCycleLR, dict(max_lr=0.1, epochs=3), ValueError, r"give total_steps, or both epochs"),
    (OneCycleLR, dict(max_lr=0.1, total_steps=0), ValueError, r"total_steps must be >= 1, got 0"),
    (OneCycleLR, dict(max_lr=0.1, total_steps=2.0), TypeError, r"total_steps must be an int or"),
    (OneCycleLR, dict(max_lr=0.1, epochs=2, steps_per_epoch=0), ValueError, r"steps_per_epoch m"),
    (OneCycleLR, dict(max_lr=0, total_steps=9), ValueError, r"max_lr must be a number in \(0.0,"),
    (OneCycleLR, dict(max_lr=0.1, total_steps=9, pct_start=1.5), ValueError, r"pct_start must"),
    (OneCycleLR, dict(max_lr=0.1, total_steps=9, anneal_strategy="exp"), ValueError, "'cos' or"),
    (OneCycleLR, dict(max_lr=0.1, total_steps=9, div_factor=0), ValueError, r"div_factor must"),
    (OneCycleLR, dict(max_lr=0.1, total_steps=9, three_phase=1), TypeError, r"True or False"),
    (ReduceLROnPlateau, dict(factor=1.0), ValueError, r"^ReduceLROnPlateau: factor must be < 1.0"),
    (ReduceLROnPlateau, dict(factor=-0.5), ValueError, r"factor must be a number in \[0.0, inf\]"),
    (ReduceLROnPlateau, dict(mode="low"), ValueError, r"mode must be 'min' or 'max', got 'low'"),
    (ReduceLROnPlateau, dict(threshold_mode="x"), ValueError, r"threshold_mode must be 'rel' or"),
    (ReduceLROnPlateau, dict(patience=-1), ValueError, r"patience must be >= 0, got -1"),
    (ReduceLROnPlateau, dict(cooldown=0.5), TypeError, r"cooldown must be an int, got float"),
    (ReduceLROnPlateau, dict(min_lr=[0.1, 0.2]), ValueError, r"min_lr must be one number or one"),
    (ReduceLROnPlateau, dict(min_lr=-1), ValueError, r"min_lr must be a number in \[0.0, inf\]"),
    (ReduceLROnPlateau, dict(eps=None), TypeError, r"eps must be a real number, got NoneType"),
    (SequentialLR, dict(schedulers=[], milestones=[]), ValueError, r"at least one scheduler"),
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


# -- MultiStepLR, LinearLR, OneCycleLR, SequentialLR, ReduceLROnPlateau ------------------

PLATEAU_METRICS = [5, 4, 4.1, 4.0, 4.0, 3.9996, 4, 4, 4, 4, 3, 3.5, 3, 3, 3, 2, 3, 3, 3, 3]

# name: (build(lr_scheduler module, optimizer), optimizer, steps); the same calls build
# fastcnn's and torch's scheduler.
MORE_SCHEDULERS = {
    "multistep": (lambda m, o: m.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.5), "sgd", 14),
    "linear": (
        lambda m, o: m.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=6),
        "sgd",
        12,
    ),
    "onecycle": (lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=30), "sgd", 30),
    "onecycle-adam-3phase-linear": (
        lambda m, o: m.OneCycleLR(
            o, 0.5, epochs=3, steps_per_epoch=10, three_phase=True, anneal_strategy="linear"
        ),
        "adam",
        30,
    ),
    "onecycle-rmsprop": (
        lambda m, o: m.OneCycleLR(o, 0.05, total_steps=20, pct_start=0.25),
        "rmsprop",
        20,
    ),
    "sequential": (
        lambda m, o: m.SequentialLR(
            o,
            [
                m.LinearLR(o, 0.1, total_iters=4),
                m.CosineAnnealingLR(o, T_max=8),
                m.StepLR(o, 3, 0.5),
            ],
            milestones=[4, 12],
        ),
        "sgd",
        22,
    ),
    "plateau": (
        lambda m, o: m.ReduceLROnPlateau(o, patience=1, cooldown=2, min_lr=[0.001, 0.0]),
        "sgd",
        20,
    ),
    "plateau-max-abs": (
        lambda m, o: m.ReduceLROnPlateau(
            o, "max", factor=0.5, patience=0, threshold=0.1, threshold_mode="abs"
        ),
        "adam",
        20,
    ),
}


def build(library, name, params):
    """The optimizer and scheduler of ``MORE_SCHEDULERS[name]``, from fastcnn or torch."""
    make, kind, _ = MORE_SCHEDULERS[name]
    classes = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop"}
    optimizer = getattr(library.optim, classes[kind])(two_groups(params))
    return optimizer, make(library.optim.lr_scheduler, optimizer)


def momentum(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def drive(optimizer, scheduler, params, steps, start=0, ones=np.ones):
    """Step both ``steps`` times; the lr and momentum of every group after each step."""
    sequence = []
    for step in range(start, start + steps):
        for param in params:
            param.grad = ones(tuple(param.shape))
        optimizer.step()
        if "Plateau" in type(scheduler).__name__:
            scheduler.step(PLATEAU_METRICS[step])
        else:
            scheduler.step()
        groups = optimizer.param_groups
        sequence.append([*scheduler.get_last_lr(), *(momentum(g) for g in groups)])
    return sequence


def fastcnn_params():
    return [Parameter(np.ones(3, np.float32)), Parameter(np.ones(2, np.float32))]


@pytest.mark.parametrize("name", MORE_SCHEDULERS)
def test_lr_and_momentum_sequences_equal_torch(name):
    torch = pytest.importorskip("torch")
    steps = MORE_SCHEDULERS[name][2]
    params = fastcnn_params()
    ours = drive(*build(fastcnn, name, params), params, steps)
    torch_params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    theirs = drive(*build(torch, name, torch_params), torch_params, steps, ones=torch.ones)
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-12, atol=0)
    assert len({tuple(row) for row in ours}) > 2  # the schedule really moves


@pytest.mark.parametrize("name", MORE_SCHEDULERS)
def test_state_round_trip_through_a_checkpoint_file_continues_identically(name, tmp_path):
    steps = MORE_SCHEDULERS[name][2]
    params = fastcnn_params()
    full_optimizer, full = build(fastcnn, name, params)
    uninterrupted = drive(full_optimizer, full, params, steps)

    params = fastcnn_params()
    optimizer, scheduler = build(fastcnn, name, params)
    half = steps // 2
    first = drive(optimizer, scheduler, params, half)
    path = tmp_path / "state.npz"
    fastcnn.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path)
    saved = fastcnn.load(path)

    # A fresh run, as a resumed script builds it, then the saved states loaded into it.
    resumed_params = [Parameter(p.data.copy()) for p in params]
    resumed_optimizer, resumed = build(fastcnn, name, resumed_params)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    assert resumed.get_last_lr() == scheduler.get_last_lr()
    rest = drive(resumed_optimizer, resumed, resumed_params, steps - half, start=half)
    assert first + rest == uninterrupted
    assert resumed.state_dict() == full.state_dict()


def test_state_dict_values_match_torch_s():
    torch = pytest.importorskip("torch")
    for name in ("multistep", "onecycle", "plateau"):
        ours = build(fastcnn, name, fastcnn_params())[1].state_dict()
        torch_params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
        theirs = build(torch, name, torch_params)[1].state_dict()
        for key, value in ours.items():
            assert theirs[key] == value, (name, key)


def test_steps_per_says_how_fit_steps_each_scheduler():
    optimizer = SGD([Parameter(np.ones(1))], lr=0.1, momentum=0.9)
    assert StepLR(optimizer, 2).steps_per == "epoch"
    assert ReduceLROnPlateau(optimizer).steps_per == "epoch"
    one_cycle = OneCycleLR(optimizer, 0.1, total_steps=10)
    assert one_cycle.steps_per == "batch"
    linear = LinearLR(optimizer)
    assert SequentialLR(optimizer, [linear, one_cycle], [3]).steps_per == "batch"
    assert SequentialLR(optimizer, [linear, StepLR(optimizer, 2)], [3]).steps_per == "epoch"


def test_one_cycle_refuses_a_step_past_total_steps():
    optimizer = SGD([Parameter(np.ones(1))], lr=0.1, momentum=0.9)
    scheduler = OneCycleLR(optimizer, 0.1, total_steps=3)
    optimizer.step()
    for _ in range(3):
        scheduler.step()
    with pytest.raises(ValueError, match="OneCycleLR: tried to step 4 times, but total_steps is 3"):
        scheduler.step()


def test_one_cycle_needs_momentum_to_cycle():
    def no_momentum():
        return Optimizer([Parameter(np.ones(1))], {"lr": 0.1})

    with pytest.raises(ValueError, match="needs an optimizer with a momentum or betas"):
        OneCycleLR(no_momentum(), 0.1, total_steps=3)
    OneCycleLR(no_momentum(), 0.1, total_steps=3, cycle_momentum=False)


def test_plateau_step_needs_a_number():
    scheduler = ReduceLROnPlateau(SGD([Parameter(np.ones(1))], lr=0.1))
    scheduler.step(np.float32(1.5))  # NumPy scalars are numbers
    with pytest.raises(TypeError, match=r"ReduceLROnPlateau.step: metrics must be .* got str 'x'"):
        scheduler.step("x")
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'metrics'"):
        scheduler.step()


def test_plateau_after_a_group_is_added_as_torch():
    optimizer = SGD([Parameter(np.ones(1))], lr=0.1)
    scheduler = ReduceLROnPlateau(optimizer, patience=0, min_lr=0.02)
    optimizer.add_param_group({"params": [Parameter(np.ones(1))], "lr": 0.5})
    scheduler.step(1.0)
    scheduler.step(2.0)  # worse: both groups reduced, the new one with the default min_lr
    assert scheduler.get_last_lr() == [0.02, 0.05]
    per_group = ReduceLROnPlateau(optimizer, patience=0, min_lr=[0.0, 0.0])
    optimizer.add_param_group({"params": [Parameter(np.ones(1))]})
    per_group.step(1.0)
    with pytest.raises(ValueError, match="has 3 parameter groups but min_lr gave 2"):
        per_group.step(2.0)


def test_sequential_load_state_dict_refuses_another_layout():
    optimizer = SGD([Parameter(np.ones(1))], lr=0.1)
    two = SequentialLR(optimizer, [LinearLR(optimizer), StepLR(optimizer, 2)], [3])
    three = SequentialLR(
        optimizer, [LinearLR(optimizer), StepLR(optimizer, 2), StepLR(optimizer, 3)], [3, 6]
    )
    with pytest.raises(ValueError, match="has 3 scheduler states, but this SequentialLR has 2"):
        two.load_state_dict(three.state_dict())
    with pytest.raises(ValueError, match=r"SequentialLR state dict has the keys \['_last_lr', '_m"):
        two.load_state_dict({"last_epoch": 1})


BAD_WITH_OPTIMIZER = [
    (
        SequentialLR,
        lambda o: dict(schedulers=[StepLR(o, 2), StepLR(o, 3)], milestones=[2, 4]),
        ValueError,
        r"^SequentialLR: milestones must have one entry fewer than schedulers",
    ),
    (
        SequentialLR,
        lambda o: dict(schedulers=[StepLR(o, 2), StepLR(o, 3), StepLR(o, 4)], milestones=[4, 4]),
        ValueError,
        r"^SequentialLR: milestones must be strictly increasing, got \[4, 4\]",
    ),
    (
        SequentialLR,
        lambda o: dict(schedulers=[StepLR(o, 2), ReduceLROnPlateau(o)], milestones=[3]),
        ValueError,
        r"schedulers\[1\] is a ReduceLROnPlateau, whose step needs the metric",
    ),
    (
        SequentialLR,
        lambda o: dict(
            schedulers=[StepLR(o, 2), StepLR(SGD([Parameter(np.ones(1))]), 2)], milestones=[3]
        ),
        ValueError,
        r"schedulers\[1\] \(StepLR\) schedules another optimizer",
    ),
    (
        SequentialLR,
        lambda o: dict(schedulers=[StepLR(o, 2), "cosine"], milestones=[3]),
        TypeError,
        r"^SequentialLR: schedulers\[1\] must be a fastcnn.optim.LRScheduler, got str",
    ),
    (
        OneCycleLR,
        lambda o: dict(max_lr=[0.1, 0.2], total_steps=5),
        ValueError,
        r"^OneCycleLR: max_lr must be one number or one per parameter group: the optimizer "
        r"has 1 groups, got 2 values",
    ),
]


@pytest.mark.parametrize("cls, make_kwargs, error, message", BAD_WITH_OPTIMIZER, ids=str)
def test_bad_arguments_built_on_the_optimizer(cls, make_kwargs, error, message):
    optimizer = SGD([Parameter(np.ones(1))], lr=0.1, momentum=0.9)
    with pytest.raises(error, match=message):
        cls(optimizer, **make_kwargs(optimizer))
