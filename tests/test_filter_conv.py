"""The filter-vector convolution kernel (csrc/direct_conv_impl.h) on every branch it has.

``functional._conv_method`` picks it for at least VL/2 filters, VL the values per 64-byte
vector (16 float32, 8 float64), at any stride. Filters are padded to KP, a multiple of VL.
The forward pass runs a 4-vector x 6-pixel tile while four whole filter vectors remain
(K >= 4*VL), then 8/4/2/1-pixel tiles (spanning row ends) for the pixels and filters left
over. The weight gradient (``_weight_grad_method``: direct only while C*kH*kW <= 256) runs
kernel columns in tiles of 5, 3 and 1, and output pixels in even/odd pairs. The input
gradient (``_input_grad_packing``: stride 1, padding below the kernel size, C >= VL/2) is
the output gradient, padded by the kernel size less one less the padding, convolved by the
same kernel with the flipped kernels: there C plays K's part.

Checked: the reference bit for bit on small integers over a grid that runs every branch
(``test_cases_cover_every_branch`` says which); the im2col + GEMM path to rounding on random
normal data; +-inf and NaN in the input and the output gradient; 1-3 threads; the fused
Conv2d -> ReLU -> MaxPool2d op; PyTorch on VGG-like layers.
"""


import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from test_fused import assert_fused_matches_unfused
from test_kernels_vs_reference import (
    case_id,
    check_conv_matches_reference,
    out_size,
    small_ints,
    vector_length,
    weight_of,
)

import fastcnn
from fastcnn import _reference as ref
from fastcnn import functional as F

DTYPES = [np.float32, np.float64]
FILTERS, GEMM = F._FILTERS, F._GEMM

# (N, C, H, W), K, (FH, FW), stride, padding. Each K of {8, 9, 16, 17, 33, 63, 64, 70, 128,
# 130}; pixel counts P = OH*OW whose remainders after tiles of 8 (filters left over) and of 6
# (the 4-vector tile) take every value in both dtypes, and likewise for the input gradient
# (C filters, H*W pixels); strides 1-3 and (1, 2); paddings 0-3, unequal per axis, and as
# large as the kernel (the input gradient falls back to GEMM).
CASES = [
    ((3, 3, 7, 7), 8, (3, 3), (1, 1), (1, 1)),
    ((1, 8, 6, 5), 9, (1, 1), (1, 1), (0, 0)),
    ((9, 9, 5, 6), 16, (2, 2), (1, 1), (0, 0)),
    ((3, 16, 5, 5), 17, (3, 3), (1, 1), (2, 1)),
    ((1, 1, 5, 10), 33, (4, 4), (2, 2), (1, 1)),
    ((0, 3, 9, 20), 63, (5, 5), (3, 3), (2, 2)),
    ((3, 8, 5, 9), 64, (3, 7), (1, 2), (1, 3)),
    ((3, 9, 4, 9), 64, (2, 6), (1, 1), (0, 0)),
    ((1, 9, 6, 8), 70, (6, 6), (1, 1), (2, 0)),
    ((1, 16, 3, 8), 70, (2, 2), (1, 1), (0, 0)),
    ((3, 1, 9, 7), 128, (2, 5), (2, 1), (0, 2)),
    ((1, 16, 7, 6), 130, (3, 4), (1, 1), (1, 1)),
    ((1, 16, 4, 5), 8, (2, 2), (1, 1), (2, 2)),
    ((1, 8, 5, 6), 17, (3, 1), (1, 1), (1, 1)),
    # C >= 64: the input gradient's convolution (C filters, H*W pixels) on the 4-vector tile
    ((1, 64, 2, 3), 8, (3, 3), (1, 1), (1, 1)),
    ((2, 70, 1, 7), 8, (1, 3), (1, 1), (0, 1)),
    ((1, 65, 2, 4), 9, (2, 2), (1, 1), (1, 0)),
    ((1, 66, 3, 7), 8, (3, 3), (1, 1), (1, 1)),
    ((2, 67, 2, 5), 16, (2, 3), (1, 1), (0, 0)),
    ((1, 130, 5, 7), 8, (3, 3), (1, 1), (2, 2)),
]


def expected_paths(case, dtype):
    """(forward, weight gradient, input gradient by the filter kernel?) by the documented
    rules, written out independently of functional's code."""
    (_, c, _, _), _, (fh, fw), stride, (ph, pw) = case
    weight_grad = FILTERS if c * fh * fw <= F.DIRECT_WEIGHT_GRAD_MAX_Q[FILTERS] else GEMM
    dx_filters = stride == (1, 1) and ph < fh and pw < fw and c >= vector_length(dtype) // 2
    return FILTERS, weight_grad, dx_filters


