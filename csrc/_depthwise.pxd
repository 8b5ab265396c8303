# cython: language_level=3
"""One image's depthwise convolution (groups == C input channels, one input channel per
group, K = m*C filters: filter k reads input channel k // m), forward and backward.

A depthwise filter reads one plane, so the GEMM of the general path would be C products of
one row each. Here each channel's plane is padded once into the scratch and direct_conv.h's
depthwise kernels (one copy per ISA) run on it: the forward pass and the weight gradient,
at any stride (the plane stored as SW column phases, so that each tap reads unit-stride
rows: direct_conv_impl.h) and dilation. The input gradient is, at stride 1 with one filter
per channel, the same forward kernel on the padded output gradient with the taps flipped;
otherwise the adjoint loop below, on a plane in phases too.

Names as in _conv_image.pxd, plus the dilation DH x DW; the padded plane is
HP x WP = (H + 2*PH) x (W + 2*PW), WQ = ceil(WP / SW) values per row of a phase. Nothing
here validates or allocates: the callers hand in scratch of the sizes each function names.
"""

from cython cimport floating
from libc.string cimport memcpy, memset


cdef extern from "direct_conv.h" nogil:
    void depthwise_forward_f32 "fastcnn_depthwise_forward_f32"(
        const float *plane, Py_ssize_t WQ, Py_ssize_t phase, const float *w, Py_ssize_t FH,
        Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH, Py_ssize_t DW,
        float *out, Py_ssize_t OH, Py_ssize_t OW)
    void depthwise_forward_f64 "fastcnn_depthwise_forward_f64"(
        const double *plane, Py_ssize_t WQ, Py_ssize_t phase, const double *w, Py_ssize_t FH,
        Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH, Py_ssize_t DW,
        double *out, Py_ssize_t OH, Py_ssize_t OW)
    void depthwise_weight_grad_f32 "fastcnn_depthwise_weight_grad_f32"(
        const float *plane, Py_ssize_t WQ, Py_ssize_t phase, const float *dout,
        Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH,
        Py_ssize_t DW, Py_ssize_t OH, Py_ssize_t OW, float *dw)
    void depthwise_weight_grad_f64 "fastcnn_depthwise_weight_grad_f64"(
        const double *plane, Py_ssize_t WQ, Py_ssize_t phase, const double *dout,
        Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH,
        Py_ssize_t DW, Py_ssize_t OH, Py_ssize_t OW, double *dw)


