"""Compiled kernels against the pure-NumPy reference (the spec), exactly, on every ISA copy
of the C kernels this CPU runs (the ``kernel_copy`` fixture, tests/conftest.py).

Inputs are small integers stored as floats (oneDNN benchdnn's trick), so every sum is exact
in any order and the kernels must match the reference bit for bit: ``assert_array_equal``.
"""

import itertools

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from fastcnn import _isa, _ops
from fastcnn import _reference as ref
from fastcnn import functional as F

# every test here on every copy: the pool, linear and ReLU kernels do not depend on it, but
# the convolutions' method choice, packing and col2im do, and the rest costs little
pytestmark = pytest.mark.usefixtures("kernel_copy")

DTYPES = [np.float32, np.float64]

# (N, C, H, W), K, (FH, FW), stride, padding: N in {0, 1, 3}, H != W, non-square kernels,
# strides 1-3, paddings 0-2, in mixed pairs.
CONV_CASES = [
    ((1, 1, 5, 5), 1, (3, 3), (1, 1), (0, 0)),
    ((3, 2, 7, 9), 4, (3, 2), (1, 1), (1, 1)),
    ((3, 3, 8, 6), 5, (2, 3), (2, 1), (0, 2)),
    ((1, 2, 9, 10), 3, (5, 5), (3, 3), (2, 2)),
    ((3, 1, 6, 11), 2, (1, 4), (1, 3), (2, 0)),
    ((0, 2, 6, 7), 3, (3, 3), (1, 2), (1, 1)),
    ((3, 4, 5, 4), 6, (5, 4), (2, 2), (2, 1)),
    ((1, 3, 4, 4), 2, (4, 4), (1, 1), (0, 0)),
    ((3, 2, 10, 7), 3, (3, 3), (3, 2), (1, 2)),
    ((1, 1, 3, 8), 1, (1, 1), (1, 2), (0, 0)),
]

POOL_CASES = [
    ((1, 1, 4, 4), (2, 2), (2, 2), (0, 0)),
    ((3, 2, 7, 9), (3, 3), (2, 2), (1, 1)),
    ((3, 3, 8, 6), (2, 3), (1, 2), (1, 1)),
    ((1, 2, 9, 10), (4, 2), (3, 1), (2, 0)),
    ((0, 2, 6, 7), (2, 2), (2, 2), (0, 0)),
    ((3, 1, 6, 11), (3, 1), (1, 1), (0, 0)),
    ((3, 2, 5, 5), (5, 5), (1, 3), (2, 2)),
]


def small_ints(rng, shape, dtype, low=-4, high=5):
    """Integer-valued floats: exact under any summation order. Mostly non-zero."""
    return rng.integers(low, high, size=shape).astype(dtype)


def assert_gradients_equal(got, want, dtype):
    """Kernel gradients equal the reference's exactly; None (not wanted) where it is None."""
    for g, e in zip(got, want, strict=True):
        if e is None:
            assert g is None
        else:
            assert g.dtype == dtype and g.shape == e.shape
            assert_array_equal(g, e)


def case_id(case):
    return "-".join("x".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in case)


def check_conv_matches_reference(case, dtype, with_bias):
    """conv2d and conv2d_backward equal the reference exactly on small integers: the
    input and bias gradients on and off, from the column matrices the forward pass kept
    (if it kept any: a direct kernel needs none) and rebuilt. Returns those matrices."""
    shape, k, kernel, stride, padding = case
    rng = np.random.default_rng(sum(shape) + k)
    x = small_ints(rng, shape, dtype)
    w = small_ints(rng, (k, shape[1], *kernel), dtype)
    b = small_ints(rng, (k,), dtype) if with_bias else None
    expected = ref.conv2d(x, w, b, stride, padding)
    out, columns = F.conv2d(x, w, b, stride, padding, save_columns=True)
    for got in (out, F.conv2d(x, w, b, stride, padding)):
        assert got.dtype == dtype
        assert_array_equal(got, expected)
    if out.size:
        assert np.count_nonzero(out) > out.size // 2, "a mostly-zero output proves nothing"

    grad_out = small_ints(rng, out.shape, dtype)
    for input_grad, bias_grad in itertools.product((True, False), (with_bias, False)):
        want = ref.conv2d_backward(
            grad_out, x, w, stride, padding, input_grad=input_grad, bias_grad=bias_grad
        )
        for kept in {id(c): c for c in (None, columns)}.values():
            got = F.conv2d_backward(
                grad_out,
                x,
                w,
                stride,
                padding,
                input_grad=input_grad,
                bias_grad=bias_grad,
                columns=kept,
            )
            assert_gradients_equal(got, want, dtype)
    return columns


