"""The fused Conv2d -> ReLU -> MaxPool2d path, functional and inside ``nn.Sequential``.

Its contract is bit-identity: ``conv2d_relu_max_pool2d`` gives the bits of ``conv2d``,
``relu`` and ``max_pool2d(..., return_indices=True)`` run one after the other, and its
backward those of ``max_pool2d_backward``, ``relu_backward`` and ``conv2d_backward``. So the
comparisons here are ``assert_array_equal`` on random normal data (where any change in the
order of a sum would show), plus the pure-NumPy reference on small integers, finite
differences in float64, 1-3 threads and PyTorch; on every ISA copy of the C kernels this CPU
runs (the ``kernel_copy`` fixture, tests/conftest.py), whose method choices differ.
"""

import copy
import itertools

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from test_kernels_vs_reference import assert_gradients_equal, case_id, small_ints

import fastcnn
from fastcnn import _reference as ref
from fastcnn import functional as F
from fastcnn import models, nn, optim

pytestmark = pytest.mark.usefixtures("kernel_copy")

DTYPES = [np.float32, np.float64]

# (C, H, W), K, (FH, FW), conv stride, conv padding: H != W, non-square kernels, strides
# 1-2 and paddings 0-2 in mixed pairs.
GEOMETRIES = [
    ((1, 12, 10), 4, (3, 2), (1, 1), (0, 0)),
    ((3, 11, 14), 5, (2, 3), (2, 1), (1, 2)),
    ((3, 9, 8), 2, (3, 3), (1, 2), (2, 1)),
    ((1, 13, 9), 3, (4, 1), (2, 2), (1, 0)),
]

# pool kernel, stride, padding: the 2x2/s2 fast path, an overlapping padded window, and a
# non-square window with unequal strides.
POOLS = [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 1))]

BATCHES = [0, 1, 3, 9]  # 9: more than one chunk of _conv_plan.GRAD_CHUNK = 8 images


def unfused_forward(x, w, b, conv, pool):
    """conv2d -> relu -> max_pool2d as three kernels: (pooled, indices, activation, columns)."""
    conv_out, columns = F.conv2d(x, w, b, *conv, save_columns=True)
    activation = F.relu(conv_out)
    pooled, indices = F.max_pool2d(activation, *pool, return_indices=True)
    return pooled, indices, activation, columns


def unfused_backward(grad, indices, activation, x, w, conv, **options):
    """max_pool2d_backward -> relu_backward -> conv2d_backward, one after the other."""
    grad_activation = F.max_pool2d_backward(grad, indices, activation.shape)
    grad_conv = F.relu_backward(grad_activation, activation)
    return F.conv2d_backward(grad_conv, x, w, *conv, **options)


def assert_fused_matches_unfused(x, w, b, conv, pool, grad):
    """Forward and every backward variant of the fused op equal the three kernels, bit for
    bit: with and without kept columns, the input gradient and the bias gradient."""
    pooled, indices, activation, columns = unfused_forward(x, w, b, conv, pool)
    out, fused_indices = F.conv2d_relu_max_pool2d(x, w, b, *conv, *pool)
    kept_out, kept_indices, kept_columns = F.conv2d_relu_max_pool2d(
        x, w, b, *conv, *pool, save_columns=True
    )
    for got, got_indices in ((out, fused_indices), (kept_out, kept_indices)):
        assert got.dtype == x.dtype and got_indices.dtype == np.int64
        assert_array_equal(got, pooled)
        assert_array_equal(got_indices, indices)
    assert_array_equal(kept_columns, columns)
    for input_grad, bias_grad in itertools.product((True, False), repeat=2):
        want = unfused_backward(
            grad, indices, activation, x, w, conv, input_grad=input_grad, bias_grad=bias_grad
        )
        for kept in (None, kept_columns):
            got = F.conv2d_relu_max_pool2d_backward(
                grad,
                out,
                fused_indices,
                x,
                w,
                *conv,
                input_grad=input_grad,
                bias_grad=bias_grad,
                columns=kept,
            )
            assert_gradients_equal(got, want, x.dtype)


