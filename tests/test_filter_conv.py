"""The filter kernel (csrc/direct_conv_impl.h) on every branch it has,
on every ISA copy of the kernels this CPU runs (the ``kernel_copy`` fixture).

``_conv_plan.choose_methods`` picks it for at least VL/2 filters (VL: the copy's values per
vector, fastcnn._isa.vector_length), at any stride. Its operands are blocked by GW filters
(a wide tile's: NV*VL), KP >= K a multiple of GW. The forward pass runs a wide tile of NV
filter vectors x 6 pixels while NV whole filter vectors remain (K >= GW; NV = 4 on AVX-512
and ARM64's baseline, 2 on AVX2, x86's baseline and portable), then 8/4/2/1-pixel tiles
(spanning row ends) for the pixels and the filter vectors left over (each at its offset in
the last block). The weight gradient (direct while C*kH*kW is
within the copy's ``filter_grad_max_q``) is tiled the same way with the kernel taps
(c, i, j) in place of the pixels. The input gradient (by the filter kernel at stride 1,
padding below the kernel size, and the copy's ``input_grad_min_channels`` and
``input_grad_max_pixels``, ``_conv_plan.METHOD_LIMITS``) is the output gradient, padded by the
kernel size less one less the padding, convolved by the same kernel with the flipped
kernels: there C plays K's part. So that this path runs on every case that can take it,
whatever a copy is tuned to, the tests that need it lower those limits to VL/2 channels and
no pixel limit (``input_grad_on_filters``). Copies tuned to run 1x1 kernels by GEMM
(``pointwise_by_gemm``) run them on the filter kernel here (``pointwise_on_filters``), as
the AVX-512 copy does.

Checked: the reference bit for bit on small integers over a grid that runs every branch
of every copy (``test_cases_cover_every_branch`` says which); the im2col + GEMM path to
rounding on random normal data; +-inf and NaN in the input and the output gradient; 1-3
threads; the fused Conv2d -> ReLU -> MaxPool2d op; PyTorch on VGG-like layers.
"""

import numpy as np
import pytest
from kernel_copies import (
    ALL_GEOMETRIES,
    all_filter_tiles,
    chosen_methods,
    conv_and_gradients,
    every_copy,
    filter_tiles,
    gemm_methods,
    running,
    selecting_as,
)
from numpy.testing import assert_allclose, assert_array_equal
from test_fused import assert_fused_matches_unfused
from test_kernels_vs_reference import (
    case_id,
    check_conv_matches_reference,
    out_size,
    small_ints,
    weight_of,
)

import fastcnn
from fastcnn import _conv_plan
from fastcnn import _reference as ref
from fastcnn import functional as F
from fastcnn._conv_plan import FILTER, GEMM

DTYPES = [np.float32, np.float64]

