"""The direct (im2col-free) convolution kernels of csrc/direct_conv.h against the reference,
the im2col + GEMM path, PyTorch and themselves on 1-3 threads.

``functional._conv_method`` picks, per layer: the row kernel (stride 1, output rows of at
least one 64-byte vector VL: 16 float32 or 8 float64 values, fewer than VL/2 filters), the
filter kernel (at least VL/2 filters, any stride), or im2col + GEMM. The row kernel's weight
gradient falls back to GEMM when C*kH*kW > DIRECT_WEIGHT_GRAD_MAX_Q
(``functional._weight_grad_method``). A row whose width is not a multiple of VL ends with a
block that overlaps the one before it, so the widths here are a multiple of VL, one past it
and a few short of it, in both dtypes.

Checked: the reference bit for bit on small integers; the im2col + GEMM path (forced by
patching the selection) to rounding on random normal data; +-inf and NaN in the overlapping
columns; 1-3 threads; save_columns; nn.Conv2d; the fused op; PyTorch.
"""

import itertools

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
from fastcnn import nn

DTYPES = [np.float32, np.float64]
ROWS, FILTERS, GEMM = F._ROWS, F._FILTERS, F._GEMM


def methods(weight, stride, out_w):
    """(forward, weight gradient) methods functional picks for this layer."""
    stride = (stride, stride) if isinstance(stride, int) else stride
    return (F._conv_method(weight, stride, out_w),
            F._weight_grad_method(weight, stride, out_w))


S1 = (1, 1)

# (N, C, H, W), K, (FH, FW), stride, padding. Stride 1 and OW in {16, 17, 28, 31, 32, 33}:
# the row kernel where K < VL/2 (K <= 3 takes it in both dtypes, K 4-6 in float32 only),
# the filter kernel otherwise (K = 9 in both). Together, on the row kernel: K 1-6 (its
# blocks of 4 filters with every remainder); C 1-3; kernel widths 1-7 (the weight
# gradient's tiles of 5, 3 and 1 columns); non-square kernels; padding 0-3, often ph != pw;
# N in {0, 1, 3, 9} (9: two gradient chunks); C*FH*FW on both sides of
# DIRECT_WEIGHT_GRAD_MAX_Q. test_cases_cover_the_grid checks this, per dtype.
ROW_CASES = [
    ((1, 1, 3, 16), 1, (1, 1), S1, (0, 0)),  # OW 16, Q 1
    ((3, 2, 5, 17), 3, (3, 3), S1, (1, 1)),  # OW 17, Q 18
    ((9, 1, 6, 28), 6, (5, 5), S1, (2, 2)),  # OW 28, Q 25: LeNet conv1's geometry
    ((3, 1, 5, 28), 3, (5, 5), S1, (2, 2)),  # OW 28, Q 25
    ((3, 3, 4, 27), 2, (2, 4), S1, (0, 2)),  # OW 28, Q 24
    ((0, 2, 4, 30), 3, (3, 3), S1, (1, 0)),  # OW 28, no images
    ((1, 2, 5, 31), 3, (3, 7), S1, (1, 3)),  # OW 31, Q 42: GEMM weight gradient
    ((3, 1, 6, 30), 5, (4, 6), S1, (2, 3)),  # OW 31, Q 24
    ((9, 2, 4, 32), 1, (2, 6), S1, (1, 2)),  # OW 31, Q 24
    ((1, 3, 4, 31), 1, (4, 7), S1, (3, 3)),  # OW 31, Q 84: GEMM weight gradient
    ((3, 3, 5, 32), 9, (3, 3), S1, (1, 1)),  # OW 32, Q 27
    ((3, 1, 4, 32), 3, (3, 7), S1, (0, 3)),  # OW 32, Q 21: tiles 5 + 1 + 1
    ((1, 1, 7, 34), 2, (6, 6), S1, (3, 2)),  # OW 33, Q 36: GEMM weight gradient
    ((9, 2, 3, 33), 4, (1, 1), S1, (0, 0)),  # OW 33, Q 2
    ((3, 1, 3, 34), 2, (3, 2), S1, (1, 0)),  # OW 33, Q 6
    ((1, 3, 4, 16), 6, (2, 5), S1, (3, 2)),  # OW 16, Q 30
    ((3, 2, 5, 14), 1, (5, 3), S1, (0, 2)),  # OW 16, Q 30
    ((9, 3, 3, 16), 5, (1, 2), S1, (1, 1)),  # OW 17, Q 6
]

