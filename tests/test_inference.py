"""The lean eval-mode path of Sequential (fastcnn/nn/_inference.py, csrc/_network.pyx).

In eval mode a Sequential runs its layers compiled into networks: the tests check that
this gives the layers' own bits (within float32 rounding where a BatchNorm is folded),
for any thread count and on every ISA copy of the kernels; that it sees every change of
the weights; that bad input gets the layers' own errors; and that backward after an
eval-mode forward is still correct.
"""

import threading
from collections import OrderedDict

import numpy as np
import pytest

import fastcnn
from fastcnn import models, nn, optim
from fastcnn.nn import _inference


def layer_by_layer(model, x):
    """The model's eval output with each module called on its own (no compiled pass)."""
    for module in model:
        x = module(x)
    return x


def conv_bn_net(rng, dtype=np.float32):
    """Conv -> BatchNorm2d -> ReLU -> MaxPool, twice, then Linear -> BatchNorm1d -> ReLU ->
    Linear: every fold the compiled pass makes, with non-trivial running statistics."""
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1, rng=rng, dtype=dtype),
            bn1=nn.BatchNorm2d(8, dtype=dtype),
            act1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(8, 16, 3, padding=1, bias=False, rng=rng, dtype=dtype),
            bn2=nn.BatchNorm2d(16, dtype=dtype),
            act2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(16 * 4 * 4, 32, rng=rng, dtype=dtype),
            bn3=nn.BatchNorm1d(32, dtype=dtype),
            act3=nn.ReLU(),
            fc2=nn.Linear(32, 5, rng=rng, dtype=dtype),
        )
    )
    for bn in (model.bn1, model.bn2, model.bn3):
        c = bn.num_features
        bn.running_mean[...] = rng.normal(0, 0.5, c)
        bn.running_var[...] = rng.uniform(0.5, 2.0, c)
        bn.weight.data[...] = rng.uniform(0.5, 1.5, c)
        bn.bias.data[...] = rng.normal(0, 0.2, c)
    return model


def cifar_net(rng, dtype=np.float32):
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, rng=rng, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, rng=rng, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 10, rng=rng, dtype=dtype),
    )


# (name, build(rng, dtype), per-image input shape); LeNet-5 takes float32 and float64 via .to
UNFOLDED = {
    "lenet5": (lambda rng, dtype: models.LeNet5(rng=rng).to(dtype), (1, 28, 28)),
    "improved": (lambda rng, dtype: models.ImprovedLeNet5(rng=rng).to(dtype), (1, 28, 28)),
    "cifar": (cifar_net, (3, 32, 32)),
}


def parts(model):
    """What the compiled pass made of the model's modules."""
    return model._compiled_of[1].parts


@pytest.mark.parametrize("name", sorted(UNFOLDED))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 17, 40])
def test_eval_gives_the_layers_bits(name, dtype, n, kernel_copy):
    build, shape = UNFOLDED[name]
    rng = np.random.default_rng(n)
    model = build(rng, dtype).eval()
    x = rng.standard_normal((n, *shape)).astype(dtype)
    expected = layer_by_layer(model, x)
    out = model(x)
    assert out.dtype == dtype and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    if name != "improved":  # (its SiLUs run as themselves, between compiled runs)
        assert all(isinstance(part, _inference._Run) for part in parts(model))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1)])