# (N, C, H, W), K, (FH, FW), stride, padding. Each K of {8, 9, 16, 17, 20, 33, 63, 64, 70,
# 128, 130}; pixel counts P = OH*OW whose remainders after tiles of 8 (filters left over)
# and of 6 (the wide tile) take every value on every copy in both dtypes, with 1 to NV
# filter vectors left over in the last block; likewise for the weight gradient (K filters,
# C*FH*FW kernel taps) and the input gradient (C filters, H*W pixels); strides 1-3 and
# (1, 2); paddings 0-3, unequal per axis, and as large as the kernel (the input gradient
# falls back to GEMM). test_cases_cover_every_branch checks this, per copy and dtype.
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
    # C >= 64: the input gradient's convolution (C filters, H*W pixels) on the wide tile
    ((1, 64, 2, 3), 8, (3, 3), (1, 1), (1, 1)),
    ((2, 70, 1, 7), 8, (1, 3), (1, 1), (0, 1)),
    ((1, 65, 2, 4), 9, (2, 2), (1, 1), (1, 0)),
    ((1, 66, 3, 7), 8, (3, 3), (1, 1), (1, 1)),
    ((2, 67, 2, 5), 16, (2, 3), (1, 1), (0, 0)),
    ((1, 130, 5, 7), 8, (3, 3), (1, 1), (2, 2)),
    ((1, 9, 3, 3), 8, (2, 2), (1, 1), (0, 1)),  # input gradient: 9 pixels, 9 filters
    # K 70 and 130 (wide tiles and filters left over on every copy) with C*FH*FW = 1-8:
    # the weight gradient's remainders after tiles of 6 and of 8 kernel taps
    ((1, 1, 5, 6), 130, (1, 1), (1, 1), (0, 0)),
    ((1, 2, 4, 5), 70, (1, 1), (2, 1), (0, 0)),
    ((1, 1, 6, 5), 70, (3, 1), (1, 1), (1, 0)),
    ((1, 1, 5, 5), 130, (2, 2), (1, 2), (0, 1)),
    ((1, 1, 3, 9), 70, (1, 5), (1, 1), (0, 2)),
    ((1, 3, 4, 4), 130, (2, 1), (1, 1), (0, 0)),
    ((1, 1, 9, 4), 70, (7, 1), (1, 1), (1, 0)),
    ((1, 2, 4, 4), 130, (2, 2), (1, 1), (1, 1)),
    # vectors left over in the last block of GW filters (or channels): 1 to NV of them,
    # each at its offset in the block, on every copy
    ((1, 3, 5, 5), 20, (3, 3), (1, 1), (1, 1)),
    ((1, 20, 3, 2), 8, (1, 2), (1, 1), (0, 1)),
    ((1, 30, 3, 3), 8, (2, 2), (1, 1), (0, 0)),
    ((1, 40, 2, 3), 9, (2, 2), (1, 1), (1, 0)),
    ((1, 63, 2, 2), 8, (2, 2), (1, 1), (1, 1)),
    # input gradient of 9 channels over 21 pixels: a 3-vector block of channels and 5
    # pixels after the narrow tiles of 8 (ARM64's float64 baseline geometry)
    ((1, 9, 3, 7), 8, (3, 3), (1, 1), (1, 1)),
]


