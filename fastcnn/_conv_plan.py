"""The convolution plan: how one convolution is computed, decided once and then reused.

A ``ConvPlan`` is made for one (image shape, weight shape, dtype, stride, padding, dilation,
groups, kernel ISA) and cached (``plan_for``). It holds everything the kernels of ``_conv.pyx`` and
``_fused.pyx`` need besides the arrays:

- the methods: for the forward pass and the weight gradient, ``gemm`` (im2col and a
  GEMM), ``row`` (csrc/direct_conv_impl.h's row kernel) or ``filter`` (its filter kernel);
  for the input gradient, ``col2im`` (the GEMM and im2col's adjoint) or ``filter`` (the
  filter kernel on the padded output gradient and the flipped kernels); ``depthwise`` for
  all three when each group has one input channel (csrc/_depthwise.pxd over
  csrc/direct_conv_impl.h's depthwise kernels). Grouped and
  dilated convolutions take ``gemm`` and ``col2im``, group by group: the direct kernels
  know neither. ``choose_methods`` picks them from where each measured fastest
  (``MethodLimits``);
- the geometry and the workspace layout, as the dict the kernels take as one struct
  (csrc/_conv_image.pxd's ``ConvGeometry``);
- how to pack the weights for those methods (``PackedWeights``, which packs each value of
  a weight once).

``functional``'s convolutions validate their arguments, then run a plan; so do
``nn.Conv2d`` and the fused Conv2d -> ReLU -> MaxPool2d stage of ``nn.Sequential``, which
keep the packed weights of their ``Parameter`` between calls (``packs_for``). Nothing here
validates but ``plan_for``'s check that the window fits, done once per plan.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
from numpy.typing import DTypeLike, NDArray

from fastcnn import _conv, _fused, _isa, _ops
from fastcnn._ops import Pair
from fastcnn._threads import get_num_threads
from fastcnn._validation import fits_int32, window_output_hw

if TYPE_CHECKING:
    from fastcnn.nn.parameter import Parameter

Shape = tuple[int, ...]
_T = TypeVar("_T")

# The methods, by the names csrc/_conv_image.pxd gives their codes (the codes' one home).
GEMM, ROW, FILTER = "gemm", "row", "filter"
COL2IM = "col2im"  # the input gradient by the GEMM and im2col's adjoint
DEPTHWISE = "depthwise"  # one input channel per group: forward and backward alike
_CODES = _conv.METHOD_CODES

# Images per slice of the batch whose weight/bias gradients are summed together before the
# slices are added in order. Fixed, so the sums do not depend on the thread count.
GRAD_CHUNK = 8


class MethodLimits(NamedTuple):
    """Where each method measured fastest on one ISA copy of the kernels (fastcnn._isa),
    in the units of that copy's vector length VL. bench/README.md has the measurements.

    row_max_filters: the row kernel (stride 1, output rows of >= VL pixels) below this many
        filters; the filter kernel from VL // 2 filters; im2col and GEMM otherwise.
    row_grad_max_q, filter_grad_max_q: each direct kernel's weight gradient up to this
        C*kH*kW (above, im2col and GEMM), None for no limit.
    input_grad_min_channels, input_grad_max_pixels: a stride-1 input gradient by the filter
        kernel from this many input channels and up to this many input pixels (H*W; None:
        no limit); else im2col's adjoint. None channels: always the adjoint.
    pointwise_input_grad_max_channels: a 1x1 kernel's input gradient by the filter kernel
        below this many input channels only (None: no limit). Its adjoint is a plain GEMM,
        with no column scatter to save.
    pointwise_by_gemm: a 1x1 kernel's forward pass and weight gradient by im2col and GEMM
        where the filter kernel would take them (its columns are the input itself, or a
        strided gather of it).
    """

    row_max_filters: int
    row_grad_max_q: int | None
    filter_grad_max_q: int | None
    input_grad_min_channels: int | None
    input_grad_max_pixels: int | None
    pointwise_input_grad_max_channels: int | None = None
    pointwise_by_gemm: bool = False


# AVX-512 (measured on a 2-core Cascade Lake VM, one thread): the row kernel's weight
# gradient, LeNet conv1 (Q = 25) 1.8 vs 2.4 ms per 256 images but a VGG layer (576) 22 vs
# 14 ms per 32; the filter kernel's, LeNet conv2 (150) 1.5 vs 3.8 ms, VGG layers (576,
# 1152) 66 vs 27 and 33 vs 11 ms (with the filter kernels of before their per-ISA tiles
# and blocked operands: not measured again, no such machine since).
# AVX2 (an AMD EPYC, Zen 3, one thread, 2026-12-01, ms): the filter kernel's forward pass
# and weight gradient beat GEMM on every case (VGG-128 forward 15.5 vs 20.2, weight
# gradient 15.4 vs 21.1); its input gradient won on small images (3x3, 32 -> 64 channels
# at 16x16: 15.1 vs 18.1 per 64 images with the weight gradient; 64 -> 128 at 8x8: 16.7
# vs 18.4) and lost on larger ones (VGG-64 at 32x32: 63.2 vs 60.5; VGG-128, 128 channels
# at 16x16: 35.5 vs 34.4) and with 6 channels (LeNet conv2: 7.3 vs 6.7); LeNet conv1 (6
# filters) ran 1.9 ms on the row kernel, 2.0 on the filter one.
# Measured again after the filter kernels' per-ISA tiles (same machine, one thread,
# 2026-12-01 22:10-23:10 UTC, the input gradient alone, col2im vs filter, ms): it wins from
# 8 channels at every size: 16 -> 16 at 32x32, 64 images (ResNet-20's first stage) 8.4 vs
# 3.9; 64 -> 64 at 32x32 17.2 vs 14.5 per 16; 128 -> 128 at 16x16 15.4 vs 13.7 per 16;
# 8 -> 16 at 14x14, 5x5 unpadded, 5.8 vs 4.9 per 256. Below 8 it depends on the shape:
# 4 -> 8 at 32x32 (3x3) 2.2 vs 1.4, but LeNet conv2 (6 channels, 5x5 unpadded) 4.4 vs 4.9
# per 256, and 3 channels 2.0 vs 2.7, 1 (LeNet conv1) 0.7 vs 2.0; so from 8. A 1x1
# kernel's adjoint is a GEMM with no scatter, and beats the filter kernel from 64 channels
# (MobileNetCIFAR's
# pointwise layers, per 64 images: 64 -> 128 at 16x16 4.2 vs 5.3, 256 -> 256 at 8x8 7.1
# vs 9.5, 256 -> 512 at 4x4 4.5 vs 5.8); below, they are level or the filter kernel wins
# (32 -> 128 at 16x16 3.4 vs 2.9, 16 -> 32 at 32x32 3.0 vs 2.4).
# A 1x1 kernel's forward pass and weight gradient ran faster by GEMM than by the filter
# kernel in every MobileNetCIFAR and ResNet-20 shape (same machine, 2026-12-02 01:10 UTC,
# per 64 images, ms, filter vs GEMM). Forward at 2 threads: 32 -> 64 at 32x32 3.61 vs 2.55,
# 64 -> 128 at 16x16 2.80 vs 1.96, 128 -> 128 at 16x16 4.91 vs 3.66, 128 -> 256 at 8x8
# 2.45 vs 1.73, 256 -> 256 at 8x8 4.73 vs 3.33, 256 -> 512 at 4x4 2.68 vs 1.99 (one thread:
# 7.0 vs 5.5 ... 5.3 vs 3.9). Weight gradient at 2 threads: 3.53 vs 2.64, 2.23 vs 1.95,
# 4.26 vs 3.79, 2.37 vs 1.83, 4.44 vs 3.56, 4.14 vs 2.50. ResNet-20's stride-2 projections
# at one thread (16 -> 32 at 32x32, 32 -> 64 at 16x16): forward level (0.70 vs 0.70, 0.48
# vs 0.45), weight gradient 0.69 vs 0.45 and 0.50 vs 0.34.
# The baseline and portable copies are not tuned: they take AVX2's limits.
_AVX2_LIMITS = MethodLimits(
    row_max_filters=8,
    row_grad_max_q=32,
    filter_grad_max_q=None,
    input_grad_min_channels=8,
    input_grad_max_pixels=None,
    pointwise_input_grad_max_channels=64,
    pointwise_by_gemm=True,
)
METHOD_LIMITS = {
    "avx512": MethodLimits(
        row_max_filters=8,
        row_grad_max_q=32,
        filter_grad_max_q=256,
        input_grad_min_channels=8,
        input_grad_max_pixels=None,
    ),
    "avx2": _AVX2_LIMITS,
    "baseline": _AVX2_LIMITS,
    "portable": _AVX2_LIMITS,
}


class Methods(NamedTuple):
    """How a convolution is computed: forward and weight_grad are GEMM, ROW or FILTER;
    input_grad is COL2IM or FILTER; or all three DEPTHWISE."""

    forward: str
    weight_grad: str
    input_grad: str


def choose_methods(
    in_hw: Sequence[int],
    weight_shape: Sequence[int],
    stride: Pair,
    padding: Pair,
    vector_length: int,
    limits: MethodLimits,
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> Methods:
    """The fastest methods measured (``limits``, a ``MethodLimits``) for a convolution on a
    copy of the kernels with ``vector_length`` values per vector; in_hw: the input's (H, W).
    Pure: tests ask it about any copy, whatever the CPU."""
    k, c, kh, kw = weight_shape
    if groups > 1 and c == 1:
        return Methods(DEPTHWISE, DEPTHWISE, DEPTHWISE)
    if groups > 1 or tuple(dilation) != (1, 1):
        return Methods(GEMM, GEMM, COL2IM)  # the direct kernels have one group, no dilation
    out_w = (in_hw[1] + 2 * padding[1] - kw) // stride[1] + 1
    if stride == (1, 1) and out_w >= vector_length and k < limits.row_max_filters:
        forward, max_q = ROW, limits.row_grad_max_q
    elif k >= vector_length // 2 and (kh, kw) == (1, 1) and limits.pointwise_by_gemm:
        forward, max_q = GEMM, None
    elif k >= vector_length // 2:
        forward, max_q = FILTER, limits.filter_grad_max_q
    else:
        forward, max_q = GEMM, None
    weight_grad = GEMM if max_q is not None and c * kh * kw > max_q else forward
    min_c, max_pixels = limits.input_grad_min_channels, limits.input_grad_max_pixels
    pointwise_max_c = limits.pointwise_input_grad_max_channels
    wide_pointwise = (kh, kw) == (1, 1) and pointwise_max_c is not None and c >= pointwise_max_c
    by_filter = (
        stride == (1, 1)
        and padding[0] < kh
        and padding[1] < kw
        and min_c is not None
        and c >= min_c
        and (max_pixels is None or in_hw[0] * in_hw[1] <= max_pixels)
        and not wide_pointwise
    )
    return Methods(forward, weight_grad, FILTER if by_filter else COL2IM)


def _round_up(count: int, block: int) -> int:
    return -(-count // block) * block


def blocked(matrix: NDArray[Any], group_width: int) -> NDArray[Any]:
    """A (rows, columns) matrix as direct_conv.h blocks the filter kernel's operands: zero
    columns appended up to KP, a multiple of ``group_width``, then stored as
    KP/group_width blocks of (rows, group_width). Returned 2-D, (KP/gw * rows, gw)."""
    rows, columns = matrix.shape
    kp = _round_up(columns, group_width)
    padded = np.zeros((rows, kp), dtype=matrix.dtype)
    padded[:, :columns] = matrix
    blocks = padded.reshape(rows, kp // group_width, group_width).transpose(1, 0, 2)
    return np.ascontiguousarray(blocks).reshape(-1, group_width)


class ConvPlan:
    """How one convolution is computed (see the module docstring). Made by ``plan_for``.

    Attributes: ``methods`` (``Methods``); ``out_hw``; ``group_width`` (GW: the filter
    kernel's block of filters on the copy that runs); ``kp`` (K padded to GW for the
    filter kernel's weight gradient, else 0); ``geometry`` and ``fused_geometry``: the
    kernels' ConvGeometry struct as a dict, for ``_conv`` and for ``_fused`` (whose
    workspace rows start with the image's convolution output).
    """

    def __init__(
        self,
        in_chw: Sequence[int],
        weight_shape: Sequence[int],
        dtype: DTypeLike,
        stride: Pair,
        padding: Pair,
        methods: Methods | None = None,
        *,
        dilation: Pair = (1, 1),
        groups: int = 1,
    ) -> None:
        c, h, w = in_chw
        k, _, fh, fw = weight_shape
        self.dtype = np.dtype(dtype)
        self.in_chw, self.weight_shape = tuple(in_chw), tuple(weight_shape)
        self.stride, self.padding = tuple(stride), tuple(padding)
        self.dilation, self.groups = tuple(dilation), groups
        self.out_hw = oh, ow = (
            (h + 2 * padding[0] - dilation[0] * (fh - 1) - 1) // stride[0] + 1,
            (w + 2 * padding[1] - dilation[1] * (fw - 1) - 1) // stride[1] + 1,
        )
        self.isa = _isa.active()
        self.group_width = _isa.group_width(self.dtype)
        if methods is None:
            vector_length = _isa.vector_length(self.dtype)
            limits = METHOD_LIMITS[self.isa]
            methods = choose_methods(
                (h, w), weight_shape, stride, padding, vector_length, limits, dilation, groups
            )
        self.methods = methods
        # rows of an image's column matrix: C*kH*kW, (C/groups)*kH*kW per group
        self.column_rows = q = c * fh * fw
        p = oh * ow
        self.kp = _round_up(k, self.group_width) if methods.weight_grad == FILTER else 0
        plane = (h + 2 * padding[0]) * (w + 2 * padding[1])
        # per image: its column matrix (GEMM), or its padded copy for a direct kernel
        self.forward_scratch = q * p if methods.forward == GEMM else max(q * p, c * plane)
        self.backward_scratch = q * p if methods.weight_grad == GEMM else max(q * p, c * plane)
        # the input gradient's: weight^T . dout (Q*P), or dout padded by the kernel less one
        by_filter = methods.input_grad == FILTER
        self.input_grad_scratch = k * (h + fh - 1) * (w + fw - 1) if by_filter else q * p
        if methods.forward == DEPTHWISE:
            # csrc/_depthwise.pxd's: a padded plane in stride[1] column phases; in the
            # backward pass also the flipped taps and a padded plane of the input or
            # output gradient, or (gather) the input gradient's stride phases and the padded
            # output gradient of csrc/_depthwise.pxd's plane_input_grad_by_phases
            hp, wp, (sh, sw) = h + 2 * padding[0], w + 2 * padding[1], stride
            phases = hp * sw * -(-wp // sw)
            span = (h + (fh - 1) * dilation[0]) * (w + (fw - 1) * dilation[1])
            rows, columns = -(-hp // sh), -(-wp // sw)
            gather = sh * sw * rows * columns + (rows + (fh - 1) // sh) * (columns + (fw - 1) // sw)
            self.forward_scratch = phases
            self.backward_scratch = phases + fh * fw + max(phases, span, gather)
            self.input_grad_scratch = 0
        self.conv_output = k * p  # the fused kernel's per-image convolution output
        self.geometry = self._geometry(scratch_at=0)
        self.fused_geometry = self._geometry(scratch_at=self.conv_output)

    def _geometry(self, scratch_at: int) -> dict[str, int]:
        """The ConvGeometry struct, with the image's scratch at ``scratch_at`` of a row."""
        (c, h, w), (k, _, fh, fw) = self.in_chw, self.weight_shape
        oh, ow = self.out_hw
        dout_t_at = scratch_at + self.backward_scratch
        return {
            "C": c, "H": h, "W": w, "K": k, "FH": fh, "FW": fw,
            "SH": self.stride[0], "SW": self.stride[1],
            "PH": self.padding[0], "PW": self.padding[1], "OH": oh, "OW": ow,
            "DH": self.dilation[0], "DW": self.dilation[1], "G": self.groups,
            "forward_method": _CODES[self.methods.forward],
            "weight_grad_method": _CODES[self.methods.weight_grad],
            "KP": self.kp,
            "scratch_at": scratch_at,
            "dout_t_at": dout_t_at,
            "dx_at": dout_t_at + oh * ow * self.kp,
        }  # fmt: skip

    def backward_row(self, input_grad: bool, fused: bool = False) -> int:
        """Values of a thread's workspace row in the backward pass (see _geometry)."""
        start = self.conv_output if fused else 0
        dx = self.input_grad_scratch if input_grad else 0
        return start + self.backward_scratch + self.out_hw[0] * self.out_hw[1] * self.kp + dx

    # ------------------------------------------------------------------------ running

    def forward(
        self,
        x: NDArray[Any],
        weight: NDArray[Any],
        bias: NDArray[Any] | None,
        packs: PackedWeights,
        save_columns: bool,
    ) -> tuple[NDArray[Any], NDArray[Any] | None]:
        """(out, columns): conv2d of the batch x; columns: every image's im2col matrix,
        kept for the backward pass, when ``save_columns`` and the plan builds them (else
        None). packs: a ``PackedWeights`` of ``weight`` for this plan."""
        out = np.empty((x.shape[0], self.weight_shape[0], *self.out_hw), dtype=x.dtype)
        n_threads = get_num_threads()
        columns = self._columns(x, save_columns)
        rows = 1 if columns is not None else n_threads
        workspace = _ops.workspace(rows, self.forward_scratch, x.dtype)
        _ops.run_kernel(
            _conv.conv2d_forward, self.geometry, x, weight, bias, packs.forward(),
            workspace, columns, out, n_threads=n_threads,
        )  # fmt: skip
        return out, columns

    def forward_relu_max_pool(
        self,
        pool: PoolPlan,
        x: NDArray[Any],
        weight: NDArray[Any],
        bias: NDArray[Any] | None,
        packs: PackedWeights,
        save_columns: bool,
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None]:
        """(out, indices, columns): max_pool2d(relu(conv2d(x))) by the fused kernel, for
        ``pool``, a ``PoolPlan`` over this plan's output."""
        n, k = x.shape[0], self.weight_shape[0]
        out = np.empty((n, k, *pool.out_hw), dtype=x.dtype)
        indices = np.empty(out.shape, dtype=np.int64)
        n_threads = get_num_threads()
        columns = self._columns(x, save_columns)
        scratch = 0 if columns is not None else self.forward_scratch
        workspace = _ops.workspace(n_threads, self.conv_output + scratch, x.dtype)
        _ops.run_kernel(
            _fused.conv2d_relu_max_pool2d_forward, self.fused_geometry, pool.window, x,
            weight, bias, packs.forward(), workspace, columns, out, indices,
            n_threads=n_threads,
        )  # fmt: skip
        return out, indices, columns

    @property
    def pointwise(self) -> bool:
        """A 1x1 kernel at stride 1 without padding: each image is its own column matrix
        (csrc/_conv_image.pxd's is_pointwise), which the kernels read in place."""
        kernel = self.weight_shape[2:]
        return kernel == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def _columns(self, x: NDArray[Any], save_columns: bool) -> NDArray[Any] | None:
        if not save_columns or self.methods.forward != GEMM or self.pointwise:
            return None
        return np.empty((x.shape[0], self.column_rows * self.out_hw[0] * self.out_hw[1]), x.dtype)

    def backward(
        self,
        grad_out: NDArray[Any],
        x: NDArray[Any],
        packs: PackedWeights,
        input_grad: bool,
        bias_grad: bool,
        columns: NDArray[Any] | None,
    ) -> Gradients:
        """(grad_x or None, grad_w, grad_b or None) of conv2d: grad_out is the output's
        gradient; columns: what ``forward`` kept, or None."""
        work = _Gradients(self, x, input_grad, bias_grad, fused=False)
        _ops.run_kernel(
            _conv.conv2d_backward, self.geometry, x, packs.weight_t(), grad_out,
            packs.input_grad() if input_grad else None, columns, GRAD_CHUNK, work.workspace,
            work.w_chunks, work.b_chunks, work.grad_x, work.grad_w, work.grad_b,
            n_threads=work.n_threads,
        )  # fmt: skip
        return work.gradients()

    def backward_relu_max_pool(
        self,
        grad_out: NDArray[Any],
        out: NDArray[Any],
        indices: NDArray[Any],
        x: NDArray[Any],
        packs: PackedWeights,
        input_grad: bool,
        bias_grad: bool,
        columns: NDArray[Any] | None,
    ) -> Gradients:
        """As ``backward``, for the fused kernel: grad_out is the pooled output's gradient,
        out and indices what ``forward_relu_max_pool`` returned."""
        work = _Gradients(self, x, input_grad, bias_grad, fused=True)
        _ops.run_kernel(
            _fused.conv2d_relu_max_pool2d_backward, self.fused_geometry, x, packs.weight_t(),
            grad_out, out, indices, packs.input_grad() if input_grad else None, columns,
            GRAD_CHUNK, work.workspace, work.w_chunks, work.b_chunks, work.grad_x,
            work.grad_w, work.grad_b, n_threads=work.n_threads,
        )  # fmt: skip
        return work.gradients()


# (grad_x or None, grad_w, grad_b or None) of a backward pass
Gradients = tuple[NDArray[Any] | None, NDArray[Any], NDArray[Any] | None]


class _Gradients:
    """A backward call's outputs, per-chunk partial sums and workspace; the gradients
    afterwards in the weight's own layout."""

    def __init__(
        self, plan: ConvPlan, x: NDArray[Any], input_grad: bool, bias_grad: bool, fused: bool
    ) -> None:
        k, q = plan.weight_shape[0], int(np.prod(plan.weight_shape[1:]))
        self.plan = plan
        w_size = q * plan.kp if plan.kp else k * q
        n_chunks = -(-x.shape[0] // GRAD_CHUNK)
        self.grad_x = np.empty_like(x) if input_grad else None
        self.grad_w = np.empty(w_size, dtype=x.dtype)
        self.grad_b = np.empty(k, dtype=x.dtype) if bias_grad else None
        self.w_chunks = np.empty((n_chunks, w_size), dtype=x.dtype)
        self.b_chunks = np.empty((n_chunks, k), dtype=x.dtype) if bias_grad else None
        self.n_threads = get_num_threads()
        row = plan.backward_row(input_grad, fused)
        self.workspace = _ops.workspace(self.n_threads, row, x.dtype)

    def gradients(self) -> Gradients:
        """(grad_x, grad_w, grad_b), grad_w in the weight's shape: the filter kernel's
        (Q, KP) transposed back and cut to K."""
        shape, grad_w = self.plan.weight_shape, self.grad_w
        if self.plan.kp:
            q = grad_w.size // self.plan.kp
            grad_w = np.ascontiguousarray(grad_w.reshape(q, self.plan.kp)[:, : shape[0]].T)
        return self.grad_x, grad_w.reshape(shape), self.grad_b


class PoolPlan(NamedTuple):
    """The fused kernel's max-pool over a plan's (OH, OW) output: the PoolWindow struct as
    a dict, and the pooled (POH, POW)."""

    window: dict[str, int]
    out_hw: Shape


def pool_plan(kernel: Pair, stride: Pair, padding: Pair, out_hw: Sequence[int]) -> PoolPlan:
    """A ``PoolPlan``; kernel, stride and padding checked by the caller."""
    window = {
        "KH": kernel[0], "KW": kernel[1], "TH": stride[0], "TW": stride[1],
        "UH": padding[0], "UW": padding[1],
    }  # fmt: skip
    return PoolPlan(window, tuple(out_hw))


# ------------------------------------------------------------------------ packed weights


class PackedWeights:
    """A weight as a plan's kernels want it, each layout made on first use.

    ``keep_bits``: the weight of a layer, packed again only when its bits change: a copy of
    them is kept and compared on each ``update`` (a version counter would miss the writes
    NumPy users make through ``param.data[...]`` or a state dict's arrays; comparing is
    one pass over the weight, cheaper than packing it). Without, the packs are of the
    array given (functional's calls, one per call).
    """

    def __init__(self, plan: ConvPlan, weight: NDArray[Any], keep_bits: bool = False) -> None:
        self.plan = plan
        self._keep_bits = keep_bits
        # (the weight packed, {layout name: its packing}); set by update
        self._state: tuple[NDArray[Any], dict[str, Any]] | None = None
        self.update(weight)

    def update(self, weight: NDArray[Any]) -> PackedWeights:
        """Make the packs those of ``weight``'s values; self."""
        state = self._state
        if state is not None and self._keep_bits and _same_bits(state[0], weight):
            return self
        source = np.array(weight, copy=True) if self._keep_bits else weight
        self._state = (source, {})  # one assignment: a thread sees old or new packs
        return self

    def _packed(self, name: str, make: Callable[[NDArray[Any]], _T]) -> _T:
        source, packs = self._state  # type: ignore[misc]  # set since __init__'s update
        if name not in packs:
            packs[name] = make(source)
        return packs[name]

    def forward(self) -> NDArray[Any] | None:
        """The forward pass's packing: the row kernel's (ceil(K/4), C*kH*kW*4), four
        filters side by side; the filter kernel's transposed (C*kH*kW, K), blocked by GW;
        None for GEMM (which takes the weight as it is). Zeros past K."""
        return self._packed("forward", self._pack_forward)

    def weight_t(self) -> NDArray[Any]:
        """The weight as a (C*kH*kW, K) matrix, for the input gradient's GEMM."""
        return self._packed("weight_t", lambda w: np.ascontiguousarray(w.reshape(w.shape[0], -1).T))

    def input_grad(self) -> NDArray[Any] | None:
        """For the filter kernel's input gradient: the kernels flipped, their channels
        swapped, (K*kH*kW, C) blocked by GW; for the depthwise kernel's, the weight as a
        (K, kH*kW) matrix; None when the plan takes im2col's adjoint."""
        method = self.plan.methods.input_grad
        if method == DEPTHWISE:
            return self._packed("input_grad", lambda w: w.reshape(w.shape[0], -1))
        if method != FILTER:
            return None
        return self._packed("input_grad", self._pack_input_grad)

    def _pack_forward(self, weight: NDArray[Any]) -> NDArray[Any] | None:
        k, q = weight.shape[0], weight[0].size
        method = self.plan.methods.forward
        if method == ROW:
            blocks = -(-k // 4)
            packed = np.zeros((blocks * 4, q), dtype=weight.dtype)
            packed[:k] = weight.reshape(k, q)
            fours = packed.reshape(blocks, 4, q).transpose(0, 2, 1)
            return np.ascontiguousarray(fours).reshape(blocks, q * 4)
        if method == FILTER:
            return blocked(weight.reshape(k, q).T, self.plan.group_width)
        return None

    def _pack_input_grad(self, weight: NDArray[Any]) -> NDArray[Any]:
        k, c, kh, kw = weight.shape
        flipped = weight[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(k * kh * kw, c)
        return blocked(flipped, self.plan.group_width)


_UNSIGNED = {4: np.uint32, 8: np.uint64}


def _same_bits(kept: NDArray[Any], weight: NDArray[Any]) -> bool:
    """True if ``weight`` holds exactly ``kept``'s bits (so -0.0 is not 0.0, and a NaN
    equals itself)."""
    if kept.shape != weight.shape or kept.dtype != weight.dtype:
        return False
    bits = _UNSIGNED[kept.dtype.itemsize]
    return np.array_equal(kept.view(bits), weight.view(bits))


_layer_packs: weakref.WeakKeyDictionary[object, PackedWeights] = weakref.WeakKeyDictionary()
_layer_packs_lock = threading.Lock()


def packs_for(param: Parameter, plan: ConvPlan) -> PackedWeights:
    """The ``PackedWeights`` of a layer's weight ``Parameter`` for ``plan``, kept between
    calls (and dropped with the Parameter), updated to its current values."""
    packs = _layer_packs.get(param)
    if packs is None or packs.plan is not plan:
        packs = PackedWeights(plan, param.data, keep_bits=True)
        with _layer_packs_lock:
            _layer_packs[param] = packs
        return packs
    return packs.update(param.data)


# --------------------------------------------------------------------------- the cache

_plans: dict[tuple, ConvPlan] = {}
_MAX_PLANS = 512  # shapes a process meets; past this the cache starts again


def plan_for(
    func: str,
    in_shape: Shape,
    weight_shape: Shape,
    dtype: DTypeLike,
    stride: Pair,
    padding: Pair,
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> ConvPlan:
    """The cached ``ConvPlan`` of conv2d(input of ``in_shape`` (N, C, H, W), weight of
    ``weight_shape``, with ``groups`` groups: C and K divisible by it, checked by the
    caller) on the copy of the kernels that runs. Made at the first call with a new key,
    after checking that the (dilated) kernel fits the padded input and the sizes fit the
    kernels' ints (a ValueError naming ``func``): each key is checked once."""
    isa = _isa.active()
    # the limits too: a test may lower them (tests/test_filter_conv.py) for every later call
    key = (
        in_shape[1:], weight_shape, dtype, stride, padding, dilation, groups, isa,
        METHOD_LIMITS[isa],
    )  # fmt: skip
    plan = _plans.get(key)
    if plan is None:
        kernel = weight_shape[2:]
        if dilation == (1, 1):
            out_hw = window_output_hw(func, in_shape[2:], kernel, stride, padding)
        else:
            span = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True))
            names = ("dilated kernel", "input")
            out_hw = window_output_hw(func, in_shape[2:], span, stride, padding, names)
        q = in_shape[1] * kernel[0] * kernel[1]
        fits_int32(func, **{"C*kH*kW": q, "OH*OW": out_hw[0] * out_hw[1]})
        plan = ConvPlan(
            in_shape[1:], weight_shape, dtype, stride, padding, dilation=dilation, groups=groups
        )
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[key] = plan
    return plan