def actual_paths(case, dtype):
    """What functional picks for the case."""
    w = weight_of(case, dtype)
    stride, padding = case[3:]
    ow = out_size(case)[1]
    return (F._conv_method(w, stride, ow), F._weight_grad_method(w, stride, ow),
            F._input_grad_packing(w, stride, padding) is not None)


def forward_branches(k, p, dtype):
    """The forward pass's branches for K filters and P pixels: ("four", P % 6) for the 4-vector
    tile's leftover pixels, ("one", P % 8) for filter vectors left over."""
    vl = vector_length(dtype)
    branches = set()
    if k >= 4 * vl:
        branches.add(("four", p % 6))
    if k % (4 * vl):
        branches.add(("one", p % 8))
    return branches


def test_cases_cover_every_branch():
    want = {("four", r) for r in range(6)} | {("one", r) for r in range(8)}
    for dtype in DTYPES:
        branches, dx_branches, dx_paths, weight_grads = set(), set(), set(), set()
        for case in CASES:
            forward, weight_grad, dx_filters = actual_paths(case, dtype)
            assert (forward, weight_grad, dx_filters) == expected_paths(case, dtype), case
            branches |= forward_branches(case[1], out_size(case)[0] * out_size(case)[1], dtype)
            if dx_filters:  # C filters over the H*W input pixels
                (_, c, h, w), *_ = case
                dx_branches |= forward_branches(c, h * w, dtype)
            dx_paths.add(dx_filters)
            weight_grads.add(weight_grad)
        assert want <= branches, (dtype, sorted(want - branches))
        assert want <= dx_branches, (dtype, "input gradient", sorted(want - dx_branches))
        assert dx_paths == {True, False} and weight_grads == {FILTERS, GEMM}
    assert {case[1] for case in CASES} == {8, 9, 16, 17, 33, 63, 64, 70, 128, 130}
    # kernel widths 1-7: the weight gradient's column tiles of 5, 3 and 1 in every mix
    direct_widths = {case[2][1] for case in CASES
                     if actual_paths(case, np.float32)[1] == FILTERS}
    assert direct_widths >= set(range(1, 8))
    assert {case[0][1] for case in CASES} >= {1, 3, 8, 9, 16}
    assert {case[0][0] for case in CASES} >= {0, 1, 3, 9}
    assert {case[3] for case in CASES} >= {(1, 1), (2, 2), (3, 3), (1, 2)}
    # padding as large as the kernel on both axes, and on one only (input gradient by GEMM)
    too_large = [sum(p >= f for p, f in zip(case[4], case[2], strict=True)) for case in CASES]
    assert 1 in too_large and 2 in too_large


def integer_case(rng, case, dtype, with_bias):
    """x, w, b (or None) and an output gradient of a case, small integers."""
    shape, k, kernel, _, _ = case
    x = small_ints(rng, shape, dtype)
    w = small_ints(rng, (k, shape[1], *kernel), dtype)
    b = small_ints(rng, (k,), dtype) if with_bias else None
    grad_out = small_ints(rng, (shape[0], k, *out_size(case)), dtype)
    return x, w, b, grad_out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_filter_paths_equal_reference_exactly(case, dtype):
    assert actual_paths(case, dtype) == expected_paths(case, dtype)
    check_conv_matches_reference(case, dtype, with_bias=True)


# ----------------------------------------------------------------------- the GEMM path


def random_case(rng, case, dtype):
    """x, w, b and an output gradient of a case, random normal."""
    shape, k, kernel, _, _ = case
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((k, shape[1], *kernel)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    grad_out = rng.standard_normal((shape[0], k, *out_size(case))).astype(dtype)
    return x, w, b, grad_out


def conv_and_gradients(x, w, b, stride, padding, grad_out):
    """conv2d's output and every gradient, on whichever paths the selection picks now."""
    return (F.conv2d(x, w, b, stride, padding),
            *F.conv2d_backward(grad_out, x, w, stride, padding))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_filter_paths_match_gemm_path(monkeypatch, case, dtype):
    """Equal to rounding: the two paths add the same products in different orders."""
    stride, padding = case[3:]
    x, w, b, grad_out = random_case(np.random.default_rng(case[1]), case, dtype)
    direct = conv_and_gradients(x, w, b, stride, padding, grad_out)
    with monkeypatch.context() as patch:
        patch.setattr(F, "_conv_method", lambda *args: GEMM)
        patch.setattr(F, "_weight_grad_method", lambda *args: GEMM)
        patch.setattr(F, "_input_grad_packing", lambda *args: None)
        gemm = conv_and_gradients(x, w, b, stride, padding, grad_out)
    rtol = 1e-4 if dtype == np.float32 else 1e-11
    for got, want in zip(direct, gemm, strict=True):
        assert got.dtype == dtype and got.shape == want.shape
        # relative to the array's scale too: a value that cancels to near 0 keeps the
        # absolute rounding error of its large terms
        assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.abs(want).max(initial=1)))


