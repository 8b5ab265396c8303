"""Property-based tests of the compiled kernels against ``fastcnn._reference`` (the spec).

Hypothesis draws random geometries (N 0-4, C, H, W, K, kernel, stride, padding, dtype) and
integer-valued float data, so every sum is exact in any order and the kernels must equal the
reference bit for bit (oneDNN benchdnn's trick). It also draws invalid geometries, which must
raise ``ValueError`` with a message, never crash or return garbage.

Derandomised (the same examples on every run) and bounded: ``max_examples`` per test keeps the
file to a few seconds. ``pytest --hypothesis-show-statistics`` prints how many examples ran.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from test_kernels_vs_reference import assert_gradients_equal

import fastcnn
from fastcnn import _reference as ref
from fastcnn import functional as F

# database=None: no .hypothesis/ directory in the checkout; deadline=None: the first call of
# a kernel allocates its workspace, which is not a performance bug.
PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow],
)

DTYPES = st.sampled_from([np.float32, np.float64])
pairs = st.tuples


def small_ints(seed, shape, dtype, low=-4, high=5):
    """Integer-valued floats, exact under any summation order; mostly non-zero."""
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, size=shape).astype(dtype)


@st.composite
def window_geometry(draw, max_kernel=5, pool=False):
    """A valid (kernel, stride, padding, H, W): the window fits in the padded input.

    Built valid by construction (H >= kernel - 2*padding) rather than filtered, so no example
    is wasted. ``pool`` adds pooling's rule: padding at most half the kernel.
    """
    kernel = draw(pairs(st.integers(1, max_kernel), st.integers(1, max_kernel)))
    stride = draw(pairs(st.integers(1, 3), st.integers(1, 3)))
    if pool:
        padding = draw(pairs(st.integers(0, kernel[0] // 2), st.integers(0, kernel[1] // 2)))
    else:
        padding = draw(pairs(st.integers(0, 2), st.integers(0, 2)))
    smallest = [max(1, kernel[a] - 2 * padding[a]) for a in (0, 1)]
    hw = tuple(draw(st.integers(smallest[a], smallest[a] + 6)) for a in (0, 1))
    return kernel, stride, padding, hw


@st.composite
def conv_case(draw):
    kernel, stride, padding, (h, w) = draw(window_geometry())
    n, c, k = draw(st.integers(0, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    return (n, c, h, w), k, kernel, stride, padding


@st.composite
def pool_case(draw):
    kernel, stride, padding, (h, w) = draw(window_geometry(pool=True))
    n, c = draw(st.integers(0, 4)), draw(st.integers(1, 3))
    return (n, c, h, w), kernel, stride, padding


# --------------------------------------------------------------------- valid geometries


@PROPERTY
@given(
    case=conv_case(),
    dtype=DTYPES,
    with_bias=st.booleans(),
    input_grad=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv2d_forward_and_gradients_equal_reference(case, dtype, with_bias, input_grad, seed):
    shape, k, kernel, stride, padding = case
    x = small_ints(seed, shape, dtype)
    w = small_ints(seed + 1, (k, shape[1], *kernel), dtype)
    b = small_ints(seed + 2, (k,), dtype) if with_bias else None
    out = F.conv2d(x, w, b, stride, padding)
    assert out.dtype == dtype
    assert_array_equal(out, ref.conv2d(x, w, b, stride, padding))

    grad_out = small_ints(seed + 3, out.shape, dtype)
    got = F.conv2d_backward(
        grad_out, x, w, stride, padding, input_grad=input_grad, bias_grad=with_bias
    )
    want = ref.conv2d_backward(
        grad_out, x, w, stride, padding, input_grad=input_grad, bias_grad=with_bias
    )
    assert_gradients_equal(got, want, dtype)


@PROPERTY
@given(case=conv_case(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_im2col_and_col2im_equal_reference(case, dtype, seed):
    shape, _, kernel, stride, padding = case
    x = small_ints(seed, shape, dtype)
    col = F.im2col(x, kernel, stride, padding)
    assert_array_equal(col, ref.im2col(x, kernel, stride, padding))
    dcol = small_ints(seed + 1, col.shape, dtype)
    back = F.col2im(dcol, shape, kernel, stride, padding)
    assert_array_equal(back, ref.col2im(dcol, shape, kernel, stride, padding))


@PROPERTY
@given(case=pool_case(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_max_pool2d_indices_and_backward_equal_reference(case, dtype, seed):
    shape, kernel, stride, padding = case
    # -3..2: few distinct values, so ties (first maximum wins) are common
    x = small_ints(seed, shape, dtype, -3, 3)
    out, index = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    want_out, want_index = ref.max_pool2d(x, kernel, stride, padding)
    assert_array_equal(out, want_out)
    assert_array_equal(index, want_index)
    grad_out = small_ints(seed + 1, out.shape, dtype)
    assert_array_equal(
        F.max_pool2d_backward(grad_out, index, shape),
        ref.max_pool2d_backward(grad_out, want_index, shape),
    )


@PROPERTY
@given(case=pool_case(), dtype=DTYPES, count_include_pad=st.booleans(), seed=st.integers(0, 2**16))
def test_avg_pool2d_and_backward_equal_reference(case, dtype, count_include_pad, seed):
    shape, kernel, stride, padding = case
    x = small_ints(seed, shape, dtype)
    out = F.avg_pool2d(x, kernel, stride, padding, count_include_pad)
    assert_array_equal(out, ref.avg_pool2d(x, kernel, stride, padding, count_include_pad))
    grad_out = small_ints(seed + 1, out.shape, dtype)
    assert_array_equal(
        F.avg_pool2d_backward(grad_out, shape, kernel, stride, padding, count_include_pad),
        ref.avg_pool2d_backward(grad_out, shape, kernel, stride, padding, count_include_pad),
    )


@PROPERTY
@given(
    lead=st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple),
    in_features=st.integers(1, 12),
    out_features=st.integers(1, 12),
    dtype=DTYPES,
    with_bias=st.booleans(),
    input_grad=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_and_gradients_equal_reference(
    lead, in_features, out_features, dtype, with_bias, input_grad, seed
):
    """Any leading shape (N=0 included, and row counts across the kernel's row chunks)."""
    x = small_ints(seed, (*lead, in_features), dtype)
    w = small_ints(seed + 1, (out_features, in_features), dtype)
    b = small_ints(seed + 2, (out_features,), dtype) if with_bias else None
    out = F.linear(x, w, b)
    x2d = x.reshape(-1, in_features)
    assert out.dtype == dtype
    assert_array_equal(out, ref.linear(x2d, w, b).reshape(*lead, out_features))
    grad_out = small_ints(seed + 3, out.shape, dtype)
    got = F.linear_backward(grad_out, x, w, input_grad=input_grad, bias_grad=with_bias)
    want = ref.linear_backward(
        grad_out.reshape(-1, out_features), x2d, w, input_grad=input_grad, bias_grad=with_bias
    )
    if input_grad:
        assert_array_equal(got[0], want[0].reshape(x.shape))
    else:
        assert got[0] is None
    assert_array_equal(got[1], want[1])
    if with_bias:
        assert_array_equal(got[2], want[2])
    else:
        assert got[2] is None


def every_kernel(x, w, dense, kernel, stride, padding, pool):
    """Every kernel's outputs on one input (conv, its gradients, pooling, linear)."""
    out = F.conv2d(x, w, None, stride, padding)
    grad = np.sin(out)  # non-integer: any change of summation order shows in the bits
    results = [out, *F.conv2d_backward(grad, x, w, stride, padding)[:2]]
    pooled, index = F.max_pool2d(x, *pool, return_indices=True)
    results += [pooled, index, F.max_pool2d_backward(np.cos(pooled), index, x.shape)]
    averaged = F.avg_pool2d(x, *pool)
    results += [averaged, F.avg_pool2d_backward(np.cos(averaged), x.shape, *pool)]
    flat = x.reshape(x.shape[0], dense.shape[1])
    y = F.linear(flat, dense)
    return results + [y, *F.linear_backward(np.sin(y), flat, dense)[:2]]


@PROPERTY
@given(
    case=conv_case(),
    n=st.integers(0, 20),
    pool=pool_case(),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_every_kernel_gives_the_same_bits_on_1_and_3_threads(case, n, pool, dtype, seed):
    """Random real-valued data (not integers) and batches of up to 20 (across the gradient
    chunks of 8 and linear's row chunks of 16): the batch is split differently for 1 and 3
    threads, and the gradient sums must still be added in one fixed order."""
    shape, k, kernel, stride, padding = case
    shape = (n, *shape[1:])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((k, shape[1], *kernel)).astype(dtype)
    dense = rng.standard_normal((3, shape[1] * shape[2] * shape[3])).astype(dtype)
    pool_geometry = pool[1:]
    kernel_hw, _, pad_hw = pool_geometry
    if any(kernel_hw[a] > shape[2 + a] + 2 * pad_hw[a] for a in (0, 1)):
        pool_geometry = (1, 1, 0)  # the drawn pool does not fit this input
    with fastcnn.threads(1):
        want = every_kernel(x, w, dense, kernel, stride, padding, pool_geometry)
    with fastcnn.threads(3):
        got = every_kernel(x, w, dense, kernel, stride, padding, pool_geometry)
    for g, e in zip(got, want, strict=True):
        assert_array_equal(g, e)


# ------------------------------------------------------------------- invalid geometries


@st.composite
def oversized_window(draw):
    """A kernel larger than the padded input along at least one axis."""
    padding = draw(pairs(st.integers(0, 2), st.integers(0, 2)))
    hw = draw(pairs(st.integers(1, 6), st.integers(1, 6)))
    too_big = draw(st.sampled_from([0, 1]))
    kernel = [draw(st.integers(1, hw[a] + 2 * padding[a])) for a in (0, 1)]
    kernel[too_big] = hw[too_big] + 2 * padding[too_big] + draw(st.integers(1, 3))
    return tuple(kernel), padding, hw


@PROPERTY
@given(geometry=oversized_window(), stride=st.integers(1, 3), n=st.integers(0, 3))
def test_window_larger_than_padded_input_raises(geometry, stride, n):
    kernel, padding, (h, w) = geometry
    x = np.ones((n, 2, h, w), np.float32)
    weight = np.ones((3, 2, *kernel), np.float32)
    message = r"kernel size .* is larger than the padded input"
    with pytest.raises(ValueError, match=message):
        F.conv2d(x, weight, None, stride, padding)
    with pytest.raises(ValueError, match=message):
        F.im2col(x, kernel, stride, padding)
    with pytest.raises(ValueError, match=message):
        F.col2im(np.ones((1, 1), np.float32), x.shape, kernel, stride, padding)
    if padding[0] <= kernel[0] // 2 and padding[1] <= kernel[1] // 2:  # else: padding error
        with pytest.raises(ValueError, match=message):
            F.max_pool2d(x, kernel, stride, padding)
        with pytest.raises(ValueError, match=message):
            F.avg_pool2d(x, kernel, stride, padding)


@st.composite
def bad_hyperparameters(draw):
    """(kernel, stride, padding, message) with one value out of range."""
    kernel = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    stride = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    padding = [0, 0]
    axis = draw(st.sampled_from([0, 1]))
    which = draw(st.sampled_from(["kernel_size", "stride", "padding"]))
    if which == "padding":
        padding[axis] = draw(st.integers(-5, -1))
        message = r"padding must be >= 0"
    elif which == "stride":
        stride[axis] = draw(st.integers(-5, 0))
        message = r"stride must be positive"
    else:
        kernel[axis] = draw(st.integers(-5, 0))
        message = r"kernel_size must be positive"
    return tuple(kernel), tuple(stride), tuple(padding), which, message


@PROPERTY
@given(bad=bad_hyperparameters(), n=st.integers(0, 2))
def test_out_of_range_hyperparameters_raise_value_error(bad, n):
    kernel, stride, padding, which, message = bad
    x = np.ones((n, 1, 6, 6), np.float32)
    calls = [
        lambda: F.im2col(x, kernel, stride, padding),
        lambda: F.max_pool2d(x, kernel, stride, padding),
        lambda: F.avg_pool2d(x, kernel, stride, padding),
        lambda: F.avg_pool2d_backward(np.ones((n, 1, 1, 1)), x.shape, kernel, stride, padding),
    ]
    if which != "kernel_size":  # conv2d takes its kernel from the weight's shape
        weight = np.ones((2, 1, *kernel), np.float32)
        calls.append(lambda: F.conv2d(x, weight, None, stride, padding))
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


@st.composite
def too_much_pool_padding(draw):
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    padding = [draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2))]
    axis = draw(st.sampled_from([0, 1]))
    padding[axis] = kernel[axis] // 2 + draw(st.integers(1, 3))
    return kernel, tuple(padding)


@PROPERTY
@given(geometry=too_much_pool_padding(), dtype=DTYPES)
def test_pool_padding_over_half_the_kernel_raises(geometry, dtype):
    kernel, padding = geometry
    x = np.ones((1, 1, 8, 8), dtype)
    for pool in (F.max_pool2d, F.avg_pool2d):
        with pytest.raises(ValueError, match=r"must be at most half the kernel size"):
            pool(x, kernel, 1, padding)
