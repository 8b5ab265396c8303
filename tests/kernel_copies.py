"""The ISA copies of the C kernels (csrc/direct_conv.h, fastcnn._isa) as the tests see them.

Each copy has its own vector length VL and register tiles, so the branches a shape takes
(which method functional picks, the remainders after each tile) differ from copy to copy.
``COPIES`` describes every copy fastcnn builds (tile sizes as csrc/direct_conv.h defines
them), ``running()`` the one the kernels run now, and ``chosen_methods`` inside
``selecting_as(copy)`` the methods fastcnn/_conv_plan.py picks on a copy this CPU may not
have (only the choice: no kernel runs), so that the case grids can be checked to reach
every branch of every copy on any machine. ``conv_and_gradients`` runs a convolution by
the methods a test names. The ``kernel_copy`` fixture (tests/conftest.py) runs a test on
each copy the CPU has.
"""

import contextlib
import platform
from dataclasses import dataclass

import numpy as np
import pytest

from fastcnn import _conv_plan, _isa
from fastcnn import functional as F

WIDE_TW = 6  # pixels (or kernel taps) of the filter kernel's wide tile, on every copy
NARROW_TW = 8  # ... of its one-vector tile
ROW_FILTERS = 4  # filters the row kernel computes together (FASTCNN_FILTERS)
_ARM64 = platform.machine().lower() in ("aarch64", "arm64")


@dataclass(frozen=True)
class Copy:
    """One ISA copy: its name (as FASTCNN_MAX_CPU_ISA takes it), bytes per vector, the
    filter kernel's wide tile (wide_nv vectors of filters x WIDE_TW pixels) and the row
    kernel's weight-gradient tile (grad_cols kernel columns x 4 filters)."""

    name: str
    vector_bytes: int
    wide_nv: int
    grad_cols: int
    label: str = ""

    def vl(self, dtype):
        """Values of dtype per vector."""
        return self.vector_bytes // np.dtype(dtype).itemsize

    def gw(self, dtype):
        """GW: filters per block of the filter kernel's operands, a wide tile's."""
        return self.wide_nv * self.vl(dtype)

    @property
    def limits(self):
        """The _conv_plan.MethodLimits of this copy."""
        return _conv_plan.METHOD_LIMITS[self.name]

    def __str__(self):
        return self.label or self.name


# csrc/direct_conv.h's FASTCNN_VECTOR_BYTES, FASTCNN_WIDE_NV and FASTCNN_GRAD_COLS; the
# baseline copy is NEON on ARM64 (32 registers: a 3-vector wide tile, AVX-512's gradient
# tiles) and SSE2 on x86-64 (16: AVX2's).
_X86_BASELINE = Copy("baseline", 16, 2, 2, "baseline-x86")
_ARM_BASELINE = Copy("baseline", 16, 3, 5, "baseline-arm64")
COPIES = {
    "avx512": Copy("avx512", 64, 4, 5),
    "avx2": Copy("avx2", 32, 2, 2),
    "baseline": _ARM_BASELINE if _ARM64 else _X86_BASELINE,
    "portable": Copy("portable", 16, 2, 2),
}
# every geometry a copy has on some machine: what the case grids must cover
ALL_GEOMETRIES = [
    COPIES["avx512"],
    COPIES["avx2"],
    _X86_BASELINE,
    _ARM_BASELINE,
    COPIES["portable"],
]


def running():
    """The copy the kernels run now."""
    return COPIES[_isa.active()]


_selecting = []  # the copies selecting_as names, innermost last


@contextlib.contextmanager
def selecting_as(copy):
    """chosen_methods as on `copy` (a Copy) inside, whatever the CPU: for checks of which
    branches the case grids reach (only _conv_plan.choose_methods runs: no kernel)."""
    _selecting.append(copy)
    try:
        yield copy
    finally:
        _selecting.pop()


