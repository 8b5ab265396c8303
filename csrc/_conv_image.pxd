# cython: language_level=3
"""One image's convolution pieces, shared by _conv.pyx and _fused.pyx: im2col/col2im of an
image in the column layout the GEMMs use, bias, and the image's share of the backward pass.

Names as in _conv.pyx: C input channels, H x W input, K filters of FH x FW, stride SH x SW,
padding PH x PW, dilation DH x DW, OH x OW output, G groups (each of C/G input channels and
K/G filters); Q = (C/G)*FH*FW, a filter's weights; an image's column matrix has C*FH*FW
rows, Q per group, group g's starting at row g*Q; P = OH*OW. Nothing here validates or
allocates.
"""

from cython cimport floating
from libc.string cimport memcpy, memset

from _depthwise cimport depthwise_image_backward, depthwise_image_forward
from _gemm cimport matmul_nn, matmul_nt_acc

# How an image's convolution (or its weight gradient) is computed: im2col and a GEMM per
# group (any groups and dilation), direct_conv.h's row kernel (stride 1, wide rows) or
# filter kernel (many filters), both for one group and no dilation, or _depthwise.pxd's
# kernels (one input channel per group, forward and the whole backward). The one home of
# these codes: _conv.pyx hands them to Python as METHOD_CODES, by name, for
# fastcnn/_conv_plan.py, which picks them.
cdef enum:
    METHOD_GEMM = 0
    METHOD_ROW = 1
    METHOD_FILTER = 2
    METHOD_DEPTHWISE = 3


# One image's convolution as fastcnn/_conv_plan.py's ConvPlan decides it, passed to the
# kernels as one struct (from the plan's dict, field by field by name): C input channels of
# H x W, K filters of FH x FW, stride SH x SW, padding PH x PW, dilation DH x DW, an OH x OW
# output, G groups.
# Offsets, in values from the start of a thread's workspace row, of: the image's scratch
# (its column matrix or padded copy: scratch values); in the backward pass, its output
# gradient transposed for the filter kernel (P*KP values), then the input gradient's
# scratch (weight^T . dout, Q*P values, or dout padded).
cdef struct ConvGeometry:
    Py_ssize_t C, H, W, K, FH, FW, SH, SW, PH, PW, OH, OW, DH, DW, G
    int forward_method      # METHOD_* of the forward pass
    int weight_grad_method  # METHOD_* of the weight gradient
    Py_ssize_t KP           # METHOD_FILTER's weight gradient: K padded to its block; else 0
    Py_ssize_t scratch_at, dout_t_at, dx_at


# A max-pool window over the convolution's output (the fused kernel): KH x KW, stride
# TH x TW, padding UH x UW.
cdef struct PoolWindow:
    Py_ssize_t KH, KW, TH, TW, UH, UW


