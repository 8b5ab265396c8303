"""GroupNorm and LayerNorm: against the reference twins (fastcnn/_reference.py) and torch.nn
(forward, input and parameter gradients, float32 and float64), by finite differences, at any
thread count, and inside a Sequential."""

import re
from pathlib import Path

import numpy as np
import pytest
from layer_checks import assert_sequential_matches_its_layers

import fastcnn
from fastcnn import _reference as ref
from fastcnn import gradcheck, nn

F32, F64 = np.float32, np.float64

# name: (fastcnn layer factory, torch layer factory (torch.nn, dtype) or None, input shape)
GROUP_NORMS = {
    "2d": (
        lambda d: nn.GroupNorm(2, 6, dtype=d),
        lambda t, d: t.GroupNorm(2, 6, dtype=d),
        (4, 6, 3, 5),
    ),
    "no_spatial": (
        lambda d: nn.GroupNorm(3, 6, dtype=d),
        lambda t, d: t.GroupNorm(3, 6, dtype=d),
        (4, 6),
    ),
    "instance": (
        lambda d: nn.GroupNorm(6, 6, dtype=d),
        lambda t, d: t.GroupNorm(6, 6, dtype=d),
        (3, 6, 5),
    ),
    "layer": (
        lambda d: nn.GroupNorm(1, 6, dtype=d),
        lambda t, d: t.GroupNorm(1, 6, dtype=d),
        (2, 6, 2, 3, 2),
    ),
    "eps": (
        lambda d: nn.GroupNorm(2, 4, eps=1e-2, dtype=d),
        lambda t, d: t.GroupNorm(2, 4, eps=1e-2, dtype=d),
        (3, 4, 4, 4),
    ),
    "no_affine": (
        lambda d: nn.GroupNorm(2, 6, affine=False),
        lambda t, d: t.GroupNorm(2, 6, affine=False, dtype=d),
        (4, 6, 3, 3),
    ),
    "no_bias": (
        lambda d: nn.GroupNorm(2, 6, dtype=d, bias=False),
        lambda t, d: t.GroupNorm(2, 6, dtype=d, bias=False),
        (4, 6, 3, 3),
    ),
}
LAYER_NORMS = {
    "last": (lambda d: nn.LayerNorm(6, dtype=d), lambda t, d: t.LayerNorm(6, dtype=d), (4, 5, 6)),
    "two_dims": (
        lambda d: nn.LayerNorm((4, 5), dtype=d),
        lambda t, d: t.LayerNorm((4, 5), dtype=d),
        (2, 3, 4, 5),
    ),
    "whole_sample": (
        lambda d: nn.LayerNorm([3, 4, 5], dtype=d),
        lambda t, d: t.LayerNorm([3, 4, 5], dtype=d),
        (2, 3, 4, 5),
    ),
    "one_sample": (lambda d: nn.LayerNorm(7, dtype=d), lambda t, d: t.LayerNorm(7, dtype=d), (7,)),
    "eps": (
        lambda d: nn.LayerNorm(6, eps=1e-1, dtype=d),
        lambda t, d: t.LayerNorm(6, eps=1e-1, dtype=d),
        (8, 6),
    ),
    "no_affine": (
        lambda d: nn.LayerNorm(6, elementwise_affine=False),
        lambda t, d: t.LayerNorm(6, elementwise_affine=False, dtype=d),
        (4, 6),
    ),
    "no_bias": (
        lambda d: nn.LayerNorm((2, 6), bias=False, dtype=d),
        lambda t, d: t.LayerNorm((2, 6), bias=False, dtype=d),
        (4, 2, 6),
    ),
}
CASES = {**{f"group_{k}": v for k, v in GROUP_NORMS.items()}}
CASES.update({f"layer_{k}": v for k, v in LAYER_NORMS.items()})


def _input(shape, dtype, seed=0):
    # not centred, not unit variance: the normalisation must do something
    return (3 * np.random.default_rng(seed).standard_normal(shape) + 2).astype(dtype)


def _randomise(layer, seed=1):
    rng = np.random.default_rng(seed)
    for param in layer.parameters():
        param.data[...] = rng.uniform(0.5, 1.5, param.shape)
    return layer