# The filter kernel: K >= 8 float32 / >= 4 float64, K past a whole vector (9, 17, 20) and
# past four (64, 70); any stride; output pixels in tiles that run across row ends, with
# pixels left over (OH*OW = 105, 45, 16, 3, ...); its weight gradient, and GEMM's for
# C*kH*kW above its limit (Q 270); C of half a vector and more (8, 9, 17, 30), at stride 1
# with padding below the kernel size and at or above it.
FILTER_CASES = [
    ((3, 2, 7, 17), 8, (3, 3), (1, 1), (1, 0)),  # OW 15
    ((1, 1, 9, 9), 9, (3, 2), (2, 1), (1, 1)),  # OW 10
    ((9, 3, 8, 13), 16, (2, 3), (1, 2), (0, 2)),  # OW 8
    ((3, 2, 9, 20), 17, (5, 5), (2, 2), (2, 2)),  # OW 10
    ((0, 2, 6, 7), 20, (3, 3), (1, 1), (1, 1)),  # no images
    ((3, 4, 10, 11), 20, (1, 7), (3, 3), (0, 3)),  # OW 4, Q 28
    ((1, 1, 5, 3), 12, (2, 1), (1, 1), (0, 0)),  # OW 3
    ((3, 8, 6, 11), 8, (3, 3), (1, 1), (1, 2)),  # C 8, Q 72
    ((9, 9, 5, 7), 16, (2, 3), (1, 1), (0, 1)),  # C 9, Q 54
    ((1, 17, 4, 5), 10, (3, 1), (1, 1), (2, 0)),  # C 17, Q 51
    ((3, 8, 4, 5), 9, (2, 2), (1, 1), (2, 1)),  # padding >= kernel height
    ((1, 30, 4, 6), 8, (3, 3), (1, 1), (1, 1)),  # Q 270: GEMM weight gradient
    ((2, 3, 9, 9), 70, (3, 3), (2, 1), (1, 1)),  # 4 vectors of filters and 6 more, P 45
    ((1, 2, 5, 5), 64, (2, 2), (1, 1), (0, 0)),  # P 16
]

DIRECT_CASES = ROW_CASES + FILTER_CASES


def test_cases_cover_the_grid():
    """The case lists keep covering what their comments promise, on the paths they name."""
    for dtype in DTYPES:
        rows = [case for case in ROW_CASES
                if methods(weight_of(case, dtype), S1, out_size(case)[1])[0] == ROWS]
        assert {out_size(case)[1] for case in rows} == {16, 17, 28, 31, 32, 33}
        assert {case[2][1] for case in rows} == set(range(1, 8))
        assert {case[0][0] for case in rows} == {0, 1, 3, 9}
        assert set(itertools.chain.from_iterable(case[4] for case in rows)) == {0, 1, 2, 3}
        grad_methods = {methods(weight_of(case, dtype), S1, out_size(case)[1])[1]
                        for case in rows}
        assert grad_methods == {ROWS, GEMM}
        filters = [methods(weight_of(case, dtype), case[3], out_size(case)[1])
                   for case in FILTER_CASES]
        assert {forward for forward, _ in filters} == {FILTERS}
        assert {weight_grad for _, weight_grad in filters} == {FILTERS, GEMM}
    float32_rows = {case[1] for case in ROW_CASES
                    if methods(weight_of(case, np.float32), S1, out_size(case)[1])[0] == ROWS}
    assert float32_rows == {1, 2, 3, 4, 5, 6}


def test_selection_thresholds():
    """The row kernel needs stride 1, a whole vector per output row and fewer than half a
    vector of filters; the filter kernel takes more filters; each kernel's weight gradient
    stops at its own C*kH*kW."""
    few, many = np.zeros((7, 1, 3, 3), np.float32), np.zeros((8, 1, 3, 3), np.float32)
    assert methods(few, 1, 16)[0] == ROWS and methods(few, 1, 15)[0] == GEMM
    assert methods(few, (1, 2), 64)[0] == GEMM
    assert methods(many, 1, 64)[0] == FILTERS and methods(many, (2, 3), 1)[0] == FILTERS
    few, many = np.zeros((3, 1, 3, 3), np.float64), np.zeros((4, 1, 3, 3), np.float64)
    assert methods(few, 1, 8)[0] == ROWS and methods(few, 1, 7)[0] == GEMM
    assert methods(many, 1, 8)[0] == FILTERS
    assert F.DIRECT_WEIGHT_GRAD_MAX_Q == {ROWS: 32, FILTERS: 256}
    small, large = np.zeros((4, 2, 4, 4), np.float32), np.zeros((4, 3, 3, 4), np.float32)
    assert methods(small, 1, 16) == (ROWS, ROWS)  # Q = 32
    assert methods(large, 1, 16) == (ROWS, GEMM)  # Q = 36
    small, large = np.zeros((8, 16, 4, 4), np.float32), np.zeros((8, 17, 4, 4), np.float32)
    assert methods(small, 1, 3) == (FILTERS, FILTERS)  # Q = 256
    assert methods(large, 1, 3) == (FILTERS, GEMM)  # Q = 272


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DIRECT_CASES, ids=case_id)
@pytest.mark.parametrize("with_bias", [True, False])
def test_direct_paths_equal_reference_exactly(case, dtype, with_bias):
    assert methods(weight_of(case, dtype), case[3], out_size(case)[1])[0] != GEMM
    columns = check_conv_matches_reference(case, dtype, with_bias)
    assert columns is None  # a direct kernel builds no column matrices to keep