def random_case(rng, n, geometry, dtype, with_bias):
    (c, h, width), k, kernel, _, _ = geometry
    x = rng.standard_normal((n, c, h, width)).astype(dtype)
    w = rng.standard_normal((k, c, *kernel)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if with_bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=case_id)
@pytest.mark.parametrize("pool", POOLS, ids=case_id)
@pytest.mark.parametrize("with_bias", [True, False])
def test_fused_equals_the_three_kernels_bit_for_bit(dtype, n, geometry, pool, with_bias):
    rng = np.random.default_rng(n + 10 * GEOMETRIES.index(geometry))
    x, w, b = random_case(rng, n, geometry, dtype, with_bias)
    conv = geometry[3:]
    pooled_shape = F.max_pool2d(F.conv2d(x, w, b, *conv), *pool).shape
    grad = rng.standard_normal(pooled_shape).astype(dtype)
    assert_fused_matches_unfused(x, w, b, conv, pool, grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", POOLS, ids=case_id)
def test_nan_inputs_follow_the_unfused_rules(dtype, pool):
    """A NaN pixel makes NaN conv outputs: max-pool takes them, ReLU keeps them and passes
    their gradient. The fused op must put every NaN where the three kernels do."""
    geometry = GEOMETRIES[1]
    rng = np.random.default_rng(5)
    x, w, b = random_case(rng, 9, geometry, dtype, with_bias=True)
    x[0, 0, 3, 4] = x[4, 2, 7, 1] = np.nan
    x[8, 1, 0, 0] = np.inf
    conv = geometry[3:]
    out, _ = F.conv2d_relu_max_pool2d(x, w, b, *conv, *pool)
    assert np.isnan(out).any() and not np.isnan(out).all()
    grad = rng.standard_normal(out.shape).astype(dtype)
    assert_fused_matches_unfused(x, w, b, conv, pool, grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", POOLS, ids=case_id)
def test_all_negative_conv_output_gives_zero_gradients(dtype, pool):
    """Positive input, negative weights and bias: every conv output is negative, ReLU gives
    0 everywhere, and every gradient is exactly 0, even for a NaN or Inf output gradient
    (ReLU's backward selects 0; it does not multiply by 0)."""
    geometry = GEOMETRIES[2]
    rng = np.random.default_rng(6)
    x, w, b = (np.abs(a) + 0.1 for a in random_case(rng, 3, geometry, dtype, True))
    w, b = -w, -b
    conv = geometry[3:]
    out, _ = F.conv2d_relu_max_pool2d(x, w, b, *conv, *pool)
    assert not out.any()
    grad = rng.standard_normal(out.shape).astype(dtype)
    grad[0, 0, 0, 0], grad[1, 1, 0, 0] = np.nan, np.inf
    assert_fused_matches_unfused(x, w, b, conv, pool, grad)
    out, indices = F.conv2d_relu_max_pool2d(x, w, b, *conv, *pool)
    for gradient in F.conv2d_relu_max_pool2d_backward(grad, out, indices, x, w, *conv):
        assert gradient.dtype == dtype and not gradient.any()


# ------------------------------------------------------------------------ the reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=case_id)
@pytest.mark.parametrize("pool", POOLS, ids=case_id)
def test_fused_equals_the_reference_on_small_integers(dtype, geometry, pool):
    """Against fastcnn._reference's conv2d, relu and max_pool2d composed: small integers
    make every sum exact, so any order must give the reference's bits, ties included
    (ReLU's zeros tie often: the first maximum wins in both)."""
    rng = np.random.default_rng(GEOMETRIES.index(geometry))
    (c, h, width), k, kernel, stride, padding = geometry
    x = small_ints(rng, (3, c, h, width), dtype)
    w = small_ints(rng, (k, c, *kernel), dtype)
    b = small_ints(rng, (k,), dtype)
    kernel_p, stride_p, padding_p = pool
    activation = ref.relu(ref.conv2d(x, w, b, stride, padding))
    pooled, indices = ref.max_pool2d(activation, kernel_p, stride_p, padding_p)
    out, got_indices = F.conv2d_relu_max_pool2d(x, w, b, stride, padding, *pool)
    assert_array_equal(out, pooled)
    assert_array_equal(got_indices, indices)
    assert np.count_nonzero(out) > out.size // 2, "a mostly-zero output proves nothing"

    grad = small_ints(rng, out.shape, dtype)
    grad_conv = ref.relu_backward(
        ref.max_pool2d_backward(grad, indices, activation.shape), activation
    )
    want = ref.conv2d_backward(grad_conv, x, w, stride, padding)
    got = F.conv2d_relu_max_pool2d_backward(grad, out, got_indices, x, w, stride, padding)
    assert_gradients_equal(got, want, dtype)


# ------------------------------------------------------------------ finite differences


def kink_margin(conv_out, pool):
    """Distance of the inputs from the kinks where the gradient jumps: a conv output at the
    ReLU's 0, or two activations tied for a pool window's maximum."""
    (kh, kw), (sh, sw), (ph, pw) = pool
    activation = np.maximum(conv_out, 0)
    padded = np.pad(activation, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    oh, ow = F.max_pool2d(activation, *pool).shape[2:]
    windows = windows[:, :, ::sh, ::sw][:, :, :oh, :ow].reshape(-1, kh * kw)
    top_two = np.sort(windows, axis=1)[:, -2:]
    live = top_two[:, 1] > 0  # a window of zeros has no gradient either side of the tie
    gaps = top_two[live, 1] - top_two[live, 0]
    return min(np.abs(conv_out).min(), gaps.min(initial=np.inf))


@pytest.mark.parametrize("pool", POOLS, ids=case_id)
def test_gradients_match_finite_differences(pool):
    geometry = GEOMETRIES[1]
    conv = geometry[3:]
    rng = np.random.default_rng(3)
    x, w, b = random_case(rng, 2, geometry, np.float64, with_bias=True)
    # central differences step 1e-6: the ReLU masks and argmaxes must not flip within it
    assert kink_margin(F.conv2d(x, w, b, *conv), pool) > 1e-3

    def forward(x, w, b):
        return F.conv2d_relu_max_pool2d(x, w, b, *conv, *pool)[0]

    def backward(grad, x, w, b):
        out, indices = F.conv2d_relu_max_pool2d(x, w, b, *conv, *pool)
        return F.conv2d_relu_max_pool2d_backward(grad, out, indices, x, w, *conv)

    assert fastcnn.gradcheck(forward, (x, w, b), backward=backward)


# ------------------------------------------------------------------------------ threads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", POOLS, ids=case_id)
def test_bit_identical_for_1_2_3_threads(dtype, pool):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((37, 3, 20, 18)).astype(dtype)  # 37: a ragged last chunk
    w = rng.standard_normal((6, 3, 5, 4)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)

    def results():
        out, indices, columns = F.conv2d_relu_max_pool2d(x, w, b, 1, 2, *pool, save_columns=True)
        grad = np.sin(out)  # non-integer gradients: summation order would show in the bits
        kept = F.conv2d_relu_max_pool2d_backward(grad, out, indices, x, w, 1, 2, columns=columns)
        rebuilt = F.conv2d_relu_max_pool2d_backward(
            grad, out, indices, x, w, 1, 2, input_grad=False
        )
        return [out, indices, *F.conv2d_relu_max_pool2d(x, w, b, 1, 2, *pool), *kept, *rebuilt[1:]]

    with fastcnn.threads(1):
        want = results()
    for n_threads in (2, 3):
        with fastcnn.threads(n_threads):
            for got, expected in zip(results(), want, strict=True):
                assert_array_equal(got, expected)


# ----------------------------------------------------------------------------- nn level


def custom_model(rng):
    return nn.Sequential(
        nn.Conv2d(3, 4, (3, 2), padding=1, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 7, rng=rng),
    )


MODELS = {  # name: (build, input shape, dtype)
    "lenet5": (lambda: models.LeNet5(rng=0), (9, 1, 28, 28), np.float32),
    "lenet5 float64": (lambda: models.LeNet5(rng=0).double(), (9, 1, 28, 28), np.float64),
    "custom": (lambda: custom_model(1), (5, 3, 11, 10), np.float32),
}


def one_by_one(modules, x, grad):
    """Each module's forward in order, each backward in reverse: (output, input gradient)."""
    for module in modules:
        x = module(x)
    for module in reversed(modules):
        grad = module.backward(grad, input_grad=True)
    return x, grad


def assert_step_equals_layers_one_by_one(model, twin, x, rng):
    """The Sequential's forward and backward (fused) against twin's layers one by one:
    output, input gradient and every parameter's gradient, bit for bit."""
    out = model(x)
    grad = rng.standard_normal(out.shape).astype(x.dtype)
    grad_x = model.backward(grad, input_grad=True)
    want_out, want_grad_x = one_by_one(list(twin), x, grad)
    assert_array_equal(out, want_out)
    assert_array_equal(grad_x, want_grad_x)
    assert_same_parameter_grads(model, twin)


def assert_same_parameter_grads(model, twin):
    params, twin_params = dict(model.named_parameters()), dict(twin.named_parameters())
    assert params.keys() == twin_params.keys()
    for key, param in params.items():
        assert_array_equal(param.grad, twin_params[key].grad, err_msg=key)


def fused_layers(model):
    return [m for m in model if type(m) in (nn.Conv2d, nn.ReLU, nn.MaxPool2d)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("training", [True, False])
def test_sequential_fused_step_equals_layers_one_by_one(name, training):
    build, shape, dtype = MODELS[name]
    model = build().train(training)
    twin = copy.deepcopy(model)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    assert_step_equals_layers_one_by_one(model, twin, x, rng)
    # the fused path really ran: its layers refuse their own backward
    with pytest.raises(RuntimeError, match="fused"):
        fused_layers(model)[0].backward(np.ones(1, np.float32))
    # and one SGD step leaves both models with the same weights and outputs
    for m in (model, twin):
        optim.SGD(m.parameters(), lr=0.1, momentum=0.9).step()
    assert_array_equal(model(x), twin(x))


def test_sequential_default_backward_skips_the_input_gradient():
    model = models.LeNet5(rng=3)
    twin = copy.deepcopy(model)
    x = np.random.default_rng(3).standard_normal((4, 1, 28, 28)).astype(np.float32)
    grad = np.ones((4, 10), np.float32)
    model(x)
    assert model.backward(grad) is None
    one_by_one(list(twin), x, grad)
    for (key, param), twin_param in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert_array_equal(param.grad, twin_param.grad, err_msg=key)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_fused_layers_own_backward_says_to_call_the_sequential(index):
    model = custom_model(0)
    out = model(np.ones((2, 3, 11, 10), np.float32))
    layer = model[index]
    with pytest.raises(
        RuntimeError,
        match=rf"{type(layer).__name__}\.backward\(\): .*fused"
        r".*call that Sequential's backward",
    ):
        layer.backward(np.ones(out.shape, np.float32))
    model.backward(np.ones(out.shape, np.float32))  # the Sequential's own still works


def test_a_layers_own_forward_makes_its_backward_available_again():
    model = custom_model(0)
    x = np.random.default_rng(5).standard_normal((2, 3, 11, 10)).astype(np.float32)
    model(x)
    conv = model[0]
    out = conv(x)  # on its own, unfused
    grad = np.cos(out)
    want = F.conv2d_backward(grad, x, conv.weight.data, conv.stride, conv.padding)[0]
    assert_array_equal(conv.backward(grad), want)


class MyConv2d(nn.Conv2d):
    pass


class MyReLU(nn.ReLU):
    pass


NOT_FUSED = {
    "conv subclass": lambda: [MyConv2d(2, 3, 3, rng=0), nn.ReLU(), nn.MaxPool2d(2)],
    "relu subclass": lambda: [nn.Conv2d(2, 3, 3, rng=0), MyReLU(), nn.MaxPool2d(2)],
    "avg pool": lambda: [nn.Conv2d(2, 3, 3, rng=0), nn.ReLU(), nn.AvgPool2d(2)],
    "tanh": lambda: [nn.Conv2d(2, 3, 3, rng=0), nn.Tanh(), nn.MaxPool2d(2)],
    "reordered": lambda: [nn.Conv2d(2, 3, 3, rng=0), nn.MaxPool2d(2), nn.ReLU()],
}


@pytest.mark.parametrize("name", NOT_FUSED)
def test_other_runs_are_not_fused(name):
    """Only exactly Conv2d, ReLU, MaxPool2d is fused; after the Sequential's forward, each
    other layer's own backward works, with the Sequential's bits."""
    layers = NOT_FUSED[name]()
    model = nn.Sequential(*layers)
    twin = copy.deepcopy(model)
    x = np.random.default_rng(4).standard_normal((3, 2, 9, 8)).astype(np.float32)
    grad = np.cos(model(x))
    twin(x)
    want_grad_x = twin.backward(grad, input_grad=True)
    for layer in reversed(layers):
        grad = layer.backward(grad, input_grad=True)
    assert_array_equal(grad, want_grad_x)
    for param, twin_param in zip(model.parameters(), twin.parameters(), strict=True):
        assert_array_equal(param.grad, twin_param.grad)


# ---------------------------------------------------------------------------- PyTorch

TORCH_CASES = [
    ((8, 1, 28, 28), 6, (5, 5), (1, 1), (2, 2), POOLS[0]),  # LeNet conv1 + pool1
    ((3, 3, 11, 9), 4, (3, 2), (2, 1), (1, 2), POOLS[1]),
    ((2, 2, 10, 13), 5, (2, 3), (1, 1), (0, 1), POOLS[2]),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_fused_matches_torch(case):
    torch = pytest.importorskip("torch")
    shape, k, kernel, stride, padding, (pool_kernel, pool_stride, pool_padding) = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((k, shape[1], *kernel)) * 0.2).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_out, t_indices = torch.nn.functional.max_pool2d(
        torch.relu(torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)),
        pool_kernel,
        pool_stride,
        pool_padding,
        return_indices=True,
    )
    out, indices = F.conv2d_relu_max_pool2d(x, w, b, stride, padding, *case[-1])
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-4, atol=1e-5)
    # where the maximum is clearly positive: a float32 rounding cannot swap the winner
    clear = out > 1e-3
    assert clear.mean() > 0.5
    assert_array_equal(indices[clear], t_indices.numpy()[clear])
    grad = rng.standard_normal(out.shape).astype(np.float32)
    t_out.backward(torch.tensor(grad))
    grads = F.conv2d_relu_max_pool2d_backward(grad, out, indices, x, w, stride, padding)
    for mine, theirs in zip(grads, (tx.grad, tw.grad, tb.grad), strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------- BatchNorm -> ReLU


def norm_relu_model(dtype, rng=0):
    """Both BatchNorms, each before a ReLU (fused), and one before a Tanh (not)."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, rng=rng),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 1, rng=rng),
        nn.BatchNorm2d(5),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(5 * 7 * 6, 8, rng=rng),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 3, rng=rng),
    ).to(dtype)


def with_random_affine(model, rng):
    """BatchNorm weights and biases off their 1 and 0, so the ReLU cuts unevenly."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.weight.data[...] = rng.uniform(0.5, 2, module.num_features)
            module.bias.data[...] = rng.standard_normal(module.num_features)
    return model


def norm_relu_case(dtype, seed=6):
    rng = np.random.default_rng(seed)
    model = with_random_affine(norm_relu_model(dtype), rng)
    x = rng.standard_normal((6, 3, 7, 6)).astype(dtype)
    return model, copy.deepcopy(model), x, rng


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_relu_step_equals_layers_one_by_one(dtype):
    model, twin, x, rng = norm_relu_case(dtype)
    stages = [type(s).__name__ for s in fastcnn.nn._fusion.stages(list(model))]
    assert stages.count("BatchNormReLU") == 2 and "BatchNorm2d" in stages  # the Tanh's
    x[0, 1, 2, 3] = np.nan  # NaN through both paths alike
    assert_step_equals_layers_one_by_one(model, twin, x, rng)
    for key, buffer in model.named_buffers():  # the running statistics moved alike
        assert_array_equal(buffer, dict(twin.named_buffers())[key], err_msg=key)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_relu_after_an_eval_forward(dtype):
    """An eval-mode forward runs the compiled pass (a BatchNorm after a Conv2d folded into
    it); its backward runs the stages again, fused, with the running statistics: the
    gradients are the layers' own, bit for bit."""
    model, twin, x, rng = norm_relu_case(dtype, seed=7)
    for m in (model, twin):
        m(x)  # running statistics off their initial values
        m.eval()
    out = model(x)
    grad = rng.standard_normal(out.shape).astype(dtype)
    grad_x = model.backward(grad, input_grad=True)
    want_out, want_grad_x = one_by_one(list(twin), x, grad)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    assert_array_equal(grad_x, want_grad_x)
    assert_same_parameter_grads(model, twin)


@pytest.mark.parametrize("index", [1, 2])
def test_fused_batch_norm_and_relu_say_to_call_the_sequential(index):
    model, _, x, _ = norm_relu_case(np.float32)
    out = model(x)
    layer = model[index]
    with pytest.raises(
        RuntimeError, match=rf"{type(layer).__name__}\.backward\(\): .*BatchNorm -> ReLU"
    ):
        layer.backward(np.ones(x.shape[:1] + (4, 7, 6), np.float32))
    assert model.backward(np.ones(out.shape, np.float32), input_grad=True).shape == x.shape


class TwiceInOnePass(nn.Module):
    """f(x) + f(2 x) with one Sequential f: its two calls in one forward pass."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + self.inner(2 * x)

    def backward(self, grad_output, input_grad=True):
        grad_doubled = self.inner.backward(grad_output)  # the later call's cache first
        return self.inner.backward(grad_output) + 2 * grad_doubled


def test_a_sequential_used_twice_backs_through_both_fused_calls():
    """Each call's BatchNorm values are kept by the Sequential, so both calls' gradients
    are the layers' own, one by one."""
    model, twin, x, rng = norm_relu_case(np.float64, seed=8)
    pair = TwiceInOnePass(model)
    grad = rng.standard_normal((6, 3))
    pair(x)
    got = pair.backward(grad)
    want_doubled = one_by_one(list(twin), 2 * x, grad)[1]
    want = one_by_one(list(twin), x, grad)[1] + 2 * want_doubled
    assert_array_equal(got, want)
    assert_same_parameter_grads(model, twin)


def test_a_relu_subclass_or_batch_norm_subclass_is_not_fused():
    class MyBatchNorm2d(nn.BatchNorm2d):
        pass

    for layers in ([MyBatchNorm2d(3), nn.ReLU()], [nn.BatchNorm2d(3), MyReLU()]):
        kinds = [type(s) for s in fastcnn.nn._fusion.stages(layers)]
        assert kinds == [type(layer) for layer in layers]


def test_batch_norm_relu_gradients_match_finite_differences():
    model = with_random_affine(
        nn.Sequential(nn.BatchNorm2d(3), nn.ReLU()).double(), np.random.default_rng(9)
    )
    x = np.random.default_rng(10).standard_normal((4, 3, 3, 2))
    assert fastcnn.gradcheck(model, x)