cdef inline void plane_forward(const floating *plane, Py_ssize_t WQ, Py_ssize_t phase,
                               const floating *w, Py_ssize_t FH, Py_ssize_t FW,
                               Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH, Py_ssize_t DW,
                               floating *out, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """out (OH, OW) := sum_{i,j} w[i, j] * padded[oh*SH + i*DH, ow*SW + j*DW]"""
    if floating is float:
        depthwise_forward_f32(plane, WQ, phase, w, FH, FW, SH, SW, DH, DW, out, OH, OW)
    else:
        depthwise_forward_f64(plane, WQ, phase, w, FH, FW, SH, SW, DH, DW, out, OH, OW)


cdef inline void plane_weight_grad(const floating *plane, Py_ssize_t WQ, Py_ssize_t phase,
                                   const floating *dout, Py_ssize_t FH, Py_ssize_t FW,
                                   Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH, Py_ssize_t DW,
                                   Py_ssize_t OH, Py_ssize_t OW,
                                   floating *dw) noexcept nogil:
    """dw[i, j] += sum_{oh,ow} dout[oh, ow] * padded[oh*SH + i*DH, ow*SW + j*DW]"""
    if floating is float:
        depthwise_weight_grad_f32(plane, WQ, phase, dout, FH, FW, SH, SW, DH, DW, OH, OW, dw)
    else:
        depthwise_weight_grad_f64(plane, WQ, phase, dout, FH, FW, SH, SW, DH, DW, OH, OW, dw)


cdef inline Py_ssize_t phase_width(Py_ssize_t WP, Py_ssize_t SW) noexcept nogil:
    """WQ: values per row of one of the SW column phases of a plane WP wide."""
    return (WP + SW - 1) // SW


cdef inline void split_columns(const floating *row, Py_ssize_t W, floating *even,
                               floating *odd) noexcept nogil:
    """even[q] := row[2q], odd[q] := row[2q + 1]: a row of W values split into its two
    column phases. Both in one loop, which gcc vectorises with shuffles; the general
    phase loop, one strided load per value, took most of a stride-2 depthwise layer's
    time (MobileNetCIFAR's)."""
    cdef Py_ssize_t q
    for q in range(W // 2):
        even[q] = row[2 * q]
        odd[q] = row[2 * q + 1]
    if W % 2:
        even[W // 2] = row[W - 1]


cdef inline void merge_columns(const floating *even, const floating *odd, Py_ssize_t W,
                               floating *row) noexcept nogil:
    """row[2q] := even[q], row[2q + 1] := odd[q]: split_columns undone."""
    cdef Py_ssize_t q
    for q in range(W // 2):
        row[2 * q] = even[q]
        row[2 * q + 1] = odd[q]
    if W % 2:
        row[W - 1] = even[W // 2]


cdef inline void pad_plane(const floating *x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t PH,
                           Py_ssize_t PW, Py_ssize_t SW, floating *plane) noexcept nogil:
    """plane := the plane x (H, W) with its zero border of PH, PW, as SW column phases:
    phase p's row r, at plane + (p*HP + r)*WQ, holds the padded row r's columns p, p + SW,
    p + 2*SW, ... (SW*HP*WQ values; at SW == 1 the padded plane itself)."""
    cdef Py_ssize_t h, q, p, first, count, HP = H + 2 * PH, WQ = phase_width(W + 2 * PW, SW)
    cdef const floating *src
    cdef floating *dst
    memset(plane, 0, SW * HP * WQ * sizeof(floating))
    if SW == 1:
        for h in range(H):
            memcpy(plane + (h + PH) * WQ + PW, x + h * W, W * sizeof(floating))
        return
    if SW == 2:
        for h in range(H):
            split_columns(x + h * W, W, plane + ((PW % 2) * HP + h + PH) * WQ + PW // 2,
                          plane + ((1 - PW % 2) * HP + h + PH) * WQ + (PW + 1) // 2)
        return
    for p in range(SW):
        first = ((p - PW) % SW + SW) % SW  # the first input column of phase p
        count = (W - first + SW - 1) // SW if first < W else 0
        for h in range(H):
            src = x + h * W + first
            dst = plane + (p * HP + h + PH) * WQ + (first + PW) // SW
            for q in range(count):
                dst[q] = src[q * SW]


cdef inline void unpad_plane(const floating *plane, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t SW,
                             floating *x) noexcept nogil:
    """x (H, W) := the interior of a padded plane stored as pad_plane stores it"""
    cdef Py_ssize_t h, q, p, first, count, HP = H + 2 * PH, WQ = phase_width(W + 2 * PW, SW)
    cdef const floating *src
    cdef floating *dst
    if SW == 1:
        for h in range(H):
            memcpy(x + h * W, plane + (h + PH) * WQ + PW, W * sizeof(floating))
        return
    if SW == 2:
        for h in range(H):
            merge_columns(plane + ((PW % 2) * HP + h + PH) * WQ + PW // 2,
                          plane + ((1 - PW % 2) * HP + h + PH) * WQ + (PW + 1) // 2, W,
                          x + h * W)
        return
    for p in range(SW):
        first = ((p - PW) % SW + SW) % SW
        count = (W - first + SW - 1) // SW if first < W else 0
        for h in range(H):
            src = plane + (p * HP + h + PH) * WQ + (first + PW) // SW
            dst = x + h * W + first
            for q in range(count):
                dst[q * SW] = src[q]


cdef inline void plane_input_grad(
        const floating *dout, const floating *w, Py_ssize_t FH, Py_ssize_t FW,
        Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH, Py_ssize_t DW, Py_ssize_t OH,
        Py_ssize_t OW, Py_ssize_t WQ, Py_ssize_t phase, floating *dplane) noexcept nogil:
    """padded[oh*SH + i*DH, ow*SW + j*DW] += w[i, j] * dout[oh, ow], the forward's adjoint,
    on a padded plane stored in column phases as pad_plane stores it (the caller zeroes
    it): there consecutive ow are consecutive values, so the loop over ow vectorises at
    any stride."""
    cdef Py_ssize_t oh, ow, i, j, p, q, step_p = DW % SW, step_q = DW // SW
    cdef floating tap
    cdef const floating *d
    cdef floating *top
    cdef floating *dst
    for oh in range(OH):
        d = dout + oh * OW
        for i in range(FH):
            top = dplane + (oh * SH + i * DH) * WQ
            p = q = 0  # column j*DW is column q of phase p: walked, as a division per tap
            for j in range(FW):  # would cost more than the tap's adds
                tap = w[i * FW + j]
                dst = top + p * phase + q
                for ow in range(OW):
                    dst[ow] += tap * d[ow]
                p += step_p
                q += step_q
                if p >= SW:
                    p -= SW
                    q += 1


cdef inline void depthwise_image_forward(
        const floating *x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t K,
        Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH,
        Py_ssize_t PW, Py_ssize_t DH, Py_ssize_t DW, Py_ssize_t OH, Py_ssize_t OW,
        const floating *weight, floating *plane, floating *out) noexcept nogil:
    """out[k] (OH, OW) := filter k (FH, FW of weight) over input plane k // (K/C) of x.
    plane: scratch of SW*(H + 2*PH)*WQ values."""
    cdef Py_ssize_t k, m = K // C, taps = FH * FW, HP = H + 2 * PH
    cdef Py_ssize_t WQ = phase_width(W + 2 * PW, SW)
    for k in range(K):
        if k % m == 0:
            pad_plane(x + (k // m) * H * W, H, W, PH, PW, SW, plane)
        plane_forward(plane, WQ, HP * WQ, weight + k * taps, FH, FW, SH, SW, DH, DW,
                      out + k * OH * OW, OH, OW)


cdef inline bint input_grad_by_gather(Py_ssize_t C, Py_ssize_t K, Py_ssize_t FH,
                                      Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                                      Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t DH,
                                      Py_ssize_t DW) noexcept nogil:
    """Whether the input gradient is the forward kernel on dout padded by (kernel span - 1
    - padding) with the taps flipped: at stride 1, one filter per channel, and padding
    within the span (no cropping). A gather: each input pixel summed once, in registers,
    where the adjoint loop adds into each pixel FH*FW times."""
    return (SH == 1 and SW == 1 and K == C and PH <= (FH - 1) * DH
            and PW <= (FW - 1) * DW)


cdef inline bint input_grad_by_phases(Py_ssize_t C, Py_ssize_t K, Py_ssize_t WP,
                                      Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH,
                                      Py_ssize_t DW) noexcept nogil:
    """Whether the input gradient is gathered phase by phase (plane_input_grad_by_phases):
    at a stride above 1, one filter per channel, no dilation, and phases at least 16
    values wide. Measured (AMD EPYC, AVX2, 2 threads, 64 images, 3x3 at stride 2, the
    whole backward pass, ms, the adjoint loop vs by phases): 64 channels at 32x32 4.2 vs
    3.1; 128 at 16x16 (phases 9 wide) 2.7 vs 2.9; 256 at 8x8 (5 wide) 3.1 vs 4.6: there
    the per-phase calls cost more than the adds they save."""
    return ((SH > 1 or SW > 1) and K == C and DH == 1 and DW == 1
            and phase_width(WP, SW) >= 16)


cdef inline void plane_input_grad_by_phases(
        const floating *dout, const floating *w, Py_ssize_t H, Py_ssize_t W, Py_ssize_t FH,
        Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
        Py_ssize_t OH, Py_ssize_t OW, floating *taps, floating *scratch,
        floating *dx) noexcept nogil:
    """dx (H, W) := the forward's adjoint for one filter w (FH, FW) at stride SH x SW, as
    a gather. Padded pixel (SH*u + a, SW*q + p) takes the taps i = a + SH*m, j = p + SW*n
    times dout[u - m, q - n]: for each phase (a, p), a stride-1 correlation of the padded
    output gradient with those taps flipped, which direct_conv.h's forward kernel computes
    in registers. The adjoint loop instead added into each pixel once per tap (the phases'
    split and merge and its read-modify-write took most of MobileNetCIFAR's stride-2
    depthwise backward). taps: FH*FW values. scratch: the SH*SW phases of the padded input
    gradient, UA = ceil(HP/SH) rows of WQ each, then the padded output gradient, UA + EH
    rows of WQ + EW (fastcnn/_conv_plan.py's ConvPlan sizes it: the formula's one home)."""
    cdef Py_ssize_t HP = H + 2 * PH, WP = W + 2 * PW, WQ = phase_width(WP, SW)
    cdef Py_ssize_t UA = (HP + SH - 1) // SH, EH = (FH - 1) // SH, EW = (FW - 1) // SW
    cdef Py_ssize_t a, p, m, n, rows, cols, h, u, first, count, q, DPW = WQ + EW
    cdef floating *phases = scratch
    cdef floating *dpad = scratch + SH * SW * UA * WQ
    cdef floating *out
    cdef const floating *src
    memset(dpad, 0, (UA + EH) * DPW * sizeof(floating))
    for h in range(OH):
        memcpy(dpad + (h + EH) * DPW + EW, dout + h * OW, OW * sizeof(floating))
    for a in range(SH):
        rows = (FH - a + SH - 1) // SH if a < FH else 0  # taps of this row phase
        for p in range(SW):
            cols = (FW - p + SW - 1) // SW if p < FW else 0
            out = phases + (a * SW + p) * UA * WQ
            if rows == 0 or cols == 0:
                memset(out, 0, UA * WQ * sizeof(floating))
                continue
            for m in range(rows):  # this phase's taps, flipped
                for n in range(cols):
                    taps[m * cols + n] = w[(a + SH * (rows - 1 - m)) * FW
                                           + p + SW * (cols - 1 - n)]
            plane_forward(dpad + (EH - rows + 1) * DPW + EW - cols + 1, DPW, 0, taps, rows,
                          cols, 1, 1, 1, 1, out, UA, WQ)
    # dx[h, x] is padded pixel (h + PH, x + PW): row u of row phase a, column phase p
    for h in range(H):
        a = (h + PH) % SH
        u = (h + PH) // SH
        if SW == 2:
            merge_columns(phases + ((a * SW + PW % 2) * UA + u) * WQ + PW // 2,
                          phases + ((a * SW + 1 - PW % 2) * UA + u) * WQ + (PW + 1) // 2, W,
                          dx + h * W)
            continue
        for p in range(SW):
            first = ((p - PW) % SW + SW) % SW
            count = (W - first + SW - 1) // SW if first < W else 0
            src = phases + ((a * SW + p) * UA + u) * WQ + (first + PW) // SW
            for q in range(count):
                dx[h * W + first + q * SW] = src[q]


cdef inline void depthwise_image_backward(
        const floating *x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t K,
        Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH,
        Py_ssize_t PW, Py_ssize_t DH, Py_ssize_t DW, Py_ssize_t OH, Py_ssize_t OW,
        const floating *weight, const floating *dout, floating *scratch, floating *dw,
        floating *dx) noexcept nogil:
    """One image's weight gradient, dw (K, FH*FW) += sum over the image's pixels, and,
    unless dx is NULL, its input gradient dx (C, H, W) := the forward's adjoint.
    scratch: SW*(H + 2*PH)*WQ values (the padded plane, in phases), FH*FW (flipped taps),
    then the largest of SW*(H + 2*PH)*WQ (the padded input gradient in phases),
    (H + (FH-1)*DH)*(W + (FW-1)*DW) (the padded output gradient of input_grad_by_gather)
    and what plane_input_grad_by_phases needs (input_grad_by_phases)."""
    cdef Py_ssize_t k, c, r, t, m = K // C, WP = W + 2 * PW, HP = H + 2 * PH
    cdef Py_ssize_t WQ = phase_width(WP, SW), taps = FH * FW, P = OH * OW
    cdef Py_ssize_t EH = (FH - 1) * DH - PH, EW = (FW - 1) * DW - PW
    cdef bint gather = input_grad_by_gather(C, K, FH, FW, SH, SW, PH, PW, DH, DW)
    cdef bint by_phases = input_grad_by_phases(C, K, WP, SH, SW, DH, DW)
    cdef floating *plane = scratch
    cdef floating *flipped = scratch + SW * HP * WQ
    cdef floating *dplane = flipped + taps
    for c in range(C):
        pad_plane(x + c * H * W, H, W, PH, PW, SW, plane)
        for r in range(m):
            k = c * m + r
            plane_weight_grad(plane, WQ, HP * WQ, dout + k * P, FH, FW, SH, SW, DH, DW, OH,
                              OW, dw + k * taps)
        if dx == NULL:
            continue
        if gather:
            for t in range(taps):
                flipped[t] = weight[c * taps + taps - 1 - t]
            pad_plane(dout + c * P, OH, OW, EH, EW, 1, dplane)
            plane_forward(dplane, OW + 2 * EW, 0, flipped, FH, FW, 1, 1, DH, DW,
                          dx + c * H * W, H, W)
            continue
        if by_phases:
            plane_input_grad_by_phases(dout + c * P, weight + c * taps, H, W, FH, FW, SH, SW,
                                       PH, PW, OH, OW, flipped, dplane, dx + c * H * W)
            continue
        memset(dplane, 0, SW * HP * WQ * sizeof(floating))
        for r in range(m):
            k = c * m + r
            plane_input_grad(dout + k * P, weight + k * taps, FH, FW, SH, SW, DH, DW, OH, OW,
                             WQ, HP * WQ, dplane)
        unpad_plane(dplane, H, W, PH, PW, SW, dx + c * H * W)