def vector_length(dtype):
    """Values per vector of the kernel copy that runs: the direct kernels' lanes
    (csrc/direct_conv.h; fastcnn._isa)."""
    return _isa.vector_length(dtype)


def out_size(case):
    """(OH, OW) of a case (N, C, H, W), K, (FH, FW), stride, padding."""
    (_, _, h, w), _, (fh, fw), stride, (ph, pw) = case
    return (h + 2 * ph - fh) // stride[0] + 1, (w + 2 * pw - fw) // stride[1] + 1


def weight_of(case, dtype):
    """A weight of the case's shape: all the method selection looks at."""
    (_, c, _, _), k, kernel, _, _ = case
    return np.zeros((k, c, *kernel), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv2d_forward_and_backward_exact(case, dtype, with_bias):
    check_conv_matches_reference(case, dtype, with_bias)


@pytest.mark.parametrize("case", CONV_CASES[:4], ids=case_id)
def test_conv2d_backward_without_input_grad(case):
    shape, k, kernel, stride, padding = case
    rng = np.random.default_rng(7)
    x = small_ints(rng, shape, np.float32)
    w = small_ints(rng, (k, shape[1], *kernel), np.float32)
    grad_out = small_ints(rng, F.conv2d(x, w, None, stride, padding).shape, np.float32)
    grad_x, grad_w, grad_b = F.conv2d_backward(grad_out, x, w, stride, padding, input_grad=False)
    assert grad_x is None
    _, want_w, want_b = ref.conv2d_backward(grad_out, x, w, stride, padding)
    assert_array_equal(grad_w, want_w)
    assert_array_equal(grad_b, want_b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_im2col_col2im_exact(case, dtype):
    shape, _, kernel, stride, padding = case
    rng = np.random.default_rng(3)
    x = small_ints(rng, shape, dtype)
    col = F.im2col(x, kernel, stride, padding)
    assert_array_equal(col, ref.im2col(x, kernel, stride, padding))
    dcol = small_ints(rng, col.shape, dtype)
    back = F.col2im(dcol, shape, kernel, stride, padding)
    assert_array_equal(back, ref.col2im(dcol, shape, kernel, stride, padding))


def test_im2col_matmul_is_conv2d():
    """The documented identity between the book's layout and conv2d."""
    rng = np.random.default_rng(11)
    x = small_ints(rng, (2, 3, 7, 6), np.float64)
    w = small_ints(rng, (4, 3, 3, 2), np.float64)
    col = F.im2col(x, (3, 2), 1, 1)
    oh, ow = 7, 7
    via_col = (col @ w.reshape(4, -1).T).reshape(2, oh, ow, 4).transpose(0, 3, 1, 2)
    assert_array_equal(via_col, F.conv2d(x, w, None, 1, 1))


def test_col2im_is_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for random x, c."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 8, 7))
    col = F.im2col(x, (3, 2), (2, 1), (1, 2))
    c = rng.standard_normal(col.shape)
    lhs = np.vdot(col, c)
    rhs = np.vdot(x, F.col2im(c, x.shape, (3, 2), (2, 1), (1, 2)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_max_pool2d_exact(case, dtype):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(sum(shape))
    # Few distinct values: many ties, so the first-maximum rule is exercised.
    x = small_ints(rng, shape, dtype, -3, 3)
    out, index = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    want_out, want_index = ref.max_pool2d(x, kernel, stride, padding)
    assert_array_equal(out, want_out)
    assert_array_equal(index, want_index)
    grad_out = small_ints(rng, out.shape, dtype)
    assert_array_equal(
        F.max_pool2d_backward(grad_out, index, shape),
        ref.max_pool2d_backward(grad_out, want_index, shape),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_exact(case, dtype, count_include_pad):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(sum(shape) + 1)
    x = small_ints(rng, shape, dtype)
    out = F.avg_pool2d(x, kernel, stride, padding, count_include_pad)
    assert_array_equal(out, ref.avg_pool2d(x, kernel, stride, padding, count_include_pad))
    grad_out = small_ints(rng, out.shape, dtype)
    assert_array_equal(
        F.avg_pool2d_backward(grad_out, shape, kernel, stride, padding, count_include_pad),
        ref.avg_pool2d_backward(grad_out, shape, kernel, stride, padding, count_include_pad),
    )


def test_overlapping_max_pool_windows_accumulate():
    """stride < kernel: a cell that is the max of two windows gets both gradients."""
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = 9  # the max of all four 2x2 windows at stride 1
    out, index = F.max_pool2d(x, 2, 1, return_indices=True)
    assert_array_equal(index, np.full((1, 1, 2, 2), 4))
    grad = F.max_pool2d_backward(np.array([[[[1, 2], [3, 4]]]], np.float32), index, x.shape)
    assert grad[0, 0, 1, 1] == 10 and np.count_nonzero(grad) == 1


def test_max_pool_ties_nan_and_padding_rules():
    x = np.array([[[[1, 5, 5], [5, np.nan, 2], [np.nan, 0, 1]]]], np.float64)
    out, index = F.max_pool2d(x, 3, 1, return_indices=True)
    # NaN wins and the last NaN (row-major) is taken
    assert np.isnan(out[0, 0, 0, 0]) and index[0, 0, 0, 0] == 6
    y = np.array([[[[1, 5, 5], [5, 0, 2]]]], np.float32)
    out, index = F.max_pool2d(y, (2, 3), 1, return_indices=True)
    assert out[0, 0, 0, 0] == 5 and index[0, 0, 0, 0] == 1  # first maximum
    # an all-negative input with padding: padding (zero) is never chosen
    z = -np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    out, index = F.max_pool2d(z, 2, 1, padding=1, return_indices=True)
    assert (out < 0).all()
    assert_array_equal(out[0, 0], [[-1, -1, -2], [-1, -1, -2], [-3, -3, -4]])


def test_nan_and_inf_propagate():
    x = np.ones((2, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    x[1, 0, 2, 2] = np.inf
    w = np.ones((1, 1, 3, 3), np.float32)
    out = F.conv2d(x, w, None, 1, 1)
    assert np.isnan(out[0]).sum() == 9 and np.isinf(out[1]).sum() == 9
    assert np.isnan(F.avg_pool2d(x, 2)[0]).sum() == 1
    assert np.isinf(F.max_pool2d(x, 2)[1]).sum() == 1


def test_empty_batch_gives_empty_outputs():
    x = np.empty((0, 2, 6, 6), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    out = F.conv2d(x, w, np.zeros(3, np.float32))
    assert out.shape == (0, 3, 4, 4)
    gx, gw, gb = F.conv2d_backward(out, x, w)
    assert gx.shape == x.shape and not gw.any() and not gb.any()
    assert F.max_pool2d(x, 2).shape == (0, 2, 3, 3)
    assert F.avg_pool2d(x, 2).shape == (0, 2, 3, 3)
    assert F.im2col(x, 3).shape == (0, 18)


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[:, :, ::2, ::2],  # strided view
        lambda a: np.asfortranarray(a),  # F-ordered
        lambda a: a.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2),  # swapped strides
    ],
    ids=["strided", "fortran", "transposed"],
)
def test_non_contiguous_inputs_give_identical_bits(make):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((3, 2, 12, 10)).astype(np.float32)
    view = make(base)
    w = np.asfortranarray(rng.standard_normal((4, 2, 3, 3)).astype(np.float32))
    dense = np.ascontiguousarray(view)
    assert_array_equal(F.conv2d(view, w, None, 1, 1), F.conv2d(dense, w, None, 1, 1))
    assert_array_equal(F.max_pool2d(view, 2), F.max_pool2d(dense, 2))
    assert_array_equal(F.avg_pool2d(view, 2), F.avg_pool2d(dense, 2))


def test_read_only_and_memory_mapped_inputs(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    frozen = x.copy()
    frozen.flags.writeable = False
    frozen_w = w.copy()
    frozen_w.flags.writeable = False
    want = F.conv2d(x, w, None, 1, 1)
    for arr in (mapped, frozen):
        assert_array_equal(F.conv2d(arr, frozen_w, None, 1, 1), want)
        assert_array_equal(F.max_pool2d(arr, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))
        grads = F.conv2d_backward(want, arr, frozen_w, 1, 1)
        for g, e in zip(grads, F.conv2d_backward(want, x, w, 1, 1), strict=True):
            assert_array_equal(g, e)


def test_output_size_formula():
    for size, k, s, p in itertools.product(range(1, 12), range(1, 6), range(1, 4), range(3)):
        if k <= size + 2 * p:
            assert F.output_size(size, k, s, p) == len(range(-p, size + p - k + 1, s))


LINEAR_CASES = [
    ((37, 20), 7),
    ((1, 5), 3),
    ((0, 4), 2),
    ((2, 3, 17), 5),
    ((9,), 4),
    ((64, 400), 120),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, out_features", LINEAR_CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_forward_and_backward_exact(shape, out_features, dtype, with_bias):
    rng = np.random.default_rng(len(shape) + out_features)
    x = small_ints(rng, shape, dtype)
    w = small_ints(rng, (out_features, shape[-1]), dtype)
    b = small_ints(rng, (out_features,), dtype) if with_bias else None
    out = F.linear(x, w, b)
    assert out.shape == (*shape[:-1], out_features) and out.dtype == dtype
    assert_array_equal(out, ref.linear(x, w, b))
    grad_out = small_ints(rng, out.shape, dtype)
    got = F.linear_backward(grad_out, x, w, bias_grad=with_bias)
    want = ref.linear_backward(grad_out, x, w, bias_grad=with_bias)
    assert_gradients_equal(got, want, dtype)
    assert F.linear_backward(grad_out, x, w, input_grad=False)[0] is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7,), (0, 3), (2, 1000)])
def test_relu_forward_and_backward_exact(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x = small_ints(rng, shape, dtype)
    if x.size:
        x.flat[0] = np.nan  # NaN stays NaN and passes its gradient, as in torch
        x.flat[-1] = -0.0
    out = F.relu(x)
    assert_array_equal(out, ref.relu(x))
    grad = small_ints(rng, shape, dtype)
    assert_array_equal(F.relu_backward(grad, out), ref.relu_backward(grad, out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7,), (0, 3), (2, 20000)])
def test_add_and_add_relu_exact(shape, dtype):
    """The threaded sum and ReLU-of-sum (a residual block's end) give NumPy's bits: NaN,
    inf - inf, -0.0 and a sum rounding to 0 included; 20000 values span two blocks."""
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    if a.size:
        a.flat[:4] = [np.nan, np.inf, -0.0, 1.0]
        b.flat[:4] = [1.0, -np.inf, -0.0, -1.0]
    with np.errstate(invalid="ignore"):  # inf - inf, in NumPy's twin
        want_sum, want = ref.add(a, b), ref.add_relu(a, b)
    assert_array_equal(F.add_relu(a, b), want)
    assert_array_equal(_ops.add(a, b), want_sum)
    # not C order: read as its C-order copy
    assert_array_equal(F.add_relu(a.T, b.T), want.T)