cdef extern from "direct_conv.h" nogil:
    ctypedef struct fastcnn_kernel_table:
        const char *name
        int level
        Py_ssize_t vl_f32
        Py_ssize_t vl_f64
        Py_ssize_t gw_f32
        Py_ssize_t gw_f64
    # the copy of the kernels this module calls (one per ISA: direct_conv.h)
    const fastcnn_kernel_table *select_kernels "fastcnn_select_kernels"(int max_level)
    int cpu_isa "fastcnn_cpu_isa"()
    void row_forward_f32 "fastcnn_row_forward_f32"(
        const float *xpad, Py_ssize_t C, Py_ssize_t HP, Py_ssize_t WP, const float *wpack,
        Py_ssize_t K, Py_ssize_t FH, Py_ssize_t FW, float *out, Py_ssize_t OH, Py_ssize_t OW)
    void row_forward_f64 "fastcnn_row_forward_f64"(
        const double *xpad, Py_ssize_t C, Py_ssize_t HP, Py_ssize_t WP, const double *wpack,
        Py_ssize_t K, Py_ssize_t FH, Py_ssize_t FW, double *out, Py_ssize_t OH, Py_ssize_t OW)
    void filter_forward_f32 "fastcnn_filter_forward_f32"(
        const float *xpad, Py_ssize_t C, Py_ssize_t HP, Py_ssize_t WP, const float *wt,
        Py_ssize_t K, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
        float *out, Py_ssize_t OH, Py_ssize_t OW)
    void filter_forward_f64 "fastcnn_filter_forward_f64"(
        const double *xpad, Py_ssize_t C, Py_ssize_t HP, Py_ssize_t WP, const double *wt,
        Py_ssize_t K, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
        double *out, Py_ssize_t OH, Py_ssize_t OW)
    void filter_weight_grad_f32 "fastcnn_filter_weight_grad_f32"(
        const float *xpad, Py_ssize_t C, Py_ssize_t HP, Py_ssize_t WP, const float *dout_t,
        Py_ssize_t KP, Py_ssize_t K, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH,
        Py_ssize_t SW, Py_ssize_t OH, Py_ssize_t OW, float *dw_t)
    void filter_weight_grad_f64 "fastcnn_filter_weight_grad_f64"(
        const double *xpad, Py_ssize_t C, Py_ssize_t HP, Py_ssize_t WP, const double *dout_t,
        Py_ssize_t KP, Py_ssize_t K, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH,
        Py_ssize_t SW, Py_ssize_t OH, Py_ssize_t OW, double *dw_t)
    void col2im_f32 "fastcnn_col2im_f32"(
        const float *col, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t FH,
        Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
        Py_ssize_t OH, Py_ssize_t OW, float *x)
    void col2im_f64 "fastcnn_col2im_f64"(
        const double *col, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t FH,
        Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
        Py_ssize_t OH, Py_ssize_t OW, double *x)
    void transpose_padded_f32 "fastcnn_transpose_padded_f32"(
        const float *a, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld, float *a_t)
    void transpose_padded_f64 "fastcnn_transpose_padded_f64"(
        const double *a, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld, double *a_t)
    void row_weight_grad_f32 "fastcnn_row_weight_grad_f32"(
        const float *xpad, Py_ssize_t C, Py_ssize_t HP, Py_ssize_t WP, const float *dout,
        Py_ssize_t K, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t OH, Py_ssize_t OW, float *dw)
    void row_weight_grad_f64 "fastcnn_row_weight_grad_f64"(
        const double *xpad, Py_ssize_t C, Py_ssize_t HP, Py_ssize_t WP, const double *dout,
        Py_ssize_t K, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t OH, Py_ssize_t OW, double *dw)


cdef inline tuple use_kernel_isa(int max_level):
    """Make this module's kernels the best copy the CPU has of at most max_level
    (cpu_dispatch.h's levels); return (name, level, VL and GW of float32, VL and GW of
    float64) of it. Never while a kernel of this module runs."""
    cdef const fastcnn_kernel_table *table = select_kernels(max_level)
    return (table.name.decode(), table.level, table.vl_f32, table.gw_f32, table.vl_f64,
            table.gw_f64)


cdef inline void row_forward(const floating *xpad, Py_ssize_t C, Py_ssize_t HP,
                             Py_ssize_t WP, const floating *packed, Py_ssize_t K,
                             Py_ssize_t FH, Py_ssize_t FW, floating *out, Py_ssize_t OH,
                             Py_ssize_t OW) noexcept nogil:
    if floating is float:
        row_forward_f32(xpad, C, HP, WP, packed, K, FH, FW, out, OH, OW)
    else:
        row_forward_f64(xpad, C, HP, WP, packed, K, FH, FW, out, OH, OW)


cdef inline void row_weight_grad(const floating *xpad, Py_ssize_t C, Py_ssize_t HP,
                                 Py_ssize_t WP, const floating *dout, Py_ssize_t K,
                                 Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t OH, Py_ssize_t OW,
                                 floating *dw) noexcept nogil:
    if floating is float:
        row_weight_grad_f32(xpad, C, HP, WP, dout, K, FH, FW, OH, OW, dw)
    else:
        row_weight_grad_f64(xpad, C, HP, WP, dout, K, FH, FW, OH, OW, dw)