def test_pooled_step_keeps_nan_zeros_and_ties_as_the_layers(pool, kernel_copy):
    """A 2x2 pooled step takes the ReLU after the pool (a quarter of the values): NaN, -0
    and +0, ties and all-negative windows must give the layers' bits all the same."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False, rng=0), nn.ReLU(), pool).eval()
    model[0].weight.data[...] = np.array([1.0, -1.0], np.float32).reshape(2, 1, 1, 1)
    x = np.array([np.nan, -0.0, 0.0, -1.0, 2.0, 2.0, -3.0, np.inf, -np.inf, 5.0])
    x = np.random.default_rng(3).choice(x, size=(4, 1, 8, 8)).astype(np.float32)
    x[0, 0, :2, :2] = [[-0.0, -1.0], [-3.0, -np.inf]]  # a window whose maximum is -0
    x[0, 0, :2, 2:4] = [[1.0, np.nan], [np.nan, 1.0]]  # two NaNs
    expected = layer_by_layer(model, x)
    out = model(x)
    np.testing.assert_array_equal(out, expected)
    assert np.array_equal(np.signbit(out), np.signbit(expected))
    assert np.isnan(out).any() and (out == 0).any()


@pytest.mark.parametrize("n", [1, 3, 33])
def test_eval_is_bit_identical_for_any_thread_count(n, kernel_copy):
    rng = np.random.default_rng(0)
    model = conv_bn_net(rng).eval()
    x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
    before = fastcnn.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3, 4):
            fastcnn.set_num_threads(threads)
            outs.append(model(x))
    finally:
        fastcnn.set_num_threads(before)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_folded_into_conv_and_linear(dtype):
    rng = np.random.default_rng(1)
    model = conv_bn_net(rng, dtype).eval()
    x = rng.standard_normal((9, 3, 16, 16)).astype(dtype)
    expected = layer_by_layer(model, x)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(model(x), expected, rtol=tolerance, atol=tolerance)
    # all of it compiled: no BatchNorm ran on its own
    assert [type(p).__name__ for p in parts(model)] == ["_Run"]
    (compiled,) = next(iter(parts(model)[0]._plans.values()))
    assert compiled.n_steps == 4


def test_matches_torch_with_folded_batchnorm():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    model = conv_bn_net(rng).eval()
    twin = torch.nn.Sequential(
        OrderedDict(
            conv1=torch.nn.Conv2d(3, 8, 3, padding=1),
            bn1=torch.nn.BatchNorm2d(8),
            act1=torch.nn.ReLU(),
            pool1=torch.nn.MaxPool2d(2),
            conv2=torch.nn.Conv2d(8, 16, 3, padding=1, bias=False),
            bn2=torch.nn.BatchNorm2d(16),
            act2=torch.nn.ReLU(),
            pool2=torch.nn.MaxPool2d(2),
            flatten=torch.nn.Flatten(),
            fc1=torch.nn.Linear(256, 32),
            bn3=torch.nn.BatchNorm1d(32),
            act3=torch.nn.ReLU(),
            fc2=torch.nn.Linear(32, 5),
        )
    )
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    twin.eval()
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- changes of the weights


def _change_in_place(model):
    model.conv1.weight.data[0, 0, 0, 0] += 0.5


def _assign_new_array(model):
    model.fc1.weight.data = model.fc1.weight.data * 2


def _load_state_dict(model):
    state = {k: np.array(v) * 0.9 for k, v in model.state_dict().items()}
    model.load_state_dict(state)


def _change_running_stats(model):
    model.bn2.running_var *= 1.5
    model.bn3.running_mean += 0.25


def _replace_running_stats(model):
    model.bn1.running_mean = model.bn1.running_mean + 1


def _optimizer_step(model):
    opt = optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    x = np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32)
    loss_fn(model(x), np.array([0, 1, 2, 3]))
    model.backward(loss_fn.backward())
    opt.step()
    model.eval()


CHANGES = [
    _change_in_place,
    _assign_new_array,
    _load_state_dict,
    _change_running_stats,
    _replace_running_stats,
    _optimizer_step,
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_every_change_of_the_weights_reaches_the_next_call(change):
    rng = np.random.default_rng(4)
    model = conv_bn_net(rng).eval()
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    before = model(x)
    change(model)
    expected = layer_by_layer(model, x)
    out = model(x)
    assert not np.allclose(out, before)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_unfolded_weights_change_in_place_with_the_same_bits():
    """Weights the network reads as they are (a GEMM convolution, Linear): a write in
    place is seen with no rebuild, and the result stays the layers' bits."""
    rng = np.random.default_rng(5)
    model = cifar_net(rng).eval()
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    model(x)
    model[7].weight.data *= -1
    model[0].bias.data += 1
    np.testing.assert_array_equal(model(x), layer_by_layer(model, x))