# ------------------------------------------------------------- direct against im2col + GEMM


def conv_and_gradients(x, w, b, stride, padding, grad_out):
    """conv2d's output and every gradient, on whichever paths the selection picks now."""
    return (F.conv2d(x, w, b, stride, padding),
            *F.conv2d_backward(grad_out, x, w, stride, padding))


def on_gemm_path(monkeypatch, run, forward_too=True):
    """run() with the weight gradient (and, by default, the forward pass and the input
    gradient) forced onto im2col + GEMM (and col2im)."""
    with monkeypatch.context() as patch:
        patch.setattr(F, "_weight_grad_method", lambda *args: GEMM)
        if forward_too:
            patch.setattr(F, "_conv_method", lambda *args: GEMM)
            patch.setattr(F, "_input_grad_packing", lambda *args: None)
        return run()


def assert_close_to_gemm(got, want, dtype):
    """Equal to rounding: the two paths add the same products in different orders."""
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for g, e in zip(got, want, strict=True):
        assert g.dtype == dtype and g.shape == e.shape
        # relative to the array's scale, too: an element that cancels to near 0 keeps the
        # absolute rounding error of its large terms
        assert_allclose(g, e, rtol=rtol, atol=rtol * float(np.abs(e).max(initial=1)))


def random_case(rng, case, dtype):
    """x, w, b and an output gradient of a case, random normal."""
    shape, k, kernel, _, _ = case
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((k, shape[1], *kernel)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    grad_out = rng.standard_normal((shape[0], k, *out_size(case))).astype(dtype)
    return x, w, b, grad_out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DIRECT_CASES, ids=case_id)
def test_direct_paths_match_gemm_path(monkeypatch, case, dtype):
    stride, padding = case[3:]
    x, w, b, grad_out = random_case(np.random.default_rng(case[1] + 100 * case[0][0]), case,
                                    dtype)
    forward, weight_grad = methods(w, stride, out_size(case)[1])
    assert forward != GEMM

    def run():
        return conv_and_gradients(x, w, b, stride, padding, grad_out)

    direct = run()
    gemm = on_gemm_path(monkeypatch, run)
    assert_close_to_gemm(direct, gemm, dtype)
    if weight_grad != GEMM:
        # a direct forward pass with a GEMM weight gradient, as for C*kH*kW > 32
        mixed = on_gemm_path(monkeypatch, run, forward_too=False)
        assert_array_equal(mixed[0], direct[0])
        assert_close_to_gemm(mixed, gemm, dtype)


# ---------------------------------------------------------------------- non-finite values


def overlap_columns(out_w, dtype):
    """Output columns that a row's overlapping last block covers a second time."""
    vl = vector_length(dtype)
    return range(out_w - vl, out_w - out_w % vl)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, c, method", [(3, 2, ROWS), (9, 2, FILTERS), (9, 9, FILTERS)])
