"""The direct (im2col-free) convolution kernels of csrc/direct_conv.h against the reference,
the im2col + GEMM path, PyTorch and themselves on 1-3 threads, on every ISA copy of the
kernels this CPU runs (the ``kernel_copy`` fixture, tests/conftest.py).

``_conv_plan.choose_methods`` picks, per layer and per copy (``_conv_plan.METHOD_LIMITS``, VL
the copy's values per vector: fastcnn._isa.vector_length): the row kernel (stride 1,
output rows of at least VL pixels, fewer than ``row_max_filters`` filters), the filter
kernel (at least VL/2 filters, any stride), or im2col + GEMM. The row kernel's weight
gradient falls back to GEMM when C*kH*kW > ``row_grad_max_q``
(the plan's ``weight_grad`` method). The row kernel's forward pass runs rows in tiles of
two vectors (one where a row holds fewer than two), its weight gradient in blocks of one;
a row whose width is not a multiple of the tile ends with a tile that overlaps the one
before it, so the row widths here take every remainder modulo the VL of every copy (2 to
16), and both tile kinds with every kind of overlap, in both dtypes.

Checked: the reference bit for bit on small integers; the im2col + GEMM path (forced by
patching the selection) to rounding on random normal data; +-inf and NaN in the overlapping
columns; 1-3 threads; save_columns; nn.Conv2d; the fused op; PyTorch.
"""

import itertools

import numpy as np
import pytest
from kernel_copies import (
    ALL_GEOMETRIES,
    ROW_FILTERS,
    all_row_forward_tiles,
    chosen_methods,
    conv_and_gradients,
    every_copy,
    gemm_methods,
    row_forward_tiles,
    row_grad_tiles,
    selecting_as,
)
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
from fastcnn._conv_plan import FILTER, GEMM, ROW, blocked

DTYPES = [np.float32, np.float64]


def methods(weight, stride, out_w):
    """(forward, weight gradient) methods the plan picks for this layer."""
    return tuple(chosen_methods(weight, stride, out_w)[:2])


S1 = (1, 1)

# (N, C, H, W), K, (FH, FW), stride, padding. Stride 1 and OW 16-33: every remainder modulo
# 16, 8, 4 and 2 (the VLs of the copies), both with the row kernel's weight gradient and
# (C*FH*FW > row_grad_max_q = 32) with GEMM's; with OW 2-12, 32, 48 and 55, the forward
# pass's one-vector tiles (rows of VL to 2*VL - 1 pixels, exactly VL and more) and its
# two-vector tiles with the last one moved back by nothing, less than a vector, one vector
# and more, on every copy (row_forward_tiles). On the row kernel: K 1-7 (its blocks of 4
# filters with every remainder); C 1-3; kernel widths 1-7 (the weight gradient's column
# tiles: 5, 3 and 1 on AVX-512, 2 and 1 on AVX2, in every mix); non-square kernels; padding
# 0-3, often ph != pw; N in {0, 1, 3, 9} (9: two gradient chunks). K = 9 at OW 32 takes the
# filter kernel. test_cases_cover_the_grid checks this, per copy and dtype.
ROW_CASES = [
    ((1, 1, 3, 16), 1, (1, 1), S1, (0, 0)),  # OW 16, Q 1
    ((3, 2, 5, 17), 3, (3, 3), S1, (1, 1)),  # OW 17, Q 18
    ((3, 3, 4, 19), 2, (2, 4), S1, (0, 1)),  # OW 18, Q 24
    ((0, 2, 4, 21), 3, (3, 3), S1, (1, 0)),  # OW 19, no images
    ((3, 1, 6, 19), 5, (4, 6), S1, (2, 3)),  # OW 20, Q 24
    ((9, 2, 4, 22), 1, (2, 6), S1, (1, 2)),  # OW 21, Q 24
    ((3, 1, 4, 22), 3, (3, 7), S1, (0, 3)),  # OW 22, Q 21: tiles 5 + 1 + 1, 2 + 2 + 2 + 1
    ((9, 2, 3, 23), 4, (1, 1), S1, (0, 0)),  # OW 23, Q 2
    ((3, 1, 3, 25), 2, (3, 2), S1, (1, 0)),  # OW 24, Q 6
    ((1, 3, 4, 25), 6, (2, 5), S1, (3, 2)),  # OW 25, Q 30
    ((3, 2, 5, 24), 1, (5, 3), S1, (0, 2)),  # OW 26, Q 30
    ((9, 3, 3, 26), 5, (1, 2), S1, (1, 1)),  # OW 27, Q 6
    ((9, 1, 6, 28), 6, (5, 5), S1, (2, 2)),  # OW 28, Q 25: LeNet conv1's geometry
    ((3, 1, 5, 29), 7, (5, 5), S1, (2, 2)),  # OW 29, Q 25
    ((1, 2, 4, 31), 2, (2, 2), S1, (1, 0)),  # OW 30, Q 8
    ((3, 3, 3, 31), 7, (1, 3), S1, (0, 1)),  # OW 31, Q 9
    ((1, 2, 5, 31), 3, (3, 7), S1, (1, 3)),  # OW 31, Q 42: GEMM weight gradient
    ((1, 3, 4, 31), 1, (4, 7), S1, (3, 3)),  # OW 31, Q 84: GEMM weight gradient
    ((3, 3, 5, 32), 9, (3, 3), S1, (1, 1)),  # OW 32, Q 27: the filter kernel
    ((1, 1, 7, 34), 2, (6, 6), S1, (3, 2)),  # OW 33, Q 36: GEMM weight gradient
    # rows of one vector and more but fewer than two, on the copies with VL 2, 4 and 8
    # (GEMM where VL is wider), and of two-vector tiles on AVX-512 (VL 16: 32, 48, 55)
    ((3, 1, 4, 4), 2, (3, 3), S1, (0, 0)),  # OW 2, Q 9
    ((1, 2, 3, 5), 5, (2, 3), S1, (0, 0)),  # OW 3, Q 12
    ((9, 1, 5, 4), 3, (3, 3), S1, (1, 1)),  # OW 4, Q 9
    ((3, 2, 4, 6), 1, (2, 1), S1, (0, 0)),  # OW 6, Q 4
    ((1, 3, 3, 10), 4, (1, 3), S1, (0, 0)),  # OW 8, Q 9
    ((3, 1, 5, 12), 7, (3, 5), S1, (1, 2)),  # OW 12, Q 15
    ((1, 2, 3, 32), 3, (3, 3), S1, (1, 1)),  # OW 32, Q 18
    ((3, 1, 3, 50), 2, (1, 3), S1, (0, 0)),  # OW 48, Q 3
    ((1, 1, 4, 54), 6, (2, 2), S1, (1, 1)),  # OW 55, Q 4
]