def test_replaced_module_is_compiled_again():
    rng = np.random.default_rng(6)
    model = models.LeNet5(rng=rng).eval()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    model.fc3 = nn.Linear(84, 3, rng=rng)
    out = model(x)
    assert out.shape == (2, 3)
    np.testing.assert_array_equal(out, layer_by_layer(model, x))


# --------------------------------------------------------------- modes and other modules


def test_train_mode_child_runs_its_run_layer_by_layer():
    """A BatchNorm put back in training mode inside an eval model uses batch statistics
    (as in PyTorch): nothing of it is folded."""
    rng = np.random.default_rng(7)
    model = conv_bn_net(rng).eval()
    model.bn1.train()
    x = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    mean_before = model.bn1.running_mean.copy()
    out = model(x)
    assert not np.array_equal(model.bn1.running_mean, mean_before)  # it trained
    model.bn1.running_mean[...] = mean_before
    model.bn1.eval()
    assert not np.allclose(out, model(x))


class Doubler(nn.Module):
    """A module the compiled pass does not know: it runs as itself between two networks."""

    def forward(self, x):
        return 2 * np.asarray(x)

    def backward(self, grad_output, input_grad=True):
        return 2 * np.asarray(grad_output)


def test_other_modules_run_between_compiled_runs():
    rng = np.random.default_rng(8)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=rng),
        nn.Sigmoid(),
        nn.Conv2d(4, 4, 3, rng=rng),
        nn.ReLU(),
        Doubler(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3, rng=rng),
        nn.Softmax(dim=1),
    ).eval()
    x = rng.standard_normal((3, 1, 10, 10)).astype(np.float32)
    np.testing.assert_array_equal(model(x), layer_by_layer(model, x))
    kinds = [type(p).__name__ for p in parts(model)]
    assert kinds == ["_Run", "Sigmoid", "_Run", "Doubler", "_Run", "Softmax"]


def test_layers_that_fit_no_step_run_on_their_own_inside_a_run():
    rng = np.random.default_rng(9)
    model = nn.Sequential(
        nn.ReLU(),  # before any convolution: no step to join
        nn.Conv2d(2, 3, 3, rng=rng),
        nn.MaxPool2d(2),
        nn.ReLU(),  # after the pool: on its own
        nn.BatchNorm2d(3),  # not after a convolution: on its own
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Identity(),
        nn.Linear(3 * 4 * 4, 2, rng=rng),
    ).eval()
    model[4].running_mean[...] = [0.1, -0.2, 0.3]
    x = rng.standard_normal((4, 2, 10, 10)).astype(np.float32)
    np.testing.assert_array_equal(model(x), layer_by_layer(model, x))


def test_nested_sequential_runs_compiled_too():
    rng = np.random.default_rng(10)
    inner = nn.Sequential(nn.Conv2d(1, 4, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2))
    model = nn.Sequential(inner, nn.Flatten(), nn.Linear(4 * 4 * 4, 2, rng=rng)).eval()
    x = rng.standard_normal((2, 1, 10, 10)).astype(np.float32)
    np.testing.assert_array_equal(model(x), layer_by_layer(model, x))


def test_empty_batch_and_reshapes_only():
    rng = np.random.default_rng(11)
    model = models.LeNet5(rng=rng).eval()
    assert model(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 10)
    flat = nn.Sequential(nn.Flatten(), nn.Identity()).eval()
    assert flat(np.ones((2, 3, 4), np.float32)).shape == (2, 12)