cdef inline void filter_forward(const floating *xpad, Py_ssize_t C, Py_ssize_t HP,
                                Py_ssize_t WP, const floating *packed, Py_ssize_t K,
                                Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                                floating *out, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    if floating is float:
        filter_forward_f32(xpad, C, HP, WP, packed, K, FH, FW, SH, SW, out, OH, OW)
    else:
        filter_forward_f64(xpad, C, HP, WP, packed, K, FH, FW, SH, SW, out, OH, OW)


cdef inline void filter_weight_grad(const floating *xpad, Py_ssize_t C, Py_ssize_t HP,
                                    Py_ssize_t WP, const floating *dout_t, Py_ssize_t KP,
                                    Py_ssize_t K, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH,
                                    Py_ssize_t SW, Py_ssize_t OH, Py_ssize_t OW,
                                    floating *dw_t) noexcept nogil:
    if floating is float:
        filter_weight_grad_f32(xpad, C, HP, WP, dout_t, KP, K, FH, FW, SH, SW, OH, OW, dw_t)
    else:
        filter_weight_grad_f64(xpad, C, HP, WP, dout_t, KP, K, FH, FW, SH, SW, OH, OW, dw_t)


cdef inline Py_ssize_t first_valid(Py_ssize_t offset, Py_ssize_t stride) noexcept nogil:
    """Smallest o >= 0 with o*stride + offset >= 0."""
    if offset >= 0:
        return 0
    return (-offset + stride - 1) // stride


cdef inline Py_ssize_t end_valid(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                                 Py_ssize_t count) noexcept nogil:
    """One past the largest o < count with o*stride + offset < size."""
    cdef Py_ssize_t end
    if size - offset <= 0:
        return 0
    end = (size - offset + stride - 1) // stride
    return end if end < count else count


cdef inline void im2col_image(const floating *x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                              Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t DH, Py_ssize_t DW,
                              Py_ssize_t OH, Py_ssize_t OW, floating *col) noexcept nogil:
    """col[(c*FH + i)*FW + j, oh*OW + ow] := x[c, oh*SH + i*DH - PH, ow*SW + j*DW - PW]
    (0 off x)"""
    cdef Py_ssize_t c, i, j, oh, ow, h, ow_lo, ow_hi
    cdef floating *row
    cdef const floating *src
    for c in range(C):
        for i in range(FH):
            for j in range(FW):
                row = col + ((c * FH + i) * FW + j) * OH * OW
                ow_lo = first_valid(j * DW - PW, SW)
                ow_hi = end_valid(j * DW - PW, SW, W, OW)
                for oh in range(OH):
                    h = oh * SH + i * DH - PH
                    if h < 0 or h >= H or ow_lo >= ow_hi:
                        memset(row + oh * OW, 0, OW * sizeof(floating))
                        continue
                    src = x + (c * H + h) * W + (j * DW - PW)
                    for ow in range(ow_lo):
                        row[oh * OW + ow] = 0
                    if SW == 1:  # the common case: a unit-stride loop the compiler vectorises
                        for ow in range(ow_lo, ow_hi):
                            row[oh * OW + ow] = src[ow]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            row[oh * OW + ow] = src[ow * SW]
                    for ow in range(ow_hi, OW):
                        row[oh * OW + ow] = 0


cdef inline void dilated_col2im(const floating *col, Py_ssize_t C, Py_ssize_t H,
                                Py_ssize_t W, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH,
                                Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t DH,
                                Py_ssize_t DW, Py_ssize_t OH, Py_ssize_t OW,
                                floating *x) noexcept nogil:
    """col2im_image with any dilation, in Cython: direct_conv.h's col2im has none, and a
    dilated convolution is rare enough not to need one copy per ISA."""
    cdef Py_ssize_t c, i, j, oh, ow, h, ow_lo, ow_hi
    cdef const floating *src
    cdef floating *dst
    memset(x, 0, C * H * W * sizeof(floating))
    for c in range(C):
        for i in range(FH):
            for j in range(FW):
                ow_lo = first_valid(j * DW - PW, SW)
                ow_hi = end_valid(j * DW - PW, SW, W, OW)
                for oh in range(OH):
                    h = oh * SH + i * DH - PH
                    if h < 0 or h >= H:
                        continue
                    src = col + ((c * FH + i) * FW + j) * OH * OW + oh * OW
                    dst = x + (c * H + h) * W + (j * DW - PW)
                    for ow in range(ow_lo, ow_hi):
                        dst[ow * SW] += src[ow]


cdef inline void col2im_image(const floating *col, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                              Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t DH, Py_ssize_t DW,
                              Py_ssize_t OH, Py_ssize_t OW, floating *x) noexcept nogil:
    """x := 0;
    x[c, oh*SH + i*DH - PH, ow*SW + j*DW - PW] += col[(c*FH + i)*FW + j, oh*OW + ow]
    (direct_conv.h's fastcnn_col2im without dilation)"""
    if DH != 1 or DW != 1:
        dilated_col2im(col, C, H, W, FH, FW, SH, SW, PH, PW, DH, DW, OH, OW, x)
    elif floating is float:
        col2im_f32(col, C, H, W, FH, FW, SH, SW, PH, PW, OH, OW, x)
    else:
        col2im_f64(col, C, H, W, FH, FW, SH, SW, PH, PW, OH, OW, x)


cdef inline void pad_image(const floating *x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t PH, Py_ssize_t PW, floating *xpad) noexcept nogil:
    """xpad (C, H + 2*PH, W + 2*PW) := x with its zero border, for the direct kernels"""
    cdef Py_ssize_t c, h, HP = H + 2 * PH, WP = W + 2 * PW
    memset(xpad, 0, C * HP * WP * sizeof(floating))
    for c in range(C):
        for h in range(H):
            memcpy(xpad + (c * HP + h + PH) * WP + PW, x + (c * H + h) * W,
                   W * sizeof(floating))


cdef inline bint is_pointwise(const ConvGeometry *g) noexcept nogil:
    """A 1x1 kernel at stride 1 without padding: the image (C x P) is its own column
    matrix, so im2col would only copy it and col2im only copy back."""
    return g.FH == 1 and g.FW == 1 and g.SH == 1 and g.SW == 1 and g.PH == 0 and g.PW == 0


cdef inline void image_forward(const floating *x, const ConvGeometry *g,
                               const floating *weight, const floating *packed,
                               floating *scratch, floating *out) noexcept nogil:
    """out (K x P) := weight (K x Q) . im2col(x), group by group, by g.forward_method:
    METHOD_GEMM: im2col into scratch (C*FH*FW*P; it may be the image's kept column matrix;
    unused for a pointwise convolution) and a GEMM per group; METHOD_ROW / METHOD_FILTER
    (one group, no dilation): direct_conv.h's kernels on the padded image, built in scratch,
    with the weights `packed` as that header says; METHOD_DEPTHWISE: _depthwise.pxd's,
    with a padded plane in scratch."""
    cdef int P = g.OH * g.OW, Q = (g.C // g.G) * g.FH * g.FW, KG = g.K // g.G
    cdef Py_ssize_t group, HP = g.H + 2 * g.PH, WP = g.W + 2 * g.PW
    cdef const floating *col = x
    if g.forward_method == METHOD_DEPTHWISE:
        depthwise_image_forward(x, g.C, g.H, g.W, g.K, g.FH, g.FW, g.SH, g.SW, g.PH, g.PW,
                                g.DH, g.DW, g.OH, g.OW, weight, scratch, out)
        return
    if g.forward_method == METHOD_GEMM:
        if not is_pointwise(g):
            im2col_image(x, g.C, g.H, g.W, g.FH, g.FW, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW,
                         g.OH, g.OW, scratch)
            col = scratch
        for group in range(g.G):
            matmul_nn(KG, P, Q, weight + group * KG * Q, Q, col + group * Q * P, P,
                      out + group * KG * P, P)
        return
    pad_image(x, g.C, g.H, g.W, g.PH, g.PW, scratch)
    if g.forward_method == METHOD_ROW:
        row_forward(scratch, g.C, HP, WP, packed, g.K, g.FH, g.FW, out, g.OH, g.OW)
    else:
        filter_forward(scratch, g.C, HP, WP, packed, g.K, g.FH, g.FW, g.SH, g.SW, out,
                       g.OH, g.OW)


cdef inline floating row_sum(const floating *row, Py_ssize_t length) noexcept nogil:
    """sum of row[0:length] in a fixed order: 16 running partial sums (partial l takes
    values l, l + 16, ...), then the partials pairwise. One running sum would be a chain of
    dependent adds (LeNet conv1's bias gradient took 30% of its backward pass that way);
    16 independent ones vectorise."""
    cdef floating part[16]
    cdef Py_ssize_t i, lane, half, full = length - length % 16
    for lane in range(16):
        part[lane] = 0
    for i in range(0, full, 16):
        for lane in range(16):
            part[lane] = part[lane] + row[i + lane]
    for i in range(full, length):
        part[i - full] = part[i - full] + row[i]
    half = 8
    while half > 0:
        for lane in range(half):
            part[lane] = part[lane] + part[lane + half]
        half = half // 2
    return part[0]


cdef inline void add_bias(floating *out, const floating *bias, Py_ssize_t K,
                          Py_ssize_t P) noexcept nogil:
    """out[k, p] += bias[k]"""
    cdef Py_ssize_t k, p
    for k in range(K):
        for p in range(P):
            out[k * P + p] += bias[k]


cdef inline void transpose_padded(const floating *a, Py_ssize_t rows, Py_ssize_t cols,
                                  Py_ssize_t ld, floating *a_t) noexcept nogil:
    """a_t (cols x ld) := a (rows x cols) transposed, zero in columns rows .. ld-1
    (direct_conv.h's fastcnn_transpose_padded)"""
    if floating is float:
        transpose_padded_f32(a, rows, cols, ld, a_t)
    else:
        transpose_padded_f64(a, rows, cols, ld, a_t)


cdef inline void image_backward(const floating *x, const floating *col,
                                const ConvGeometry *g, const floating *weight_t,
                                const floating *dout, const floating *dx_packed,
                                floating *row, floating *dw, floating *db,
                                floating *dx) noexcept nogil:
    """One image's gradients from its output gradient dout (K x P), group by group:
    dw += dout . col^T;  db (K) += row sums of dout;  dx := col2im(weight^T . dout).

    row: the thread's workspace row, laid out as g's offsets say. By g.weight_grad_method:
    METHOD_GEMM: col is the image's column matrix if kept from the forward pass, or NULL:
    it is then built in the scratch (neither for a pointwise convolution: x is its column
    matrix); dw is (K x Q). METHOD_ROW: direct_conv.h's row kernel (stride 1) on the padded
    image, built in the scratch; dw is (K x Q). METHOD_FILTER: its filter kernel, likewise;
    dw is transposed, (Q x KP), and dout is transposed first (at dout_t_at), blocked as
    direct_conv.h says. METHOD_DEPTHWISE: _depthwise.pxd's backward, dw (K x Q) and dx
    together, in the scratch, with dx_packed the weight itself (K x Q).
    At dx_at: weight^T . dout (C*FH*FW x P) when dx is wanted, or with dx_packed (the
    flipped kernels blocked for the filter kernel), dout padded.
    db and dx may be NULL (not wanted); weight_t is the weight as a (Q x K) matrix.
    """
    cdef int P = g.OH * g.OW, Q = (g.C // g.G) * g.FH * g.FW, KG = g.K // g.G
    cdef Py_ssize_t k, group, HP = g.H + 2 * g.PH, WP = g.W + 2 * g.PW
    # the filter kernel's input gradient pads dout by the kernel size less one less PH, PW
    cdef Py_ssize_t EH = g.FH - 1 - g.PH, EW = g.FW - 1 - g.PW
    cdef floating *scratch = row + g.scratch_at
    cdef floating *dout_t = row + g.dout_t_at
    cdef floating *dcol = row + g.dx_at
    cdef bint pointwise = is_pointwise(g)
    if g.weight_grad_method == METHOD_DEPTHWISE:
        depthwise_image_backward(x, g.C, g.H, g.W, g.K, g.FH, g.FW, g.SH, g.SW, g.PH, g.PW,
                                 g.DH, g.DW, g.OH, g.OW, dx_packed, dout, scratch, dw, dx)
    elif g.weight_grad_method == METHOD_GEMM:
        if pointwise:
            col = x
        elif col == NULL:
            im2col_image(x, g.C, g.H, g.W, g.FH, g.FW, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW,
                         g.OH, g.OW, scratch)
            col = scratch
        for group in range(g.G):
            matmul_nt_acc(KG, Q, P, dout + group * KG * P, P, col + group * Q * P, P,
                          dw + group * KG * Q, Q)
    else:
        pad_image(x, g.C, g.H, g.W, g.PH, g.PW, scratch)
    if g.weight_grad_method == METHOD_ROW:
        row_weight_grad(scratch, g.C, HP, WP, dout, g.K, g.FH, g.FW, g.OH, g.OW, dw)
    elif g.weight_grad_method == METHOD_FILTER:
        transpose_padded(dout, g.K, P, g.KP, dout_t)
        filter_weight_grad(scratch, g.C, HP, WP, dout_t, g.KP, g.K, g.FH, g.FW, g.SH, g.SW,
                           g.OH, g.OW, dw)
    if db != NULL:
        for k in range(g.K):
            db[k] += row_sum(dout + k * P, P)
    if dx == NULL or g.weight_grad_method == METHOD_DEPTHWISE:
        return
    if dx_packed != NULL:
        # stride 1: dx is dout, padded by the kernel size less one less the padding,
        # convolved with the kernels flipped and their channels swapped (dx_packed)
        pad_image(dout, g.K, g.OH, g.OW, EH, EW, dcol)
        filter_forward(dcol, g.K, g.OH + 2 * EH, g.OW + 2 * EW, dx_packed, g.C, g.FH, g.FW,
                       1, 1, dx, g.H, g.W)
        return
    if pointwise:
        dcol = dx  # the column matrix's adjoint is the image itself
    for group in range(g.G):
        matmul_nn(Q, P, KG, weight_t + group * KG, <int> g.K, dout + group * KG * P, P,
                  dcol + group * Q * P, P)
    if not pointwise:
        col2im_image(dcol, g.C, g.H, g.W, g.FH, g.FW, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW,
                     g.OH, g.OW, dx)
