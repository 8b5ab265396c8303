"""The ISA copies of the C kernels (csrc/direct_conv.h, fastcnn._isa) as the tests see them.

Each copy has its own vector length VL and register tiles, so the branches a shape takes
(which method functional picks, the remainders after each tile) differ from copy to copy.
``COPIES`` describes every copy fastcnn builds (tile sizes as csrc/direct_conv.h defines
them), ``running()`` the one the kernels run now, and ``selecting_as(copy)`` makes
functional choose methods as it would on a copy this CPU may not have (only the choice: no
kernel runs), so that the case grids can be checked to reach every branch of every copy on
any machine. The ``kernel_copy`` fixture (tests/conftest.py) runs a test on each copy the
CPU has.
"""

import contextlib
import platform
from dataclasses import dataclass

import numpy as np
import pytest

from fastcnn import _isa
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
        """functional's MethodLimits for this copy."""
        return F.METHOD_LIMITS[self.name]

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


class _SelectionOf:
    """Stands in for fastcnn._isa in functional: the method choice of another copy."""

    def __init__(self, copy):
        self.copy = copy

    def active(self):
        return self.copy.name

    def vector_length(self, dtype):
        return self.copy.vl(dtype)

    def group_width(self, dtype):
        return self.copy.gw(dtype)


@contextlib.contextmanager
def selecting_as(copy):
    """functional's method selection as on `copy` (a Copy), whatever the CPU: for checks of
    which branches the case grids reach. No kernel may run inside: the kernels would get
    weights packed for another vector length."""
    real = F._isa
    F._isa = _SelectionOf(copy)
    try:
        yield copy
    finally:
        F._isa = real


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