def test_concurrent_python_threads_get_their_own_buffers():
    rng = np.random.default_rng(12)
    model = models.LeNet5(rng=rng).eval()
    batches = [rng.standard_normal((3, 1, 28, 28)).astype(np.float32) for _ in range(4)]
    expected = [layer_by_layer(model, x) for x in batches]
    failures = []

    def work(i):
        for _ in range(30):
            if not np.array_equal(model(batches[i]), expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# ------------------------------------------------------------------------ bad input

BAD_INPUTS = [
    (np.zeros((2, 3, 28, 28), np.float32), ValueError, "expected input with 1 channels"),
    (np.zeros((2, 1, 28, 28), np.float64), TypeError, "input is float64"),
    (np.zeros((1, 28, 28), np.float32), ValueError, "expected 4-D input"),
    (np.zeros((2, 1, 20, 20), np.float32), ValueError, "Linear expected input with 400"),
    (np.zeros((2, 1, 2, 2), np.float32), ValueError, "Conv2d"),
    (np.zeros((2, 1, 28, 28), np.int64), TypeError, "dtype int64"),
]


@pytest.mark.parametrize(("x", "error", "message"), BAD_INPUTS)
def test_bad_input_gets_the_layers_error(x, error, message):
    model = models.LeNet5(rng=0)
    with pytest.raises(error, match=message) as in_train:
        model(x)
    model.eval()
    model(np.zeros((1, 1, 28, 28), np.float32))  # a compiled network exists
    with pytest.raises(error, match=message) as in_eval:
        model(x)
    assert str(in_eval.value) == str(in_train.value)


# -------------------------------------------------------------------------- backward


def test_backward_after_eval_forward_runs_the_layers_again():
    rng = np.random.default_rng(13)
    model = conv_bn_net(rng).eval()
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    grad = rng.standard_normal((3, 5)).astype(np.float32)
    model(x)
    x_copy = x.copy()
    x[...] = 0  # the caller reuses its array: backward still sees the forward's input
    grad_x = model.backward(grad, input_grad=True)
    weight_grad = model.conv1.weight.grad.copy()

    reference = conv_bn_net(np.random.default_rng(13)).eval()
    reference.zero_grad()
    stages_out = reference._forward_stages(x_copy)
    assert stages_out.shape == (3, 5)
    expected_x = reference.backward(grad, input_grad=True)
    np.testing.assert_array_equal(grad_x, expected_x)
    np.testing.assert_array_equal(weight_grad, reference.conv1.weight.grad)


def test_gradcheck_in_eval_mode():
    rng = np.random.default_rng(14)
    model = conv_bn_net(rng, np.float64).eval()
    x = rng.standard_normal((2, 3, 16, 16))
    assert fastcnn.gradcheck(model, x)


def test_a_layer_backward_after_a_compiled_forward_is_refused():
    model = models.LeNet5(rng=0)
    x = np.zeros((2, 1, 28, 28), np.float32)
    model(x)  # train mode: every layer cached its input
    model.eval()
    model(x)
    with pytest.raises(RuntimeError, match="compiled inference pass"):
        model.fc1.backward(np.zeros((2, 120), np.float32))


@pytest.mark.parametrize("between", ["layer call", "replay", "train-mode pass", "no_grad call"])
def test_a_layer_is_refused_again_whatever_ran_between_two_compiled_calls(between):
    """The compiled pass marks its layers only when some module's cache changed since it
    last marked them (Module.cache_token): each way a layer's cache can change between two
    eval calls must leave the layer refused after the second."""
    model = models.LeNet5(rng=0).eval()
    x = np.zeros((2, 1, 28, 28), np.float32)
    model(x)
    if between == "layer call":
        model.fc1(np.zeros((2, 400), np.float32))  # fc1 now holds a cache of its own
    elif between == "replay":
        model.backward(np.ones((2, 10), np.float32))  # runs the layers again
    elif between == "train-mode pass":
        model.train()(x)
        model.eval()
    else:
        with fastcnn.no_grad():
            model.fc1(np.zeros((2, 400), np.float32))
    model(x)
    with pytest.raises(RuntimeError, match="compiled inference pass"):
        model.fc1.backward(np.zeros((2, 120), np.float32))