def input_grad_limits(limits, vl, forced):
    """(least C, most H*W) of an input gradient by the filter kernel: the copy's own, or
    where `forced` (input_grad_on_filters) at most VL/2 channels and no pixel limit."""
    min_c, max_pixels = limits.input_grad_min_channels, limits.input_grad_max_pixels
    if forced:
        return (vl // 2 if min_c is None else min(min_c, vl // 2)), None
    return min_c, max_pixels


def expected_paths(case, dtype, copy, forced=False):
    """(forward, weight gradient, input gradient by the filter kernel?) on `copy` by the
    documented rules, written out independently of functional's code."""
    (_, c, h, w), k, (fh, fw), stride, (ph, pw) = case
    vl, limits = copy.vl(dtype), copy.limits
    ow = out_size(case)[1]
    assert not (stride == (1, 1) and ow >= vl and k < limits.row_max_filters)  # not rows
    assert k >= vl // 2
    max_q = limits.filter_grad_max_q
    weight_grad = FILTER if max_q is None or c * fh * fw <= max_q else GEMM
    min_c, max_pixels = input_grad_limits(limits, vl, forced)
    dx_filters = (
        stride == (1, 1)
        and ph < fh
        and pw < fw
        and min_c is not None
        and c >= min_c
        and (max_pixels is None or h * w <= max_pixels)
    )
    return FILTER, weight_grad, dx_filters


def actual_paths(case, dtype):
    """What the plan picks for the case."""
    stride, padding = case[3:]
    chosen = chosen_methods(weight_of(case, dtype), stride, out_size(case)[1], padding, case[0][2:])
    return chosen.forward, chosen.weight_grad, chosen.input_grad == FILTER


@pytest.fixture(autouse=True)
def pointwise_on_filters(monkeypatch):
    """Every copy's 1x1 cases on the filter kernel, as pointwise_by_gemm=False has them."""
    for name, limits in _conv_plan.METHOD_LIMITS.items():
        monkeypatch.setitem(
            _conv_plan.METHOD_LIMITS, name, limits._replace(pointwise_by_gemm=False)
        )


@pytest.fixture
def input_grad_on_filters(monkeypatch):
    """input_grad_on_filters(dtype): from here on, the running copy computes stride-1 input
    gradients by the filter kernel from VL/2 channels (or its own lower limit) and at any
    image size, whatever it is tuned to (AVX2: 16 channels and 16x16 pixels; baseline and
    portable likewise): the path then runs on every case that can take it, on every copy."""

    def force(dtype):
        copy = running()
        min_c, max_pixels = input_grad_limits(copy.limits, copy.vl(dtype), forced=True)
        forced = copy.limits._replace(
            input_grad_min_channels=min_c, input_grad_max_pixels=max_pixels
        )
        monkeypatch.setitem(_conv_plan.METHOD_LIMITS, copy.name, forced)

    return force


@pytest.mark.parametrize("copy", ALL_GEOMETRIES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cases_cover_every_branch(copy, dtype):
    """On every copy's geometry (whether or not this CPU runs it): the forward pass, the
    weight gradient and the input gradient each reach every tile remainder."""
    want = all_filter_tiles(copy)
    limits = copy.limits
    forward, weight_grad, dx = set(), set(), set()
    dx_paths, forced_dx_paths, weight_grads = set(), set(), set()
    for case in CASES:
        (_, c, h, w), k, (fh, fw), _, _ = case
        with selecting_as(copy):
            paths = actual_paths(case, dtype)
        assert paths == expected_paths(case, dtype, copy), case
        assert paths[0] == FILTER, case
        forward |= filter_tiles(k, out_size(case)[0] * out_size(case)[1], copy, dtype)
        if paths[1] == FILTER:  # K filters over the C*FH*FW kernel taps
            weight_grad |= filter_tiles(k, c * fh * fw, copy, dtype)
        weight_grads.add(paths[1])
        dx_paths.add(paths[2])
        # the input gradient on the filter kernel, with input_grad_on_filters' limits: C
        # filters over the H*W input pixels
        forced_dx = expected_paths(case, dtype, copy, forced=True)[2]
        if forced_dx:
            dx |= filter_tiles(c, h * w, copy, dtype)
        forced_dx_paths.add(forced_dx)
    assert want <= forward, ("forward", sorted(want - forward))
    assert want <= weight_grad, ("weight gradient", sorted(want - weight_grad))
    assert want <= dx, ("input gradient", sorted(want - dx))
    assert forced_dx_paths == {True, False}
    # with the copy's own limits too, both ways where it has the filter kernel's at all
    assert dx_paths == ({True, False} if limits.input_grad_min_channels is not None else {False})
    assert weight_grads == ({FILTER, GEMM} if limits.filter_grad_max_q is not None else {FILTER})


def test_cases_cover_the_shapes():
    assert {case[1] for case in CASES} == {8, 9, 16, 17, 20, 33, 63, 64, 70, 128, 130}
    assert {case[2][1] for case in CASES} >= set(range(1, 8))
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


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_filter_paths_equal_reference_exactly(case, dtype):
    assert actual_paths(case, dtype) == expected_paths(case, dtype, running())
    check_conv_matches_reference(case, dtype, with_bias=True)


# stride 1, padding below the kernel size and C >= 8 (VL/2 of every copy): the cases whose
# input gradient the filter kernel computes where input_grad_on_filters forces it
DX_CASES = [
    case
    for case in CASES
    if case[3] == (1, 1)
    and case[0][1] >= 8
    and all(p < f for p, f in zip(case[4], case[2], strict=True))
]


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DX_CASES, ids=case_id)
def test_input_gradient_on_the_filter_kernel_equals_reference(case, dtype, input_grad_on_filters):
    """The input gradient's convolution by the filter kernel, also on copies tuned to take
    im2col's adjoint instead (there with the limit lowered to VL/2)."""
    input_grad_on_filters(dtype)
    assert actual_paths(case, dtype) == expected_paths(case, dtype, running(), forced=True)
    assert actual_paths(case, dtype)[2]
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


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_filter_paths_match_gemm_path(case, dtype, input_grad_on_filters):
    """Equal to rounding: the two paths add the same products in different orders."""
    input_grad_on_filters(dtype)
    stride, padding = case[3:]
    x, w, b, grad_out = random_case(np.random.default_rng(case[1]), case, dtype)
    direct = conv_and_gradients(x, w, b, stride, padding, grad_out)
    gemm = conv_and_gradients(x, w, b, stride, padding, grad_out, gemm_methods())
    rtol = 1e-4 if dtype == np.float32 else 1e-11
    for got, want in zip(direct, gemm, strict=True):
        assert got.dtype == dtype and got.shape == want.shape
        # relative to the array's scale too: a value that cancels to near 0 keeps the
        # absolute rounding error of its large terms
        assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.abs(want).max(initial=1)))


