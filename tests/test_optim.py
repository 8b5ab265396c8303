"""fastcnn.optim: SGD, Adam, AdamW, RMSprop against torch.optim, groups, zero_grad, state dicts,
errors."""

import itertools
import math

import numpy as np
import pytest

from fastcnn.nn.parameter import Parameter
from fastcnn.optim import SGD, Adam, AdamW, Optimizer, RMSprop

SHAPES = [(5, 4), (7,), (2, 3, 3)]
STEPS = 20


def make_start(seed=0):
    """Initial values and a fixed sequence of noise arrays, one per step and parameter."""
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]
    noise = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(STEPS)]
    return start, noise


def gradient(values, noise):
    """The gradient of a loss that depends on the parameters, so errors would feed back."""
    return 0.5 * values + noise


def set_grads(params, noise):
    for param, n in zip(params, noise, strict=True):
        param.grad = gradient(param.data, n).astype(np.float32)


def run_fastcnn(make_optimizer, start, noise, steps=STEPS):
    params = [Parameter(values.copy()) for values in start]
    optimizer = make_optimizer(params)
    history = []
    for step_noise in noise[:steps]:
        set_grads(params, step_noise)
        optimizer.step()
        history.append([param.data.copy() for param in params])
    return history


def run_torch(torch, make_optimizer, start, noise):
    params = [torch.nn.Parameter(torch.tensor(values)) for values in start]
    optimizer = make_optimizer(params)
    history = []
    for step_noise in noise:
        for param, n in zip(params, step_noise, strict=True):
            param.grad = gradient(param.detach(), torch.tensor(n))
        optimizer.step()
        history.append([param.detach().numpy().copy() for param in params])
    return history


def assert_same_trajectory(ours, theirs):
    for step, (ours_step, theirs_step) in enumerate(zip(ours, theirs, strict=True)):
        for index, (a, b) in enumerate(zip(ours_step, theirs_step, strict=True)):
            assert a.dtype == np.float32
            np.testing.assert_allclose(
                a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {step + 1}, parameter {index}"
            )


SGD_SETTINGS = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m, d, n, wd, mx in itertools.product(
        [0, 0.9], [0, 0.5], [False, True], [0, 1e-2], [False, True]
    )
    if not (n and (m == 0 or d != 0))
]


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=str)
def test_sgd_matches_torch(settings):
    torch = pytest.importorskip("torch")
    start, noise = make_start()
    ours = run_fastcnn(lambda p: SGD(p, lr=0.05, **settings), start, noise)
    theirs = run_torch(
        torch, lambda p: torch.optim.SGD(p, lr=0.05, foreach=False, **settings), start, noise
    )
    assert_same_trajectory(ours, theirs)


ADAM_SETTINGS = [
    dict(amsgrad=a, weight_decay=wd, maximize=mx)
    for a, wd, mx in itertools.product([False, True], [0, 0.1], [False, True])
] + [dict(betas=(0.3, 0.6), eps=1e-3)]  # beta1 < 0.5 exercises lerp's other branch