# The filter kernel: K of 8 and more (at least VL/2 and row_max_filters on every copy), K
# past a whole vector (9, 17, 20) and past four (64, 70); any stride; output pixels in tiles
# that run across row ends, with pixels left over (OH*OW = 105, 45, 16, 3, ...); its weight
# gradient, and GEMM's for C*kH*kW above its limit where the copy has one (Q 270 >
# AVX-512's 256); C of half a vector and more (8, 9, 17, 30), at stride 1 with padding below
# the kernel size and at or above it (test_filter_conv.py covers every branch).
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
    ((1, 30, 4, 6), 8, (3, 3), (1, 1), (1, 1)),  # Q 270: GEMM weight gradient on AVX-512
    ((2, 3, 9, 9), 70, (3, 3), (2, 1), (1, 1)),  # 4 vectors of filters and 6 more, P 45
    ((1, 2, 5, 5), 64, (2, 2), (1, 1), (0, 0)),  # P 16
]

DIRECT_CASES = ROW_CASES + FILTER_CASES


def expected_weight_grads(max_q):
    """The weight-gradient methods a direct kernel's cases must reach: its own and (past
    max_q, where the copy has a limit) GEMM's."""
    return {ROW, GEMM} if max_q is not None else {ROW}


@pytest.mark.parametrize("copy", ALL_GEOMETRIES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cases_cover_the_grid(copy, dtype):
    """The case lists keep covering what their comments promise, on the paths they name, on
    every copy's geometry (whether or not this CPU runs it)."""
    vl, limits = copy.vl(dtype), copy.limits
    with selecting_as(copy):
        paths = {
            case: methods(weight_of(case, dtype), case[3], out_size(case)[1])
            for case in DIRECT_CASES
        }
    rows = [case for case in ROW_CASES if paths[case][0] == ROW]
    row_grads = [case for case in rows if paths[case][1] == ROW]
    # never GEMM, but for rows narrower than a vector (with too few filters for the filter
    # kernel): the narrow row cases on copies with longer vectors
    assert {forward for case, (forward, _) in paths.items() if out_size(case)[1] >= vl} <= {
        ROW,
        FILTER,
    }
    # every remainder of the row width after whole vectors: the overlapping last block
    # with each overlap, in the forward pass and in the weight gradient (its mask)
    assert {out_size(case)[1] % vl for case in rows} == set(range(vl))
    assert {out_size(case)[1] % vl for case in row_grads} == set(range(vl))
    # the forward pass's one- and two-vector tiles, each with its last tile moved back
    assert {row_forward_tiles(out_size(case)[1], copy, dtype) for case in rows} == (
        all_row_forward_tiles()
    )
    # filters in blocks of 4 with every remainder the row kernel takes, and two blocks
    ks = {case[1] for case in rows}
    assert {k % ROW_FILTERS for k in ks} == {
        k % ROW_FILTERS for k in range(1, limits.row_max_filters)
    }
    assert max(ks) > ROW_FILTERS or limits.row_max_filters <= ROW_FILTERS + 1
    # the weight gradient's column tiles, each width (and 1-7 columns, every mix)
    assert {tile for case in row_grads for tile in row_grad_tiles(case[2][1], copy)} == (
        {copy.grad_cols, 1} | ({3} if copy.grad_cols > 3 else set())
    )
    assert {case[2][1] for case in row_grads} == set(range(1, 8))
    assert {case[0][1] for case in rows} == {1, 2, 3}
    assert {case[0][0] for case in rows} == {0, 1, 3, 9}
    assert set(itertools.chain.from_iterable(case[4] for case in rows)) == {0, 1, 2, 3}
    assert any(fh != fw for _, _, (fh, fw), _, _ in rows)
    assert {paths[case][1] for case in rows} == expected_weight_grads(limits.row_grad_max_q)
    filters = [paths[case] for case in FILTER_CASES]
    assert {forward for forward, _ in filters} == {FILTER}
    assert {weight_grad for _, weight_grad in filters} == (
        {FILTER, GEMM} if limits.filter_grad_max_q is not None else {FILTER}
    )


@pytest.mark.parametrize("copy", ALL_GEOMETRIES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_selection_thresholds(copy, dtype):
    """The row kernel needs stride 1, a whole vector per output row and fewer than
    row_max_filters filters; the filter kernel takes from VL/2 filters; each kernel's weight
    gradient stops at its own C*kH*kW; the input gradient takes the filter kernel from
    input_grad_min_channels channels up to input_grad_max_pixels input pixels, and a 1x1
    kernel's below pointwise_input_grad_max_channels channels; a 1x1 kernel's forward and
    weight gradient are GEMM's with pointwise_by_gemm where the filter kernel's would be."""
    vl, gw, limits = copy.vl(dtype), copy.gw(dtype), copy.limits
    half, most = vl // 2, limits.row_max_filters - 1  # the filter kernel's least K, rows' most
    not_rows = FILTER if most + 1 >= half else GEMM  # for row_max_filters filters

    def zeros(k, c=1, kernel=(3, 3)):
        return np.zeros((k, c, *kernel), dtype)

    with selecting_as(copy):
        assert methods(zeros(most), 1, vl)[0] == ROW
        assert methods(zeros(most), 1, vl - 1)[0] == (FILTER if most >= half else GEMM)
        assert methods(zeros(most), (1, 2), 64)[0] == (FILTER if most >= half else GEMM)
        assert methods(zeros(most + 1), 1, 64)[0] == not_rows
        assert methods(zeros(half), (2, 3), 1)[0] == FILTER
        if half > 1:
            assert methods(zeros(half - 1), (2, 3), 1) == (GEMM, GEMM)
        # the row kernel's weight gradient: direct up to row_grad_max_q = C*kH*kW
        max_q = limits.row_grad_max_q
        if max_q is not None:
            assert methods(zeros(most, kernel=(1, max_q)), 1, vl) == (ROW, ROW)
            assert methods(zeros(most, kernel=(1, max_q + 1)), 1, vl) == (ROW, GEMM)
        else:
            assert methods(zeros(most, kernel=(1, 4096)), 1, vl) == (ROW, ROW)
        # the filter kernel's, likewise
        k = max(half, most + 1)
        max_q = limits.filter_grad_max_q
        for q, want in (
            [(max_q, FILTER), (max_q + 1, GEMM)] if max_q is not None else [(4096, FILTER)]
        ):
            assert methods(zeros(k, kernel=(1, q)), (2, 2), 1) == (FILTER, want)
        # the input gradient by the filter kernel: stride 1, padding below the kernel size,
        # input_grad_min_channels channels and at most input_grad_max_pixels input pixels;
        # im2col's adjoint otherwise
        min_c, max_pixels = limits.input_grad_min_channels, limits.input_grad_max_pixels
        hw = (max_pixels // 8, 8) if max_pixels is not None else (64, 64)

        def packing(weight, stride, padding, in_hw=hw):
            """The input gradient's packed kernels on this copy, or None for col2im."""
            by = chosen_methods(weight, stride, 1, padding, in_hw).input_grad
            if by != FILTER:
                return None
            k, c, kh, kw = weight.shape
            return blocked(weight.transpose(0, 2, 3, 1).reshape(k * kh * kw, c), gw)

        if min_c is None:
            assert packing(zeros(k, 512), S1, (1, 1)) is None
        else:
            # (K*kH*kW, C) blocked: C padded to a multiple of GW, in blocks of GW columns
            assert packing(zeros(k, min_c), S1, (1, 1)).shape == (-(-min_c // gw) * k * 9, gw)
            assert packing(zeros(k, min_c), (1, 2), (1, 1)) is None
            assert packing(zeros(k, min_c), S1, (3, 1)) is None
            if min_c > 1:
                assert packing(zeros(k, min_c - 1), S1, (1, 1)) is None
            if max_pixels is not None:
                assert packing(zeros(k, min_c), S1, (1, 1), (hw[0], hw[1] + 1)) is None
                assert packing(zeros(k, min_c), S1, (1, 1), (hw[0] + 1, hw[1])) is None
            # a 1x1 kernel's: below pointwise_input_grad_max_channels only
            pointwise_max_c = limits.pointwise_input_grad_max_channels
            if pointwise_max_c is not None:
                assert pointwise_max_c > min_c
                assert packing(zeros(k, pointwise_max_c - 1, (1, 1)), S1, (0, 0)) is not None
                assert packing(zeros(k, pointwise_max_c, (1, 1)), S1, (0, 0)) is None
                assert packing(zeros(k, pointwise_max_c, (1, 3)), S1, (0, 1)) is not None
        # a 1x1 kernel's forward pass and weight gradient by GEMM where pointwise_by_gemm
        # instead of the filter kernel's (from VL/2 filters; not the row kernel's)
        pointwise = (GEMM, GEMM) if limits.pointwise_by_gemm else (FILTER, FILTER)
        for stride in (S1, (2, 2)):
            assert methods(zeros(max(half, most + 1), 64, (1, 1)), stride, 64) == pointwise


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DIRECT_CASES, ids=case_id)
@pytest.mark.parametrize("with_bias", [True, False])
def test_direct_paths_equal_reference_exactly(case, dtype, with_bias):
    forward = methods(weight_of(case, dtype), case[3], out_size(case)[1])[0]
    # GEMM's only for rows narrower than a vector: the narrow row cases on wider copies
    assert forward != GEMM or out_size(case)[1] < vector_length(dtype)
    columns = check_conv_matches_reference(case, dtype, with_bias)
    # a direct kernel builds no column matrices to keep
    assert (columns is None) == (forward != GEMM)


# ------------------------------------------------------------- direct against im2col + GEMM


def on_gemm_path(run, chosen=None):
    """run(methods) on im2col + GEMM (and col2im) throughout; or, given the chosen
    methods, with only the weight gradient moved to GEMM."""
    return run(gemm_methods() if chosen is None else chosen._replace(weight_grad=GEMM))


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


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DIRECT_CASES, ids=case_id)
def test_direct_paths_match_gemm_path(case, dtype):
    stride, padding = case[3:]
    x, w, b, grad_out = random_case(np.random.default_rng(case[1] + 100 * case[0][0]), case, dtype)
    forward, weight_grad = methods(w, stride, out_size(case)[1])
    assert forward != GEMM or out_size(case)[1] < vector_length(dtype)

    def run(methods=None):
        return conv_and_gradients(x, w, b, stride, padding, grad_out, methods)

    direct = run()
    gemm = on_gemm_path(run)
    assert_close_to_gemm(direct, gemm, dtype)
    if weight_grad != GEMM:
        # a direct forward pass with a GEMM weight gradient, as for C*kH*kW > 32
        mixed = on_gemm_path(
            run, chosen_methods(w, stride, out_size(case)[1], padding, x.shape[2:])
        )
        assert_array_equal(mixed[0], direct[0])
        assert_close_to_gemm(mixed, gemm, dtype)


# ---------------------------------------------------------------------- non-finite values


def overlap_columns(out_w, dtype):
    """Output columns that a row's overlapping last block covers a second time."""
    vl = vector_length(dtype)
    return range(out_w - vl, out_w - out_w % vl)


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, c, method", [(3, 2, ROW), (9, 2, FILTER), (9, 9, FILTER)])
@pytest.mark.parametrize("where", ["input", "grad_output"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
def test_non_finite_in_overlapping_columns(dtype, k, c, method, where, value):
    """The row kernel's last block must add nothing for its already-counted lanes, not
    0 * inf = NaN; the filter kernel's lanes past K (or past C) must not leak either.

    OW = 2*VL + 1: the last block overlaps VL - 1 columns, the most it can. Operands are
    positive and there is no padding, so a single inf gives +-inf (never NaN) in the
    reference wherever it reaches: a NaN there would be the kernel's."""
    vl = vector_length(dtype)
    n, h, kernel = 3, 6, (3, 3)
    oh, ow = h - kernel[0] + 1, 2 * vl + 1
    rng = np.random.default_rng(9)
    x = small_ints(rng, (n, c, h, ow + kernel[1] - 1), dtype, 1, 5)
    w = small_ints(rng, (k, c, *kernel), dtype, 1, 5)
    assert methods(w, 1, ow) == (method, method)
    grad_out = small_ints(rng, (n, k, oh, ow), dtype, 1, 5)
    twice = overlap_columns(ow, dtype)
    assert len(twice) == vl - 1
    # seen by output columns twice[0..2] (all revisited; only twice[0] where VL = 2)
    column = twice[min(2, len(twice) - 1)]
    if where == "input":
        x[1, c - 1, 2, column] = value
    else:
        grad_out[2, k - 1, 1, column] = value
    want = (ref.conv2d(x, w, None, S1, (0, 0)), *ref.conv2d_backward(grad_out, x, w, S1, (0, 0)))

    def run(methods=None):
        return conv_and_gradients(x, w, None, 1, 0, grad_out, methods)

    grad_w = want[2]
    assert (np.isnan(grad_w) if np.isnan(value) else np.isinf(grad_w)).any()
    assert np.isnan(value) or not np.isnan(grad_w).any()
    for got, expected, gemm in zip(run(), want, on_gemm_path(run), strict=True):
        assert_array_equal(got, expected)  # NaN where NaN, same-signed inf where inf
        assert_array_equal(got, gemm)


# ------------------------------------------------------------------------------- threads

THREAD_CASES = [
    ((37, 1, 12, 28), 3, (5, 5), S1, (2, 2)),  # row kernel, its weight gradient
    ((37, 2, 5, 31), 5, (3, 7), S1, (1, 3)),  # rows, GEMM weight gradient (Q 42)
    ((37, 3, 9, 12), 10, (3, 3), (2, 1), (1, 1)),  # filter kernel
]


@every_copy
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


@every_copy
def test_conv2d_layer_trains_on_the_row_kernel():
    """Conv2d(1, 6, 5, padding=2) on 28x28 (LeNet conv1): forward keeps no columns, and
    backward needs none, giving the reference's gradients exactly."""
    rng = np.random.default_rng(28)
    layer = nn.Conv2d(1, 6, 5, padding=2)
    assert layer.training
    layer.weight.data[...] = small_ints(rng, layer.weight.shape, np.float32)
    layer.bias.data[...] = small_ints(rng, layer.bias.shape, np.float32)
    x = small_ints(rng, (5, 1, 28, 28), np.float32)
    assert methods(layer.weight.data, 1, 28) == (ROW, ROW)
    out = layer(x)
    assert_array_equal(out, ref.conv2d(x, layer.weight.data, layer.bias.data, S1, (2, 2)))
    grad_out = small_ints(rng, out.shape, np.float32)
    grad_x = layer.backward(grad_out)
    want_x, want_w, want_b = ref.conv2d_backward(grad_out, x, layer.weight.data, S1, (2, 2))
    assert_array_equal(grad_x, want_x)
    assert_array_equal(layer.weight.grad, want_w)
    assert_array_equal(layer.bias.grad, want_b)


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, method", [(3, ROW), (9, FILTER)])
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


@pytest.mark.parametrize(
    "case",
    [
        ((8, 1, 28, 28), 6, (5, 5), S1, (2, 2)),  # LeNet conv1
        ((2, 16, 32, 32), 16, (3, 3), S1, (1, 1)),
    ],  # VGG-like
    ids=case_id,
)
@every_copy
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
    for mine, theirs in zip(
        F.conv2d_backward(g, x, w, stride, padding), (tx.grad, tw.grad, tb.grad), strict=True
    ):
        scale = float(theirs.abs().max())
        assert_allclose(mine, theirs.numpy(), rtol=1e-4, atol=1e-5 * scale)