# ------------------------------------------------------------------- non-finite values

# C = 9 input channels: the input gradient by the filter kernel (input_grad_on_filters), its
# lanes past C unused; K = 17 filters: a last filter vector with lanes past K on every copy.
NON_FINITE_CASE = ((3, 9, 6, 7), 17, (3, 3), (1, 1), (1, 1))


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["input", "grad_output"])
@pytest.mark.parametrize(
    "values",
    [(np.inf,), (-np.inf,), (np.nan,), (np.inf, -np.inf)],
    ids=["inf", "-inf", "nan", "inf-inf"],
)
def test_non_finite_values_follow_the_reference(dtype, where, values, input_grad_on_filters):
    """inf and NaN end where the reference puts them: 0 * inf (a zero weight or padding
    times an infinite input) is NaN, inf - inf is NaN; nothing leaks from padded lanes."""
    input_grad_on_filters(dtype)
    case = NON_FINITE_CASE
    assert actual_paths(case, dtype) == (FILTER, FILTER, True)
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
    assert reached == (
        [True, False, True, False] if where == "input" else [False, True, True, True]
    )


# ------------------------------------------------------------------------------ threads


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
def test_filter_paths_same_bits_on_1_2_3_threads(dtype, input_grad_on_filters):
    """N = 37: uneven shares of images and of the 8-image chunks the gradients sum over."""
    input_grad_on_filters(dtype)
    case = ((37, 9, 7, 6), 70, (3, 3), (1, 1), (1, 1))
    assert actual_paths(case, dtype) == (FILTER, FILTER, True)
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


@every_copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))], ids=case_id)
def test_fused_op_on_the_filter_paths(dtype, pool, input_grad_on_filters):
    """conv2d_relu_max_pool2d and its backward equal conv2d, relu and max_pool2d, bit for
    bit, with the forward pass, weight gradient and input gradient all on the filter kernel."""
    input_grad_on_filters(dtype)
    case = ((9, 9, 10, 9), 17, (3, 3), (1, 1), (1, 1))
    assert actual_paths(case, dtype) == (FILTER, FILTER, True)
    conv = case[3:]
    x, w, b, _ = random_case(np.random.default_rng(9), case, dtype)
    pooled_shape = F.max_pool2d(F.conv2d(x, w, b, *conv), *pool).shape
    grad = np.random.default_rng(10).standard_normal(pooled_shape).astype(dtype)
    assert_fused_matches_unfused(x, w, b, conv, pool, grad)


# ------------------------------------------------------------------------------- torch


@pytest.mark.parametrize(
    "case",
    [((2, 16, 16, 16), 64, (3, 3), (1, 1), (1, 1)), ((2, 16, 16, 16), 70, (3, 3), (2, 2), (1, 1))],
    ids=case_id,
)
@every_copy
def test_vgg_like_layers_match_torch(case):
    torch = pytest.importorskip("torch")
    stride, padding = case[3:]
    assert actual_paths(case, np.float32)[0] == FILTER
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