def chosen_methods(weight, stride, out_w, padding=(0, 0), in_hw=None):
    """The _conv_plan.Methods a convolution by `weight` gets at `stride` with output rows
    of out_w pixels, on the copy selecting_as names (else the running one). in_hw: the
    input's (H, W), for the input gradient's choice (default: the one giving out_w)."""
    copy = _selecting[-1] if _selecting else running()
    stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
    kh, kw = weight.shape[2:]
    if in_hw is None:
        in_hw = (kh, (out_w - 1) * stride[1] + kw - 2 * padding[1])
    vl = copy.vl(weight.dtype)
    return _conv_plan.choose_methods(in_hw, weight.shape, stride, padding, vl, copy.limits)


def conv_and_gradients(x, w, b, stride, padding, grad_out, methods=None):
    """conv2d's output and every gradient on the running copy: by functional, as it
    chooses, or by a plan of `methods` (a _conv_plan.Methods)."""
    if methods is None:
        return (
            F.conv2d(x, w, b, stride, padding),
            *F.conv2d_backward(grad_out, x, w, stride, padding),
        )

    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    plan = _conv_plan.ConvPlan(x.shape[1:], w.shape, x.dtype, pair(stride), pair(padding), methods)
    packs = _conv_plan.PackedWeights(plan, w)
    out, _ = plan.forward(x, w, b, packs, False)
    return (out, *plan.backward(grad_out, x, packs, True, True, None))


def filter_tiles(k, n, copy, dtype):
    """The filter kernel's tiles for k filters over n items (output pixels in the forward
    pass; kernel taps (c, i, j) in the weight gradient; input pixels, with C filters, in the
    input gradient), as branches: ("wide", n % WIDE_TW) where whole wide tiles of filters
    exist, ("narrow", n % NARROW_TW) for the filter vectors left over, ("left", v) for the v
    vectors of the last, partial block of GW filters (each at its offset in the block), and
    ("partial",) where the last vector has lanes past k."""
    vl, nv, gw = copy.vl(dtype), copy.wide_nv, copy.gw(dtype)
    branches = set()
    if nv > 1 and k >= gw:
        branches.add(("wide", n % WIDE_TW))
    if nv == 1 or k % gw:
        branches.add(("narrow", n % NARROW_TW))
        branches.add(("left", -(-(k % gw) // vl)))
    if k % vl:
        branches.add(("partial",))
    return branches


def all_filter_tiles(copy):
    """Every branch filter_tiles can name on `copy`."""
    return (
        {("wide", r) for r in range(WIDE_TW)}
        | {("narrow", r) for r in range(NARROW_TW)}
        | {("left", v) for v in range(1, copy.wide_nv + 1)}
        | {("partial",)}
    )


def row_forward_tiles(ow, copy, dtype):
    """The row kernel's forward tiles for output rows of ow pixels: rows of fewer than two
    vectors in one-vector tiles, the last moved back to end at the row's end (("one",
    overlap?)); wider rows in two-vector tiles, the last moved back by less than a vector,
    exactly one or more (("two", ow % 2VL compared with VL))."""
    vl = copy.vl(dtype)
    if ow < 2 * vl:
        return ("one", ow % vl != 0)
    r = ow % (2 * vl)
    return ("two", "whole" if r == 0 else "< VL" if r < vl else "= VL" if r == vl else "> VL")


def all_row_forward_tiles():
    return {("one", False), ("one", True)} | {("two", r) for r in ("whole", "< VL", "= VL", "> VL")}


def row_grad_tiles(fw, copy):
    """Widths of the row kernel's weight-gradient column tiles for kernel width fw: tiles of
    grad_cols, then of 3 (where grad_cols > 3), then of 1."""
    tiles, j0 = [], 0
    while j0 + copy.grad_cols <= fw:
        tiles.append(copy.grad_cols)
        j0 += copy.grad_cols
    while copy.grad_cols > 3 and j0 + 3 <= fw:
        tiles.append(3)
        j0 += 3
    tiles += [1] * (fw - j0)
    return tiles


# A test marked so runs once per ISA copy of the kernels this CPU has (tests/conftest.py).
every_copy = pytest.mark.usefixtures("kernel_copy")


def gemm_methods():
    """Methods of im2col + GEMM throughout (and col2im for the input gradient)."""
    return _conv_plan.Methods(_conv_plan.GEMM, _conv_plan.GEMM, _conv_plan.COL2IM)