# ------------------------------------------------------------------- non-finite values

# C = 9 input channels: the input gradient by the filter kernel, its lanes past C unused;
# K = 17 filters: a second filter vector with 15 (float32) or 7 (float64) lanes past K.
NON_FINITE_CASE = ((3, 9, 6, 7), 17, (3, 3), (1, 1), (1, 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["input", "grad_output"])
@pytest.mark.parametrize("values", [(np.inf,), (-np.inf,), (np.nan,), (np.inf, -np.inf)],
                         ids=["inf", "-inf", "nan", "inf-inf"])
def test_non_finite_values_follow_the_reference(dtype, where, values):
    """inf and NaN end where the reference puts them: 0 * inf (a zero weight or padding
    times an infinite input) is NaN, inf - inf is NaN; nothing leaks from padded lanes."""
    case = NON_FINITE_CASE
    assert actual_paths(case, dtype) == (FILTERS, FILTERS, True)
    stride, padding = case[3:]
    x, w, b, grad_out = integer_case(np.random.default_rng(4), case, dtype, with_bias=True)
    target = x if where == "input" else grad_out
    # an interior cell and one at the image's corner (next to the padding) of two images;
    # with two values, +inf and -inf meet in the same sums
    cells = [(0, 2, 3, 3), (2, 8, 0, 0), (0, 5, 2, 4), (2, 0, 5, 6)]
    for i, cell in enumerate(cells):
        target[cell] = values[i % len(values)]
    with np.errstate(invalid="ignore"):  # the reference's own inf - inf and 0 * inf
        want_out = ref.conv2d(x, w, b, stride, padding)
        want = ref.conv2d_backward(grad_out, x, w, stride, padding)
    got = conv_and_gradients(x, w, b, stride, padding, grad_out)
    for g, e in zip(got, (want_out, *want), strict=True):
        assert_array_equal(g, e)  # NaN where NaN, +-inf where +-inf, finite values exact
    # the values reached what depends on them: the output and grad_w from the input;
    # grad_x, grad_w and grad_b from the output gradient
    reached = [not np.isfinite(g).all() for g in got]
    assert reached == ([True, False, True, False] if where == "input" else
                       [False, True, True, True])


# ------------------------------------------------------------------------------ threads


@pytest.mark.parametrize("dtype", DTYPES)
def test_filter_paths_same_bits_on_1_2_3_threads(dtype):
    """N = 37: uneven shares of images and of the 8-image chunks the gradients sum over."""
    case = ((37, 9, 7, 6), 70, (3, 3), (1, 1), (1, 1))
    assert actual_paths(case, dtype) == (FILTERS, FILTERS, True)
    stride, padding = case[3:]
    x, w, b, grad_out = random_case(np.random.default_rng(37), case, dtype)
    results = []
    for n in (1, 2, 3):
        with fastcnn.threads(n):
            results.append(conv_and_gradients(x, w, b, stride, padding, grad_out))
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            assert_array_equal(got, want)


# ---------------------------------------------------------------------------- fused op


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))],
                         ids=case_id)
def test_fused_op_on_the_filter_paths(dtype, pool):
    """conv2d_relu_max_pool2d and its backward equal conv2d, relu and max_pool2d, bit for
    bit, with the forward pass, weight gradient and input gradient all on the filter kernel."""
    case = ((9, 9, 10, 9), 17, (3, 3), (1, 1), (1, 1))
    assert actual_paths(case, dtype) == (FILTERS, FILTERS, True)
    conv = case[3:]
    x, w, b, _ = random_case(np.random.default_rng(9), case, dtype)
    pooled_shape = F.max_pool2d(F.conv2d(x, w, b, *conv), *pool).shape
    grad = np.random.default_rng(10).standard_normal(pooled_shape).astype(dtype)
    assert_fused_matches_unfused(x, w, b, conv, pool, grad)


# ------------------------------------------------------------------------------- torch


@pytest.mark.parametrize("case", [((2, 16, 16, 16), 64, (3, 3), (1, 1), (1, 1)),
                                  ((2, 16, 16, 16), 70, (3, 3), (2, 2), (1, 1))],
                         ids=case_id)
def test_vgg_like_layers_match_torch(case):
    torch = pytest.importorskip("torch")
    stride, padding = case[3:]
    assert actual_paths(case, np.float32)[0] == FILTERS
    x, w, b, g = random_case(np.random.default_rng(16), case, np.float32)
    w *= 0.1
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
    t_out.backward(torch.tensor(g))
    got = conv_and_gradients(x, w, b, stride, padding, g)
    for mine, theirs in zip(got, (t_out, tx.grad, tw.grad, tb.grad), strict=True):
        theirs = theirs.detach().numpy()
        scale = float(np.abs(theirs).max())
        assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5 * scale)