@pytest.mark.parametrize("where", ["input", "grad_output"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
def test_non_finite_in_overlapping_columns(monkeypatch, dtype, k, c, method, where, value):
    """The row kernel's last block must add nothing for its already-counted lanes, not
    0 * inf = NaN; the filter kernel's lanes past K (or past C) must not leak either.

    Operands are positive and there is no padding, so a single inf gives +-inf (never NaN)
    in the reference wherever it reaches: a NaN there would be the kernel's."""
    n, h, width, kernel = 3, 6, 30, (3, 3)  # OW 28
    rng = np.random.default_rng(9)
    x = small_ints(rng, (n, c, h, width), dtype, 1, 5)
    w = small_ints(rng, (k, c, *kernel), dtype, 1, 5)
    oh, ow = h - kernel[0] + 1, width - kernel[1] + 1
    assert methods(w, 1, ow) == (method, method)
    grad_out = small_ints(rng, (n, k, oh, ow), dtype, 1, 5)
    twice = overlap_columns(ow, dtype)
    assert len(twice) == 4  # 28 = 16 + 12 floats, 3 * 8 + 4 doubles
    if where == "input":
        x[1, 1, 2, twice[2]] = value  # seen by output columns twice[0..2], all revisited
    else:
        grad_out[2, k - 1, 1, twice[2]] = value
    want = (ref.conv2d(x, w, None, S1, (0, 0)),
            *ref.conv2d_backward(grad_out, x, w, S1, (0, 0)))

    def run():
        return conv_and_gradients(x, w, None, 1, 0, grad_out)

    grad_w = want[2]
    assert (np.isnan(grad_w) if np.isnan(value) else np.isinf(grad_w)).any()
    assert np.isnan(value) or not np.isnan(grad_w).any()
    for got, expected, gemm in zip(run(), want, on_gemm_path(monkeypatch, run), strict=True):
        assert_array_equal(got, expected)  # NaN where NaN, same-signed inf where inf
        assert_array_equal(got, gemm)


# ------------------------------------------------------------------------------- threads

THREAD_CASES = [
    ((37, 1, 12, 28), 3, (5, 5), S1, (2, 2)),  # row kernel, its weight gradient
    ((37, 2, 5, 31), 5, (3, 7), S1, (1, 3)),  # float32: rows, GEMM weight gradient
    ((37, 3, 9, 12), 10, (3, 3), (2, 1), (1, 1)),  # filter kernel
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", THREAD_CASES, ids=case_id)
def test_direct_paths_same_bits_on_1_2_3_threads(case, dtype):
    stride, padding = case[3:]
    x, w, b, grad_out = random_case(np.random.default_rng(37), case, dtype)
    assert methods(w, stride, out_size(case)[1])[0] != GEMM
    results = []
    for n_threads in (1, 2, 3):
        with fastcnn.threads(n_threads):
            results.append(conv_and_gradients(x, w, b, stride, padding, grad_out))
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            assert_array_equal(got, want)


# ----------------------------------------------------------- save_columns, nn and fusion


def test_conv2d_layer_trains_on_the_row_kernel():
    """Conv2d(1, 6, 5, padding=2) on 28x28 (LeNet conv1): forward keeps no columns, and
    backward needs none, giving the reference's gradients exactly."""
    rng = np.random.default_rng(28)
    layer = nn.Conv2d(1, 6, 5, padding=2)
    assert layer.training
    layer.weight.data[...] = small_ints(rng, layer.weight.shape, np.float32)
    layer.bias.data[...] = small_ints(rng, layer.bias.shape, np.float32)
    x = small_ints(rng, (5, 1, 28, 28), np.float32)
    assert methods(layer.weight.data, 1, 28) == (ROWS, ROWS)
    out = layer(x)
    assert_array_equal(out, ref.conv2d(x, layer.weight.data, layer.bias.data, S1, (2, 2)))
    grad_out = small_ints(rng, out.shape, np.float32)
    grad_x = layer.backward(grad_out)
    want_x, want_w, want_b = ref.conv2d_backward(grad_out, x, layer.weight.data, S1, (2, 2))
    assert_array_equal(grad_x, want_x)
    assert_array_equal(layer.weight.grad, want_w)
    assert_array_equal(layer.bias.grad, want_b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, method", [(3, ROWS), (9, FILTERS)])
def test_fused_conv_relu_pool_on_the_direct_paths(dtype, k, method):
    """conv2d_relu_max_pool2d keeps no columns either (its third result is None), and equals
    conv2d -> relu -> max_pool2d bit for bit there, with and without them."""
    rng = np.random.default_rng(3)
    case = ((9, 2, 8, 30), k, (3, 3), S1, (0, 0))  # OW 28
    x, w, b, _ = random_case(rng, case, dtype)
    conv, pool = case[3:], ((2, 2), (2, 2), (0, 0))
    assert methods(w, 1, 28) == (method, method)
    assert F.conv2d_relu_max_pool2d(x, w, b, *conv, *pool, save_columns=True)[2] is None
    grad = rng.standard_normal((9, k, 3, 14)).astype(dtype)
    assert_fused_matches_unfused(x, w, b, conv, pool, grad)


# --------------------------------------------------------------------------------- torch


@pytest.mark.parametrize("case", [((8, 1, 28, 28), 6, (5, 5), S1, (2, 2)),  # LeNet conv1
                                  ((2, 16, 32, 32), 16, (3, 3), S1, (1, 1))],  # VGG-like
                         ids=case_id)
def test_direct_paths_match_torch(case):
    torch = pytest.importorskip("torch")
    _, _, _, stride, padding = case
    rng = np.random.default_rng(8)
    x, w, b, g = random_case(rng, case, np.float32)
    w *= 0.2
    assert methods(w, stride, out_size(case)[1])[0] != GEMM
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
    out = F.conv2d(x, w, b, stride, padding)
    assert_allclose(out, t_out.detach().numpy(), rtol=1e-4, atol=1e-5)
    t_out.backward(torch.tensor(g))
    for mine, theirs in zip(F.conv2d_backward(g, x, w, stride, padding),
                            (tx.grad, tw.grad, tb.grad), strict=True):
        scale = float(theirs.abs().max())
        assert_allclose(mine, theirs.numpy(), rtol=1e-4, atol=1e-5 * scale)