@pytest.mark.parametrize("settings", ADAM_SETTINGS, ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_matches_torch(name, settings):
    torch = pytest.importorskip("torch")
    ours_class = {"Adam": Adam, "AdamW": AdamW}[name]
    start, noise = make_start(1)
    ours = run_fastcnn(lambda p: ours_class(p, lr=0.01, **settings), start, noise)
    theirs = run_torch(
        torch,
        lambda p: getattr(torch.optim, name)(p, lr=0.01, foreach=False, **settings),
        start,
        noise,
    )
    assert_same_trajectory(ours, theirs)


RMSPROP_SETTINGS = [
    dict(centered=c, momentum=m, weight_decay=wd, maximize=mx)
    for c, m, wd, mx in itertools.product([False, True], [0, 0.9], [0, 0.1], [False, True])
] + [dict(alpha=0.3, eps=1e-3, momentum=0.5)]  # alpha < 0.5: lerp's other branch


@pytest.mark.parametrize("settings", RMSPROP_SETTINGS, ids=str)
def test_rmsprop_matches_torch(settings):
    torch = pytest.importorskip("torch")
    start, noise = make_start(7)
    ours = run_fastcnn(lambda p: RMSprop(p, lr=0.01, **settings), start, noise)
    theirs = run_torch(
        torch, lambda p: torch.optim.RMSprop(p, lr=0.01, foreach=False, **settings), start, noise
    )
    assert_same_trajectory(ours, theirs)


def test_rmsprop_float64_matches_torch_to_double_precision():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    start = rng.standard_normal((4, 3))
    grads = rng.standard_normal((6, 4, 3))
    param = Parameter(start.copy())
    optimizer = RMSprop([param], lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)
    torch_param = torch.nn.Parameter(torch.tensor(start))
    torch_optimizer = torch.optim.RMSprop(
        [torch_param], lr=0.01, momentum=0.9, centered=True, weight_decay=0.1, foreach=False
    )
    for grad in grads:
        param.grad = grad.copy()
        optimizer.step()
        torch_param.grad = torch.tensor(grad)
        torch_optimizer.step()
    assert param.data.dtype == np.float64
    assert optimizer.state[param]["square_avg"].dtype == np.float64
    np.testing.assert_allclose(param.data, torch_param.detach().numpy(), rtol=1e-12)


def test_rmsprop_defaults_and_state_are_torch_s():
    torch = pytest.importorskip("torch")
    param = Parameter(np.ones(2, np.float32))
    defaults = RMSprop([param]).defaults
    torch_defaults = torch.optim.RMSprop([torch.nn.Parameter(torch.ones(2))]).defaults
    for key, value in defaults.items():
        assert torch_defaults[key] == value, key
    optimizer = RMSprop([param], momentum=0.5, centered=True)
    param.grad = np.ones(2, np.float32)
    optimizer.step()
    assert set(optimizer.state[param]) == {"step", "square_avg", "momentum_buffer", "grad_avg"}
    torch_param = torch.nn.Parameter(torch.ones(2))
    torch_optimizer = torch.optim.RMSprop([torch_param], momentum=0.5, centered=True)
    torch_param.grad = torch.ones(2)
    torch_optimizer.step()
    assert set(torch_optimizer.state[torch_param]) == set(optimizer.state[param])


def test_adamw_default_weight_decay_is_torch_s():
    param = Parameter(np.ones(2, np.float32))
    assert AdamW([param]).defaults["weight_decay"] == 1e-2
    assert AdamW([param]).defaults["decoupled_weight_decay"] is True
    assert Adam([param]).defaults["weight_decay"] == 0


def test_param_groups_with_different_lrs_match_torch():
    torch = pytest.importorskip("torch")
    start, noise = make_start(2)

    def groups(params):
        return [{"params": params[:2], "lr": 0.1}, {"params": params[2:], "momentum": 0.5}]

    ours = run_fastcnn(lambda p: SGD(groups(p), lr=0.01, momentum=0.9), start, noise)
    theirs = run_torch(
        torch, lambda p: torch.optim.SGD(groups(p), lr=0.01, momentum=0.9), start, noise
    )
    assert_same_trajectory(ours, theirs)


def test_param_groups_take_missing_hyperparameters_from_defaults():
    a, b = Parameter(np.ones(2, np.float32)), Parameter(np.ones(3, np.float32))
    optimizer = Adam([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.01, betas=(0.8, 0.9))
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.01]
    assert all(g["betas"] == (0.8, 0.9) for g in optimizer.param_groups)
    assert optimizer.param_groups[0]["params"] == [a]


def test_sgd_single_step_is_the_formula():
    # lr * grad with momentum on the first step: buffer = grad, no dampening applied.
    param = Parameter(np.array([1.0, -2.0], np.float32))
    param.grad = np.array([0.5, 0.25], np.float32)
    SGD([param], lr=0.5, momentum=0.9, dampening=0.5).step()
    np.testing.assert_array_equal(param.data, [0.75, -2.125])


def test_sgd_dampening_equals_momentum_is_the_numpy_books_sgd_momentum_after_step_one():
    rng = np.random.default_rng(3)
    values = rng.standard_normal(6).astype(np.float32)
    grads = rng.standard_normal((5, 6)).astype(np.float32)
    param = Parameter(values.copy())
    optimizer = SGD([param], lr=0.1, momentum=0.8, dampening=0.8)
    expected, velocity = values.astype(np.float64), grads[0].astype(np.float64)
    expected -= 0.1 * velocity  # PyTorch initialises the buffer to the first gradient
    param.grad = grads[0]
    optimizer.step()
    for g in grads[1:]:
        velocity = 0.8 * velocity + 0.2 * g
        expected -= 0.1 * velocity
        param.grad = g
        optimizer.step()
    np.testing.assert_allclose(param.data, expected, rtol=1e-5, atol=1e-6)


def test_parameter_without_grad_is_skipped_and_gets_no_state():
    a, b = Parameter(np.ones(3, np.float32)), Parameter(np.ones(2, np.float32))
    optimizer = Adam([a, b], lr=0.1)
    a.grad = np.ones(3, np.float32)
    optimizer.step()
    np.testing.assert_array_equal(b.data, np.ones(2, np.float32))
    assert not np.array_equal(a.data, np.ones(3, np.float32))
    assert b not in optimizer.state and optimizer.state[a]["step"] == 1
    assert list(optimizer.state_dict()["state"]) == [0]


def test_step_leaves_grad_untouched():
    param = Parameter(np.ones(4, np.float32))
    grad = np.arange(4, dtype=np.float32)
    param.grad = grad
    SGD([param], lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True).step()
    SGD([param], lr=0.1, momentum=0.9, nesterov=True).step()
    Adam([param], weight_decay=0.1, maximize=True).step()
    assert param.grad is grad
    np.testing.assert_array_equal(grad, np.arange(4, dtype=np.float32))


def test_step_returns_closure_loss():
    param = Parameter(np.ones(2, np.float32))
    calls = []

    def closure():
        calls.append(1)
        param.grad = np.ones(2, np.float32)
        return 1.5

    assert SGD([param], lr=0.1).step(closure) == 1.5
    assert calls == [1]
    np.testing.assert_allclose(param.data, [0.9, 0.9])
    assert SGD([param]).step() is None


def test_zero_grad_set_to_none_and_in_place():
    a, b = Parameter(np.ones(3, np.float32)), Parameter(np.ones(2, np.float32))
    optimizer = SGD([a, b], lr=0.1)
    a.grad = np.full(3, 2.0, np.float32)
    grad_array = a.grad
    optimizer.zero_grad(set_to_none=False)
    assert a.grad is grad_array
    np.testing.assert_array_equal(a.grad, np.zeros(3, np.float32))
    assert b.grad is None
    optimizer.zero_grad()
    assert a.grad is None and b.grad is None


def test_add_param_group_trains_the_new_group():
    a, b = Parameter(np.ones(2, np.float32)), Parameter(np.ones(2, np.float32))
    optimizer = SGD([a], lr=0.1)
    optimizer.add_param_group({"params": [b], "lr": 1.0})
    a.grad = np.ones(2, np.float32)
    b.grad = np.ones(2, np.float32)
    optimizer.step()
    np.testing.assert_allclose(a.data, [0.9, 0.9])
    np.testing.assert_allclose(b.data, [0.0, 0.0])


def test_params_may_be_a_generator():
    params = [Parameter(np.ones(2, np.float32)) for _ in range(3)]
    optimizer = SGD((p for p in params), lr=0.1)
    assert optimizer.param_groups[0]["params"] == params


def test_repr_lists_groups():
    text = repr(SGD([Parameter(np.ones(1, np.float32))], lr=0.25, momentum=0.5))
    assert text.startswith("SGD (") and "Parameter Group 0" in text and "lr: 0.25" in text


# -- state dicts ---------------------------------------------------------------------------


OPTIMIZERS = {
    "sgd": lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-plain": lambda p: SGD(p, lr=0.05),
    "adam": lambda p: Adam(p, lr=0.01, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda p: AdamW(p, lr=0.01),
    "rmsprop": lambda p: RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3),
    "rmsprop-plain": lambda p: RMSprop(p, lr=0.01),
}


def two_groups(params):
    return [{"params": params[:1], "lr": 0.02}, {"params": params[1:]}]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_continues_bit_for_bit(name):
    make = OPTIMIZERS[name]
    start, noise = make_start(4)
    uninterrupted = run_fastcnn(lambda p: make(two_groups(p)), start, noise)

    params = [Parameter(values.copy()) for values in start]
    optimizer = make(two_groups(params))
    for step_noise in noise[:7]:
        set_grads(params, step_noise)
        optimizer.step()
    saved_values = [param.data.copy() for param in params]
    saved_state = optimizer.state_dict()
    set_grads(params, noise[7])
    optimizer.step()  # must not change the snapshot taken before it
    del optimizer

    resumed_params = [Parameter(values) for values in saved_values]
    resumed = make(two_groups(resumed_params))
    resumed.load_state_dict(saved_state)
    for step, step_noise in enumerate(noise[7:], start=7):
        set_grads(resumed_params, step_noise)
        resumed.step()
        for ours, theirs in zip(resumed_params, uninterrupted[step], strict=True):
            np.testing.assert_array_equal(ours.data, theirs)


def test_state_dict_layout_is_torch_s():
    torch = pytest.importorskip("torch")
    start, noise = make_start(5)
    params = [Parameter(values.copy()) for values in start]
    optimizer = Adam(two_groups(params), lr=0.01, amsgrad=True)
    set_grads(params, noise[0])
    optimizer.step()
    ours = optimizer.state_dict()

    torch_params = [torch.nn.Parameter(torch.tensor(values)) for values in start]
    torch_optimizer = torch.optim.Adam(two_groups(torch_params), lr=0.01, amsgrad=True)
    for param, n in zip(torch_params, noise[0], strict=True):
        param.grad = torch.tensor(gradient(param.detach().numpy(), n))
    torch_optimizer.step()
    theirs = torch_optimizer.state_dict()

    assert list(ours["state"]) == list(theirs["state"]) == [0, 1, 2]
    assert [g["params"] for g in ours["param_groups"]] == [[0], [1, 2]]
    assert [g["params"] for g in theirs["param_groups"]] == [[0], [1, 2]]
    for index, state in ours["state"].items():
        assert set(state) == set(theirs["state"][index])
        assert state["step"] == theirs["state"][index]["step"].item() == 1
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            np.testing.assert_allclose(state[key], theirs["state"][index][key].numpy(), rtol=1e-6)
    for ours_group, theirs_group in zip(ours["param_groups"], theirs["param_groups"], strict=True):
        for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
            assert ours_group[key] == theirs_group[key]


def test_load_state_dict_accepts_torch_state_converted_to_numpy():
    torch = pytest.importorskip("torch")
    start, noise = make_start(6)
    torch_params = [torch.nn.Parameter(torch.tensor(values)) for values in start]
    torch_optimizer = torch.optim.Adam(torch_params, lr=0.01)
    for step_noise in noise[:3]:
        for param, n in zip(torch_params, step_noise, strict=True):
            param.grad = gradient(param.detach(), torch.tensor(n))
        torch_optimizer.step()
    torch_state = torch_optimizer.state_dict()
    as_numpy = {
        "state": {i: {k: v.numpy() for k, v in s.items()} for i, s in torch_state["state"].items()},
        "param_groups": torch_state["param_groups"],
    }
    params = [Parameter(p.detach().numpy().copy()) for p in torch_params]
    optimizer = Adam(params, lr=0.01)
    optimizer.load_state_dict(as_numpy)
    assert optimizer.state[params[0]]["step"] == 3
    for params_noise in noise[3:6]:
        set_grads(params, params_noise)
        optimizer.step()
        for param, n in zip(torch_params, params_noise, strict=True):
            param.grad = gradient(param.detach(), torch.tensor(n))
        torch_optimizer.step()
    for ours, theirs in zip(params, torch_params, strict=True):
        np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_load_state_dict_restores_hyperparameters_and_keeps_betas_a_tuple():
    param = Parameter(np.ones(2, np.float32))
    source = Adam([param], lr=0.123, betas=(0.5, 0.6))
    saved = source.state_dict()
    saved["param_groups"][0]["betas"] = [0.5, 0.6]  # as a JSON-based checkpoint gives it back
    target = Adam([Parameter(np.ones(2, np.float32))])
    target.load_state_dict(saved)
    assert target.param_groups[0]["lr"] == 0.123
    assert target.param_groups[0]["betas"] == (0.5, 0.6)


def stepped(optimizer_factory, shapes):
    params = [Parameter(np.ones(shape, np.float32)) for shape in shapes]
    optimizer = optimizer_factory(params)
    for param in params:
        param.grad = np.ones(param.shape, np.float32)
    optimizer.step()
    return optimizer


def adam(params):
    return Adam(params)


def test_load_state_dict_from_another_model_shape_is_caught_at_load():
    saved = stepped(adam, [(3, 2), (4,)]).state_dict()
    target = stepped(adam, [(3, 2), (5,)])
    before = target.state_dict()
    with pytest.raises(
        ValueError,
        match=r"'exp_avg\w*' of parameter 1 has shape \(4,\), but the "
        r"parameter has shape \(5,\)",
    ):
        target.load_state_dict(saved)
    # Nothing changed: the optimizer still holds its own state.
    after = target.state_dict()
    np.testing.assert_array_equal(after["state"][1]["exp_avg"], before["state"][1]["exp_avg"])


def test_load_state_dict_with_other_group_count_or_size():
    saved = stepped(adam, [(2,), (2,)]).state_dict()
    target = Adam([Parameter(np.ones(2, np.float32))])
    with pytest.raises(
        ValueError,
        match="doesn't match the size of optimizer's group: group 0 "
        "has 2 parameters saved, 1 in this optimizer",
    ):
        target.load_state_dict(saved)
    a, b = Parameter(np.ones(2, np.float32)), Parameter(np.ones(2, np.float32))
    target = Adam([{"params": [a]}, {"params": [b]}])
    with pytest.raises(ValueError, match="different number of parameter groups: 1 saved, 2 in"):
        target.load_state_dict(saved)


def test_load_state_dict_from_another_optimizer_is_caught_at_load():
    saved = stepped(lambda p: SGD(p, lr=0.1, momentum=0.9), [(2,)]).state_dict()
    target = Adam([Parameter(np.ones(2, np.float32))])
    with pytest.raises(ValueError, match=r"lacks the hyperparameters \['amsgrad', 'betas'"):
        target.load_state_dict(saved)
    saved["param_groups"][0].update(target.defaults)  # even with Adam's hyperparameters
    with pytest.raises(ValueError, match=r"entries \['momentum_buffer'\].*keeps \['exp_avg'"):
        target.load_state_dict(saved)


def test_load_state_dict_rejects_bad_containers_and_steps():
    optimizer = stepped(adam, [(2,)])
    with pytest.raises(ValueError, match="exactly the keys 'state' and 'param_groups'"):
        optimizer.load_state_dict({"state": {}})
    saved = optimizer.state_dict()
    saved["state"][7] = saved["state"].pop(0)
    with pytest.raises(ValueError, match="state for parameter 7, which is in no parameter group"):
        optimizer.load_state_dict(saved)
    saved = optimizer.state_dict()
    saved["state"][0]["step"] = -1.0
    with pytest.raises(ValueError, match="'step' of parameter 0 must be a count >= 0, got -1.0"):
        optimizer.load_state_dict(saved)


def test_load_state_dict_copies_arrays_and_casts_to_parameter_dtype():
    saved = stepped(adam, [(2,)]).state_dict()
    saved["state"][0]["exp_avg"] = saved["state"][0]["exp_avg"].astype(np.float64)
    param = Parameter(np.ones(2, np.float32))
    optimizer = Adam([param])
    optimizer.load_state_dict(saved)
    assert optimizer.state[param]["exp_avg"].dtype == np.float32
    saved["state"][0]["exp_avg_sq"][:] = 99
    assert not np.any(optimizer.state[param]["exp_avg_sq"] == 99)


# -- bad input -----------------------------------------------------------------------------


def one_param():
    return [Parameter(np.ones(2, np.float32))]


BAD_ARGUMENTS = [
    (SGD, dict(lr=-1), ValueError, r"^Invalid learning rate: -1$"),
    (SGD, dict(lr=math.nan), ValueError, r"^Invalid learning rate: nan$"),
    (Adam, dict(lr=-0.5), ValueError, r"^Invalid learning rate: -0.5$"),
    (SGD, dict(lr="0.1"), TypeError, r"lr must be a real number, got str '0.1'"),
    (SGD, dict(momentum=-0.5), ValueError, r"^Invalid momentum value: -0.5$"),
    (SGD, dict(weight_decay=-1), ValueError, r"^Invalid weight_decay value: -1$"),
    (
        SGD,
        dict(nesterov=True),
        ValueError,
        "Nesterov momentum requires a momentum and zero dampening",
    ),
    (
        SGD,
        dict(nesterov=True, momentum=0.9, dampening=0.1),
        ValueError,
        "Nesterov momentum requires a momentum and zero dampening",
    ),
    (Adam, dict(betas=(1.0, 0.999)), ValueError, r"^Invalid beta parameter at index 0: 1.0$"),
    (Adam, dict(betas=(0.9, -0.1)), ValueError, r"^Invalid beta parameter at index 1: -0.1$"),
    (Adam, dict(betas=(0.9, math.nan)), ValueError, r"^Invalid beta parameter at index 1: nan$"),
    (Adam, dict(betas=0.9), TypeError, r"betas must be a pair \(beta1, beta2\), got 0.9"),
    (Adam, dict(eps=-1e-8), ValueError, r"^Invalid epsilon value: -1e-08$"),
    (Adam, dict(weight_decay=-1), ValueError, r"^Invalid weight_decay value: -1$"),
    (AdamW, dict(weight_decay=-1), ValueError, r"^Invalid weight_decay value: -1$"),
    (SGD, dict(nesterov="no"), TypeError, r"^SGD: nesterov must be True or False, got 'no'"),
    (SGD, dict(dampening=None), TypeError, r"^SGD: dampening must be a real number, got None"),
    (Adam, dict(amsgrad=1), TypeError, r"^Adam: amsgrad must be True or False, got 1"),
    (AdamW, dict(maximize=None), TypeError, r"^AdamW: maximize must be True or False"),
    (Adam, dict(eps="1e-8"), TypeError, r"^Adam: eps must be a real number, got str '1e-8'"),
    (RMSprop, dict(lr=-0.1), ValueError, r"^Invalid learning rate: -0.1$"),
    (RMSprop, dict(alpha=-0.5), ValueError, r"^Invalid alpha value: -0.5$"),
    (RMSprop, dict(eps=-1.0), ValueError, r"^Invalid epsilon value: -1.0$"),
    (RMSprop, dict(momentum=math.nan), ValueError, r"^Invalid momentum value: nan$"),
    (RMSprop, dict(weight_decay=-1), ValueError, r"^Invalid weight_decay value: -1$"),
    (RMSprop, dict(centered="yes"), TypeError, r"^RMSprop: centered must be True or False"),
    (RMSprop, dict(alpha=None), TypeError, r"^RMSprop: alpha must be a real number, got None"),
]


@pytest.mark.parametrize("cls, kwargs, error, message", BAD_ARGUMENTS, ids=str)
def test_bad_hyperparameters(cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls(one_param(), **kwargs)


def test_bad_hyperparameters_in_a_group_are_caught_too():
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1$"):
        SGD([{"params": one_param(), "lr": -1}], lr=0.1)
    optimizer = SGD(one_param(), lr=0.1)
    with pytest.raises(ValueError, match="^Invalid momentum value: -2$"):
        optimizer.add_param_group({"params": one_param(), "momentum": -2})
    assert len(optimizer.param_groups) == 1


def test_bad_parameter_lists():
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        SGD([], lr=0.1)
    a = Parameter(np.ones(2, np.float32))
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        SGD([{"params": [a]}, {"params": [a]}])
    with pytest.raises(ValueError, match="parameter group with duplicate parameters"):
        SGD([a, a])
    with pytest.raises(TypeError, match="can only optimize Parameters.*numpy.ndarray"):
        SGD([a, np.ones(2)])
    with pytest.raises(TypeError, match="iterable of Parameters or dicts, but got Parameter"):
        SGD(a)
    with pytest.raises(TypeError, match="iterable of Parameters or dicts, but got int"):
        SGD(3)
    with pytest.raises(TypeError, match="ordered collections.*Please use a list"):
        SGD({a})
    with pytest.raises(TypeError, match="all Parameters or all parameter-group dicts"):
        SGD([a, {"params": [Parameter(np.ones(1, np.float32))]}])
    with pytest.raises(ValueError, match="must have a 'params' entry"):
        SGD([{"lr": 0.1}])
    with pytest.raises(TypeError, match="a parameter group must be a dict, got list"):
        SGD([a]).add_param_group([a])


def test_gradient_of_wrong_shape():
    param = Parameter(np.ones((2, 3), np.float32))
    param.grad = np.ones((3, 2), np.float32)
    with pytest.raises(
        ValueError,
        match=r"gradient of .* has shape \(3, 2\), but the parameter "
        r"has shape \(2, 3\)",
    ):
        SGD([param]).step()


def test_optimizer_base_needs_an_update_rule():
    param = Parameter(np.ones(2, np.float32))
    param.grad = np.ones(2, np.float32)
    with pytest.raises(NotImplementedError, match="Optimizer must implement _update"):
        Optimizer([param], {"lr": 0.1}).step()


def test_load_state_dict_validates_saved_hyperparameters():
    optimizer = stepped(adam, [(2,)])
    saved = optimizer.state_dict()
    saved["param_groups"][0]["betas"] = (1.5, 0.9)
    with pytest.raises(ValueError, match=r"^Invalid beta parameter at index 0: 1.5$"):
        optimizer.load_state_dict(saved)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)