def _reference(layer, x):
    weight = None if layer.weight is None else layer.weight.data
    bias = None if layer.bias is None else layer.bias.data
    if isinstance(layer, nn.GroupNorm):
        return ref.group_norm(x, layer.num_groups, weight, bias, layer.eps)
    return ref.layer_norm(x, layer.normalized_shape, weight, bias, layer.eps)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_the_reference(case, dtype):
    make, _, shape = CASES[case]
    layer = _randomise(make(dtype))
    x = _input(shape, dtype)
    out = layer(x)
    assert out.dtype == dtype and out.shape == x.shape
    tolerance = 1e-5 if dtype == F32 else 1e-12
    np.testing.assert_allclose(out, _reference(layer, x), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype, tolerance", [(F32, 1e-5), (F64, 1e-10)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch(case, dtype, tolerance):
    torch = pytest.importorskip("torch")
    make, make_torch, shape = CASES[case]
    theirs = make_torch(torch.nn, torch.float32 if dtype == F32 else torch.float64)
    with torch.no_grad():
        for param in theirs.parameters():
            param.uniform_(0.5, 1.5)
    ours = make(dtype)
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = _input(shape, dtype)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = theirs(x_t)
    out = ours(x)

    def close(a, b, what):
        np.testing.assert_allclose(
            a, b.detach().numpy(), rtol=tolerance, atol=tolerance, err_msg=what
        )

    close(out, out_t, "output")
    grad = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    out_t.backward(torch.tensor(grad))
    close(ours.backward(grad), x_t.grad, "input gradient")
    torch_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        close(param.grad, torch_params[name].grad, f"gradient of {name}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_passes_gradcheck(case):
    make, _, shape = CASES[case]
    layer = _randomise(make(F64))
    assert gradcheck(layer, _input(shape, F64))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bit_identical_for_1_and_3_threads(case):
    make, _, shape = CASES[case]
    x = _input(shape, F32)
    grad = np.random.default_rng(1).standard_normal(shape).astype(F32)
    results = []
    for n_threads in (1, 3):
        with fastcnn.threads(n_threads):
            layer = _randomise(make(F32))
            out = layer(x)
            grad_x = layer.backward(grad)
            results.append([out, grad_x, *(p.grad for p in layer.parameters())])
    for first, second in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(first, second)


def test_parameters_state_dict_and_repr_as_torch():
    tnn = pytest.importorskip("torch").nn
    pairs = [
        (nn.GroupNorm(2, 6), tnn.GroupNorm(2, 6)),
        (nn.GroupNorm(3, 6, eps=1e-3, affine=False), tnn.GroupNorm(3, 6, eps=1e-3, affine=False)),
        (nn.GroupNorm(3, 6, bias=False), tnn.GroupNorm(3, 6, bias=False)),
        (nn.LayerNorm(5), tnn.LayerNorm(5)),
        (nn.LayerNorm([3, 4], eps=1e-6), tnn.LayerNorm([3, 4], eps=1e-6)),
        (nn.LayerNorm(4, elementwise_affine=False), tnn.LayerNorm(4, elementwise_affine=False)),
        (nn.LayerNorm(4, bias=False), tnn.LayerNorm(4, bias=False)),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        theirs_state = theirs.state_dict()
        assert list(ours.state_dict()) == list(theirs_state)
        for key, value in ours.state_dict().items():
            assert value.dtype == np.float32
            np.testing.assert_array_equal(value, theirs_state[key].numpy())  # 1 and 0


def test_to_float64_converts_parameters_and_input_dtype():
    for layer, shape in ((nn.GroupNorm(2, 4), (2, 4, 3)), (nn.LayerNorm(3), (2, 3))):
        x = _input(shape, F64)
        with pytest.raises(TypeError, match="convert the layer with .to"):
            layer(x)
        layer.to(F64)
        assert all(p.dtype == F64 for p in layer.parameters())
        assert layer(x).dtype == F64


def test_same_in_training_and_evaluation():
    # per-sample statistics: no running estimates, so eval changes nothing
    for layer, shape in ((nn.GroupNorm(2, 4), (3, 4, 5)), (nn.LayerNorm(5), (3, 4, 5))):
        x = _input(shape, F32)
        np.testing.assert_array_equal(layer.train()(x), layer.eval()(x))
        assert list(layer.buffers()) == []


def test_constant_group_normalises_to_zero_without_warnings():
    x = np.full((2, 4, 3), 7.0, F32)
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(nn.GroupNorm(2, 4)(x), np.zeros_like(x))
        np.testing.assert_array_equal(nn.LayerNorm(3)(x), np.zeros_like(x))


def test_empty_inputs_as_torch():
    cases = (
        (nn.GroupNorm(2, 4), (0, 4, 3)),
        (nn.GroupNorm(2, 4), (2, 4, 0)),
        (nn.LayerNorm(3), (0, 3)),
    )
    for layer, shape in cases:
        x = np.ones(shape, F32)
        out = layer(x)
        assert out.shape == shape
        assert layer.backward(out).shape == shape
        for param in layer.parameters():
            np.testing.assert_array_equal(param.grad, np.zeros(param.shape, F32))


@pytest.mark.parametrize("training", [True, False])
def test_in_a_sequential_forward_and_backward(training):
    def model():
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, rng=0),
            nn.GroupNorm(2, 4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.LayerNorm(4),
            nn.Linear(4, 3, rng=1),
        )

    seq, layers = _randomise(model()).train(training), _randomise(model()).train(training)
    x = _input((3, 2, 6, 5), F32)
    grad = np.random.default_rng(2).standard_normal((3, 3)).astype(F32)
    assert_sequential_matches_its_layers(seq, layers, x, grad)


def test_readme_example_runs(capsys):
    readme = Path(__file__).resolve().parent.parent / "README.md"
    if not readme.exists():  # tests run from an installed wheel, outside the checkout
        pytest.skip("README.md is not beside the tests")
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    (example,) = [block for block in blocks if "nn.GroupNorm(2, 8)" in block]
    exec(compile(example, str(readme), "exec"), {})
    assert capsys.readouterr().out.strip() == "(4, 10)"
