"""Module and Sequential machinery: registration, traversal, modes, gradients, state dicts,
repr, container behaviour and the input-gradient rule of the first layer."""

from collections import OrderedDict

import numpy as np
import pytest

from fastcnn import nn
from fastcnn.nn import Parameter


def _net(rng=0):
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 4, 3, padding=1, rng=rng)),
                ("bn1", nn.BatchNorm2d(4)),
                ("act1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("drop", nn.Dropout(0.5, rng=rng)),
                ("fc1", nn.Linear(4 * 4 * 4, 3, rng=rng)),
            ]
        )
    )


def _x(shape=(5, 1, 8, 8), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------- registration, traversal


def test_parameters_and_names_in_registration_order():
    net = _net()
    names = [name for name, _ in net.named_parameters()]
    assert names == [
        "conv1.weight",
        "conv1.bias",
        "bn1.weight",
        "bn1.bias",
        "fc1.weight",
        "fc1.bias",
    ]
    assert [id(p) for p in net.parameters()] == [
        id(p)
        for p in (
            net.conv1.weight,
            net.conv1.bias,
            net.bn1.weight,
            net.bn1.bias,
            net.fc1.weight,
            net.fc1.bias,
        )
    ]
    assert [name for name, _ in net.named_buffers()] == [
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    assert (
        list(net.state_dict())
        == names[:4]
        + ["bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"]
        + names[4:]
    )


def test_children_and_modules():
    net = _net()
    assert [name for name, _ in net.named_children()] == list(net._modules)
    assert list(net.children()) == list(net)
    modules = list(net.modules())
    assert modules[0] is net and modules[1:] == list(net)
    nested = nn.Sequential(net, nn.Sequential(nn.ReLU()))
    assert [name for name, _ in nested.named_modules()][:3] == ["", "0", "0.conv1"]
    assert [name for name, _ in nested.named_parameters()][0] == "0.conv1.weight"


def test_shared_parameter_listed_once():
    layer = nn.Linear(3, 3, rng=0)
    net = nn.Sequential(layer, nn.ReLU(), layer)
    assert len(list(net.parameters())) == 2


def test_custom_module_registers_attributes():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = Parameter(np.ones(3, np.float32))
            self.inner = nn.Linear(3, 3, rng=0)
            self.register_buffer("count", np.zeros((), np.int64))
            self.register_buffer("cache", np.zeros(2), persistent=False)
            self.note = "plain attribute"

    block = Block()
    assert [name for name, _ in block.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    # As torch: own parameters, own buffers, then each child's.
    assert list(block.state_dict()) == ["scale", "count", "inner.weight", "inner.bias"]
    assert block.note == "plain attribute" and "note" not in block.state_dict()
    with pytest.raises(TypeError, match=r"cannot assign ndarray as parameter 'scale'"):
        block.scale = np.ones(3)
    with pytest.raises(TypeError, match=r"cannot assign str as child module 'inner'"):
        block.inner = "x"
    with pytest.raises(AttributeError, match=r"'Block' object has no attribute 'missing'"):
        _ = block.missing
    with pytest.raises(NotImplementedError, match=r"Module \[Block\] is missing the required"):
        block(np.ones(3))


def test_assignment_before_init_is_refused():
    class Broken(nn.Module):
        def __init__(self):
            self.weight = Parameter(np.ones(2))

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\) call"):
        Broken()


# ---------------------------------------------------------------------------------- modes


def test_train_eval_reach_every_descendant():
    net = nn.Sequential(_net(), nn.Sequential(nn.Dropout()))
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not any(m.training for m in net.modules())
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        net.train("yes")


def test_eval_changes_dropout_and_batchnorm_outputs():
    net, x = _net(), _x()
    net(x)
    net.eval()
    first, second = net(x), net(x)
    np.testing.assert_array_equal(first, second)  # deterministic in eval
    assert int(net.bn1.num_batches_tracked) == 1  # eval does not update running stats


# ------------------------------------------------------------------------------ gradients


def test_backward_accumulates_like_torch():
    net, x = _net().eval(), _x()
    grad = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    net(x)
    net.backward(grad)
    once = {name: p.grad.copy() for name, p in net.named_parameters()}
    net(x)  # each backward uses up one forward's caches, as torch's graph
    net.backward(grad)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[name], rtol=1e-6, err_msg=name)


def test_zero_grad_both_ways():
    net, x = _net(), _x()
    net(x)
    net.backward(np.ones((5, 3), np.float32))
    grads = [p.grad for p in net.parameters()]
    net.zero_grad(set_to_none=False)
    assert all(p.grad is g and not g.any() for p, g in zip(net.parameters(), grads, strict=True))
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_first_layer_skips_input_gradient():
    net, x = _net().eval(), _x()
    grad = np.ones((5, 3), np.float32)
    net(x)
    assert net.backward(grad) is None  # Sequential's default: no gradient for the model input
    weight_grad = net.conv1.weight.grad.copy()
    net.zero_grad()
    net(x)  # each backward uses up one forward's caches
    grad_x = net.backward(grad, input_grad=True)
    np.testing.assert_array_equal(net.conv1.weight.grad, weight_grad)
    # The input gradient equals the one obtained layer by layer (each layer called on its
    # own: an eval-mode Sequential's compiled pass keeps no layer's cache).
    h = x
    for layer in net:
        h = layer(h)
    expected = grad
    for layer in reversed(list(net)):
        expected = layer.backward(expected)
    assert grad_x.shape == x.shape
    np.testing.assert_allclose(grad_x, expected, rtol=1e-6)
    assert np.abs(grad_x).sum() > 0


def forward_layer_by_layer(net, x):
    """Each layer called on its own (the Sequential's forward would fuse bn1 and act1,
    whose own backwards then refuse: tests/test_fused.py)."""
    for layer in net:
        x = layer(x)
    return x


def test_every_layer_returns_none_without_input_grad():
    net, x = _net(), _x()
    forward_layer_by_layer(net, x)
    grads = [np.ones((5, 3), np.float32)]  # the gradient of each layer's output, last first
    for layer in reversed(list(net)):
        grads.append(layer.backward(grads[-1], input_grad=True))
    forward_layer_by_layer(net, x)  # each backward uses up one forward's caches
    for layer, grad in zip(reversed(list(net)), grads, strict=False):
        assert layer.backward(grad, input_grad=False) is None, type(layer).__name__


@pytest.mark.parametrize(
    "module",
    [
        nn.Conv2d(1, 2, 3),
        nn.Linear(2, 2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AvgPool2d(2),
        nn.BatchNorm2d(2),
        nn.Dropout(),
        nn.Flatten(),
        nn.Softmax(),
        nn.Identity(),
        nn.SiLU(),
        nn.Sequential(nn.ReLU()),
        nn.CrossEntropyLoss(),
        nn.MSELoss(),
        nn.LogSoftmax(),
        nn.NLLLoss(),
        nn.BCEWithLogitsLoss(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_backward_before_forward_is_a_clear_error(module):
    with pytest.raises(RuntimeError, match=r"backward\(\) was called before forward\(\)"):
        module.backward(np.ones(2, np.float32), input_grad=True)


def test_grad_output_of_wrong_shape_is_refused():
    layer = nn.ReLU()
    layer(np.ones((2, 3), np.float32))
    with pytest.raises(
        ValueError,
        match=r"ReLU.backward: grad_output has shape \(3,\), "
        r"expected \(2, 3\)",
    ):
        layer.backward(np.ones(3, np.float32))


def test_frozen_parameter_gets_no_gradient():
    layer = nn.Linear(3, 2, rng=0)
    layer.weight.requires_grad = False
    layer(np.ones((4, 3), np.float32))
    layer.backward(np.ones((4, 2), np.float32))
    assert layer.weight.grad is None and layer.bias.grad is not None


def test_requires_grad_freezes_a_submodule():
    net = _net().eval()
    assert net.conv1.requires_grad_(False) is net.conv1
    net(_x())
    net.backward(np.ones((5, 3), np.float32))
    assert net.conv1.weight.grad is None and net.conv1.bias.grad is None
    assert net.fc1.weight.grad is not None and net.bn1.weight.grad is not None


# ----------------------------------------------------------------------------- state dict


def test_state_dict_round_trip_between_models():
    source, target = _net(rng=1), _net(rng=2)
    source(_x())  # moves BatchNorm's running statistics
    result = target.load_state_dict({k: v.copy() for k, v in source.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value)
    x = _x(seed=3)
    np.testing.assert_array_equal(source.eval()(x), target.eval()(x))


def test_load_state_dict_copies_into_existing_arrays_with_cast():
    layer = nn.Linear(2, 2, rng=0)
    weight = layer.weight.data
    layer.load_state_dict({"weight": np.arange(4.0).reshape(2, 2), "bias": [1, 2]})
    assert layer.weight.data is weight and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, [[0, 1], [2, 3]])
    np.testing.assert_array_equal(layer.bias.data, [1, 2])


def test_load_state_dict_reports_every_problem_at_once():
    net = _net()
    state = {k: v.copy() for k, v in net.state_dict().items()}
    del state["fc1.bias"], state["bn1.running_var"]
    state["fc2.weight"] = np.zeros((3, 3))
    state["conv1.weight"] = np.zeros((4, 1, 5, 5), np.float32)
    before = net.conv1.bias.data.copy()
    state["conv1.bias"] = before + 1
    pattern = (
        r"Error\(s\) in loading state_dict for Sequential:\n"
        r'\tMissing key\(s\) in state_dict: "bn1.running_var", "fc1.bias". \n'
        r'\tUnexpected key\(s\) in state_dict: "fc2.weight". \n'
        r"\tsize mismatch for conv1.weight: copying a param with shape \(4, 1, 5, 5\) from "
        r"checkpoint, the shape in current model is \(4, 1, 3, 3\)."
    )
    with pytest.raises(RuntimeError, match=pattern):
        net.load_state_dict(state)
    np.testing.assert_array_equal(net.conv1.bias.data, before)  # nothing was copied


def test_load_state_dict_non_strict_returns_keys_but_refuses_size_mismatch():
    net = _net()
    state = {k: v.copy() for k, v in net.state_dict().items()}
    del state["fc1.bias"]
    state["extra"] = np.zeros(1)
    state["conv1.bias"] = state["conv1.bias"] + 1
    result = net.load_state_dict(state, strict=False)
    assert result == (["fc1.bias"], ["extra"])
    assert result.missing_keys == ["fc1.bias"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(net.conv1.bias.data, state["conv1.bias"])
    state["fc1.weight"] = np.zeros((2, 2))
    with pytest.raises(RuntimeError, match=r"size mismatch for fc1.weight"):
        net.load_state_dict(state, strict=False)


def test_load_state_dict_refuses_non_mapping_and_non_numeric():
    with pytest.raises(TypeError, match=r"Expected state_dict to be dict-like, got list"):
        nn.Linear(2, 2).load_state_dict([1, 2])
    with pytest.raises(TypeError, match=r"numeric arrays, got dtype <U1"):
        nn.Linear(1, 1).load_state_dict({"weight": [["a"]], "bias": [0.0]})


def test_load_state_dict_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    layer = nn.BatchNorm1d(3)
    theirs = torch.nn.BatchNorm1d(3)
    theirs(torch.randn(8, 3))
    layer.load_state_dict(theirs.state_dict())
    assert int(layer.num_batches_tracked) == 1
    np.testing.assert_array_equal(layer.running_mean, theirs.running_mean.numpy())


def test_to_double_keeps_parameter_objects():
    net = _net()
    params = list(net.parameters())
    assert net.double() is net
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 for p in params)
    assert net.bn1.running_mean.dtype == np.float64
    assert net.bn1.num_batches_tracked.dtype == np.int64
    assert net(_x().astype(np.float64)).dtype == np.float64
    with pytest.raises(TypeError, match=r"dtype must be np.float32 or np.float64, got int32"):
        net.to(np.int32)


# ----------------------------------------------------------------------------------- repr


def test_repr_like_torch():
    net = nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 6, 5, padding=2)),
                ("act1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("block", nn.Sequential(nn.BatchNorm2d(6), nn.Dropout(0.25))),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(1176, 10, bias=False)),
            ]
        )
    )
    assert repr(net) == (
        "Sequential(\n"
        "  (conv1): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))\n"
        "  (act1): ReLU()\n"
        "  (pool1): MaxPool2d(kernel_size=2, stride=2, padding=0)\n"
        "  (block): Sequential(\n"
        "    (0): BatchNorm2d(6, eps=1e-05, momentum=0.1, affine=True, "
        "track_running_stats=True)\n"
        "    (1): Dropout(p=0.25)\n"
        "  )\n"
        "  (flatten): Flatten(start_dim=1, end_dim=-1)\n"
        "  (fc1): Linear(in_features=1176, out_features=10, bias=False)\n"
        ")"
    )
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"
    assert repr(nn.AvgPool2d(3, 1, 1, count_include_pad=False)) == (
        "AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=False)"
    )
    assert repr(nn.Softmax(dim=-1)) == "Softmax(dim=-1)"


def test_conv_and_linear_repr_equal_torch():
    torch = pytest.importorskip("torch")
    for ours, theirs in [
        (
            nn.Conv2d(3, 8, (3, 5), stride=2, padding=(1, 2), bias=False),
            torch.nn.Conv2d(3, 8, (3, 5), stride=2, padding=(1, 2), bias=False),
        ),
        (nn.Linear(4, 2), torch.nn.Linear(4, 2)),
        (nn.Conv2d(1, 2, 3, padding="same"), torch.nn.Conv2d(1, 2, 3, padding="same")),
        (nn.Flatten(0, 2), torch.nn.Flatten(0, 2)),
        (nn.AvgPool2d(2), torch.nn.AvgPool2d(2)),
    ]:
        assert repr(ours) == repr(theirs)


# ----------------------------------------------------------------------------- Sequential


def test_sequential_container_behaviour():
    layers = [nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Linear(4, 2, rng=1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    head = seq[1:]
    assert isinstance(head, nn.Sequential) and list(head) == layers[1:]
    assert list(head._modules) == ["1", "2"]  # names are kept, as in torch
    assert list(seq[::-1]) == layers[::-1]
    assert seq.append(nn.Softmax()) is seq and len(seq) == 4
    assert [name for name, _ in seq.named_children()] == ["0", "1", "2", "3"]
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(seq(x), seq[3](seq[2](seq[1](seq[0](x)))))
    with pytest.raises(IndexError, match=r"index 4 is out of range for a Sequential of 4"):
        seq[4]
    with pytest.raises(TypeError, match=r"Sequential indices must be integers or slices"):
        seq["0"]
    with pytest.raises(TypeError, match=r"Sequential: ufunc is not a Module subclass"):
        nn.Sequential(np.tanh)
    with pytest.raises(TypeError, match=r"Sequential: int is not a Module subclass"):
        seq.append(3)


def test_sequential_from_ordered_dict_names_the_state_dict():
    seq = nn.Sequential(OrderedDict([("fc1", nn.Linear(2, 2)), ("fc2", nn.Linear(2, 1))]))
    assert list(seq.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert seq.fc2 is seq[1]


def test_same_seed_same_weights():
    a, b, c = _net(rng=5), _net(rng=5), _net(rng=6)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        np.testing.assert_array_equal(va, vb, err_msg=key)
    assert not np.array_equal(a.conv1.weight.data, c.conv1.weight.data)
    seeded = nn.Linear(3, 3, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(seeded.weight.data, nn.Linear(3, 3, rng=11).weight.data)


def test_deepcopy_gives_an_independent_model():
    import copy

    net = _net()
    twin = copy.deepcopy(net)
    assert list(twin.state_dict()) == list(net.state_dict())
    twin.conv1.weight.data += 1
    assert not np.array_equal(twin.conv1.weight.data, net.conv1.weight.data)


def test_apply_visits_children_then_self():
    net = _net()
    visited = []
    assert net.apply(lambda m: visited.append(type(m).__name__)) is net
    assert visited[0] == "Conv2d" and visited[-1] == "Sequential"
    assert len(visited) == len(net) + 1


def test_first_conv_asks_the_kernel_to_skip_its_input_gradient(conv_input_grads):
    calls = conv_input_grads
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.Conv2d(2, 2, 3, rng=1))
    net(_x())
    net.backward(np.ones((5, 2, 4, 4), np.float32))
    assert calls == [True, False]  # the second conv (run first) needs it, the first does not
    net(_x())
    net.backward(np.ones((5, 2, 4, 4), np.float32), input_grad=True)
    assert calls[2:] == [True, True]


def test_parameter_data_keeps_its_shape_and_layout():
    conv = nn.Conv2d(1, 2, 3, rng=0)
    with pytest.raises(ValueError, match=r"must keep its shape \(2, 1, 3, 3\), got .* \(3, 3\)"):
        conv.weight.data = np.zeros((3, 3), np.float32)
    with pytest.raises(TypeError, match="must be a floating array"):
        conv.weight.data = np.zeros((2, 1, 3, 3), np.int64)
    # a float64 weight beside a float32 bias would reach the kernels mixed
    with pytest.raises(TypeError, match=r"keep its dtype float32, got float64; .*\.to\(np"):
        conv.weight.data = np.zeros((2, 1, 3, 3), np.float64)
    x = _x()
    conv(x)  # packs the weights
    # a strided array of the right shape is stored contiguous (the kernels need it), and
    # the layer packs the new values
    conv.weight.data = np.zeros((2, 1, 3, 6), np.float32)[..., ::2]
    assert conv.weight.data.flags.c_contiguous
    out = conv(x)
    np.testing.assert_array_equal(out, np.broadcast_to(conv.bias.data[:, None, None], out.shape))


def test_conv_sees_weights_written_in_place_between_calls():
    """The layer keeps its packed weights between calls: a write through .data[...] (or a
    state dict's arrays) must still reach the next forward."""
    conv = nn.Conv2d(1, 2, 3, rng=0).eval()
    x = _x()
    before = conv(x)
    conv.weight.data[...] *= 2
    after = conv(x)
    bias = conv.bias.data[:, None, None]
    np.testing.assert_allclose(after - bias, 2 * (before - bias), rtol=1e-6, atol=1e-6)
    conv.state_dict()["weight"][1, 0, 2, 2] = 0.5  # one value, through the state dict
    fresh = nn.Conv2d(1, 2, 3, rng=1).eval()
    fresh.load_state_dict(conv.state_dict())
    np.testing.assert_array_equal(conv(x), fresh(x))
