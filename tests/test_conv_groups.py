"""Grouped, depthwise, pointwise and dilated convolutions: ``functional.conv2d(...,
dilation=, groups=)`` and ``nn.Conv2d(..., dilation=, groups=)``.

The kernels against the reference twin bit for bit (integer data: every sum exact) on
every ISA copy the CPU runs, the methods the plan picks, torch parity of the forward pass
and every gradient, the float64 gradient check, bit-identical results for 1, 2 and 3
threads, and the layer's torch-compatible state dict, repr, init and padding='same'.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
from fastcnn import _conv_plan, nn
from fastcnn import _reference as ref
from fastcnn import functional as F

F32, F64 = np.float32, np.float64


def pair(v):
    return v if isinstance(v, tuple) else (v, v)


# (in_channels, out_channels, (H, W), kernel, stride, padding, dilation, groups)
CASES = {
    "depthwise 3x3": (8, 8, (9, 11), 3, 1, 1, 1, 8),
    "depthwise 3x3 stride 2": (6, 6, (12, 13), 3, 2, 1, 1, 6),
    "depthwise 3x3 multiplier 2": (4, 8, (7, 10), 3, 1, 1, 1, 4),
    "depthwise 3x3 multiplier 2 stride 2": (3, 6, (9, 9), 3, 2, 1, 1, 3),
    "depthwise 3x3 dilated": (4, 4, (11, 12), 3, 1, 2, 2, 4),
    "depthwise 3x3 no padding": (5, 5, (6, 19), 3, 1, 0, 1, 5),
    "depthwise 5x5 stride 2": (4, 4, (10, 9), 5, 2, 2, 1, 4),
    # phases of 16 values and more: the input gradient gathered phase by phase
    "depthwise 3x3 stride 2 wide": (3, 3, (9, 34), 3, 2, 1, 1, 3),
    "depthwise 5x5 stride (3, 2) wide": (2, 2, (11, 37), 5, (3, 2), 2, 1, 2),
    "depthwise 4x3 stride (2, 3) wide": (2, 2, (8, 50), (4, 3), (2, 3), (0, 1), 1, 2),
    "depthwise 3x3 stride 3 multiplier 2": (2, 4, (10, 14), 3, (3, 2), (2, 1), 1, 2),
    "depthwise 2x3 mixed": (3, 3, (8, 9), (2, 3), (1, 2), (1, 0), (2, 1), 3),
    "depthwise 1x1 padded": (4, 4, (5, 6), 1, 1, 1, 1, 4),  # padding past the span
    "depthwise 3x3 padding 3": (2, 2, (4, 5), 3, 1, 3, 1, 2),
    "grouped 3x3": (6, 4, (8, 9), 3, 1, 1, 1, 2),
    "grouped 3x3 stride 2 dilated": (6, 9, (11, 10), 3, 2, 2, 2, 3),
    "grouped 1x1": (8, 4, (6, 7), 1, 1, 0, 1, 2),
    "pointwise 1x1": (6, 10, (5, 9), 1, 1, 0, 1, 1),
    "pointwise 1x1 few filters": (6, 3, (5, 9), 1, 1, 0, 1, 1),
    "dilated 3x3": (3, 5, (10, 12), 3, 1, 2, 2, 1),
    "dilated 2x3 stride 2": (2, 4, (11, 9), (2, 3), 2, (1, 0), (3, 2), 1),
}


def operands(case, dtype, batch=10, integers=False, seed=0):
    c, k, hw, kernel, *_, groups = CASES[case]
    rng = np.random.default_rng(seed)
    shapes = [(batch, c, *hw), (k, c // groups, *pair(kernel)), (k,)]
    if integers:  # small integers: every sum is exact, whatever its order
        return [rng.integers(-3, 4, s).astype(dtype) for s in shapes]
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def geometry(case):
    *_, stride, padding, dilation, groups = CASES[case]
    return pair(stride), pair(padding), pair(dilation), groups


def run(case, x, w, b, grad_out=None, columns=False):
    stride, padding, dilation, groups = geometry(case)
    out = F.conv2d(x, w, b, stride, padding, dilation, groups, save_columns=columns)
    if grad_out is None:
        return out
    cols = out[1] if columns else None
    grads = F.conv2d_backward(grad_out, x, w, stride, padding, dilation, groups, columns=cols)
    return (out[0] if columns else out), *grads


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("case", CASES)
def test_kernels_equal_the_reference_bit_for_bit(case, dtype, kernel_copy):
    x, w, b = operands(case, dtype, integers=True)
    stride, padding, dilation, groups = geometry(case)
    want = ref.conv2d(x, w, b, stride, padding, dilation, groups)
    grad_out = np.random.default_rng(1).integers(-3, 4, want.shape).astype(dtype)
    want_grads = ref.conv2d_backward(grad_out, x, w, stride, padding, True, True, dilation, groups)
    for got in (run(case, x, w, b, grad_out), run(case, x, w, b, grad_out, columns=True)):
        for g, want_g in zip(got, (want, *want_grads), strict=True):
            assert g.dtype == dtype
            assert_array_equal(g, want_g)


@pytest.mark.parametrize("case", CASES)
def test_weight_gradient_alone_equals_the_full_backward(case, kernel_copy):
    x, w, b = operands(case, F32)
    stride, padding, dilation, groups = geometry(case)
    out = F.conv2d(x, w, b, stride, padding, dilation, groups)
    grad_out = np.random.default_rng(2).standard_normal(out.shape).astype(F32)
    full = F.conv2d_backward(grad_out, x, w, stride, padding, dilation, groups)
    alone = F.conv2d_backward(
        grad_out, x, w, stride, padding, dilation, groups, input_grad=False, bias_grad=False
    )
    assert alone[0] is None and alone[2] is None
    assert_array_equal(alone[1], full[1])


def test_the_plan_picks_the_depthwise_kernel_and_gemm_for_groups_and_dilation():
    methods = {case: _conv_plan.plan_for("t", (1, c, *hw), (k, c // g, *pair(kern)), F32,
                                         *geometry(case)[:3], g).methods
               for case, (c, k, hw, kern, _, _, _, g) in CASES.items()}  # fmt: skip
    depthwise = _conv_plan.Methods("depthwise", "depthwise", "depthwise")
    general = _conv_plan.Methods("gemm", "gemm", "col2im")
    for case, chosen in methods.items():
        if case.startswith("depthwise"):
            assert chosen == depthwise, case
        elif case.startswith(("grouped", "dilated")):
            assert chosen == general, case


def test_a_pointwise_convolution_reads_the_input_in_place():
    x, w, b = operands("grouped 1x1", F32)
    out, columns = F.conv2d(x, w, b, groups=2, save_columns=True)
    assert columns is None  # the image is its own column matrix: nothing to keep
    assert_allclose(out, ref.conv2d(x, w, b, (1, 1), (0, 0), groups=2), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------ PyTorch parity

torch = pytest.importorskip("torch")


def torch_conv(case, dtype=torch.float32, bias=True):
    c, k, _, kernel, stride, padding, dilation, groups = CASES[case]
    return torch.nn.Conv2d(c, k, kernel, stride, padding, dilation, groups, bias=bias, dtype=dtype)


def layer_like(case, theirs, dtype=F32):
    c, k, _, kernel, stride, padding, dilation, groups = CASES[case]
    ours = nn.Conv2d(c, k, kernel, stride, padding, dilation, groups, dtype=dtype)
    ours.load_state_dict({name: t.detach().numpy() for name, t in theirs.state_dict().items()})
    return ours


@pytest.mark.parametrize("case", CASES)
def test_layer_matches_torch_forward_and_every_gradient(case):
    torch.manual_seed(0)
    theirs = torch_conv(case)
    ours = layer_like(case, theirs)
    x = operands(case, F32)[0]
    x_t = torch.tensor(x, requires_grad=True)
    out_t = theirs(x_t)
    grad = np.random.default_rng(3).standard_normal(out_t.shape).astype(F32)
    out_t.backward(torch.tensor(grad))
    out = ours(x)
    grad_x = ours.backward(grad)
    assert_allclose(out, out_t.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert_allclose(grad_x, x_t.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["depthwise 3x3 multiplier 2", "grouped 3x3 stride 2 dilated"])
def test_functional_matches_torch(case):
    x, w, b = operands(case, F64)
    stride, padding, dilation, groups = geometry(case)
    x_t, w_t, b_t = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out_t = torch.nn.functional.conv2d(x_t, w_t, b_t, stride, padding, dilation, groups)
    grad = np.random.default_rng(4).standard_normal(out_t.shape)
    out_t.backward(torch.tensor(grad))
    got = run(case, x, w, b, grad)
    for g, want in zip(got, (out_t, x_t.grad, w_t.grad, b_t.grad), strict=True):
        assert_allclose(g, want.detach().numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "kernel, dilation", [(3, 1), (3, 2), ((3, 5), (2, 1)), (2, 2), ((1, 3), (5, 3))]
)
def test_same_padding_with_dilation_as_torch(kernel, dilation):
    torch.manual_seed(1)
    theirs = torch.nn.Conv2d(3, 6, kernel, padding="same", dilation=dilation, groups=3)
    ours = nn.Conv2d(3, 6, kernel, padding="same", dilation=dilation, groups=3)
    ours.load_state_dict({name: t.detach().numpy() for name, t in theirs.state_dict().items()})
    x = np.random.default_rng(5).standard_normal((2, 3, 9, 10)).astype(F32)
    out = ours(x)
    assert out.shape == (2, 6, 9, 10)
    assert_allclose(out, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_state_dict_round_trips_with_torch():
    theirs = torch.nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=8)
    ours = nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=8, rng=0)
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())
    assert state["weight"].shape == tuple(theirs.weight.shape) == (16, 1, 3, 3)
    theirs.load_state_dict({name: torch.tensor(a) for name, a in state.items()})
    x = np.random.default_rng(6).standard_normal((2, 8, 7, 7)).astype(F32)
    assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    again = nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=8, rng=1)
    again.load_state_dict({name: t.detach().numpy() for name, t in theirs.state_dict().items()})
    assert_array_equal(again(x), ours(x))


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((8, 8, 3), {"groups": 8}),
        ((4, 8, 3), {"dilation": 2, "padding": 2, "groups": 2, "bias": False}),
        ((4, 8, (3, 1)), {"dilation": (2, 1)}),
        ((4, 8, 3), {"padding": "same", "dilation": 3}),
        ((4, 8, 3), {"groups": 1, "dilation": 1}),
    ],
)
def test_repr_as_torch(args, kwargs):
    assert repr(nn.Conv2d(*args, **kwargs)) == repr(torch.nn.Conv2d(*args, **kwargs))


def test_default_init_uses_the_fan_in_of_one_group():
    layer = nn.Conv2d(64, 128, 3, groups=64, rng=0)  # fan_in = 1 * 3 * 3
    bound = 1 / np.sqrt(9)
    for values in (layer.weight.data, layer.bias.data):
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.9 * bound


# ------------------------------------------------------------- gradients and threads


@pytest.mark.parametrize(
    "case",
    [
        "depthwise 3x3 multiplier 2 stride 2",
        "depthwise 3x3 stride 2 wide",
        "depthwise 4x3 stride (2, 3) wide",
        "depthwise 3x3 dilated",
        "depthwise 2x3 mixed",
        "depthwise 1x1 padded",
        "grouped 3x3 stride 2 dilated",
        "grouped 1x1",
        "dilated 2x3 stride 2",
    ],
)
def test_gradcheck_float64(case):
    c, k, hw, kernel, stride, padding, dilation, groups = CASES[case]
    layer = nn.Conv2d(c, k, kernel, stride, padding, dilation, groups, rng=0, dtype=F64)
    x = np.random.default_rng(7).standard_normal((2, c, *hw))
    assert fastcnn.gradcheck(layer, x)
    stride, padding, dilation, groups = geometry(case)

    def conv(x, w, b):
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    def backward(g, x, w, b):
        return F.conv2d_backward(g, x, w, stride, padding, dilation, groups)

    x, w, b = operands(case, F64, batch=2)
    assert fastcnn.gradcheck(conv, (x, w, b), backward=backward)


@pytest.mark.parametrize(
    "case",
    [
        "depthwise 3x3",
        "depthwise 3x3 multiplier 2 stride 2",
        "depthwise 5x5 stride (3, 2) wide",
        "grouped 3x3",
        "dilated 3x3",
    ],
)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_bit_identical_for_1_2_3_threads(case, dtype, kernel_copy):
    x, w, b = operands(case, dtype, batch=19)  # chunks of 8 images: two full, one partial
    grad_out = np.random.default_rng(8).standard_normal(run(case, x, w, b).shape).astype(dtype)
    with fastcnn.threads(1):
        want = run(case, x, w, b, grad_out)
    for n in (2, 3):
        with fastcnn.threads(n):
            for got, w_ in zip(run(case, x, w, b, grad_out), want, strict=True):
                assert_array_equal(got, w_)


def test_a_depthwise_block_in_a_sequential_trains_and_evaluates_as_its_layers():
    """Depthwise and dilated convolutions are not fused with their ReLU and MaxPool2d, nor
    compiled in eval mode: they run as their own layers there, with the same results."""
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, groups=3, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, rng=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 4, 1, groups=2, rng=2),
    )
    x = np.random.default_rng(9).standard_normal((3, 3, 12, 12)).astype(F32)
    want = x
    for layer in model:
        want = layer(want)
    grad = np.random.default_rng(10).standard_normal(want.shape).astype(F32)
    want_grad_x = grad
    for layer in reversed(list(model)):
        want_grad_x = layer.backward(want_grad_x)
    want_grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    out = model(x)
    assert_array_equal(out, want)
    assert_array_equal(model.backward(grad, input_grad=True), want_grad_x)
    for p, want_g in zip(model.parameters(), want_grads, strict=True):
        assert_array_equal(p.grad, want_g)
    model.eval()
    assert_array_equal(model(x), want)
