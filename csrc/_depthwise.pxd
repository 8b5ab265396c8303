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


cdef inline void depthwise_image_backward(
        const floating *x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t K,
        Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH,
        Py_ssize_t PW, Py_ssize_t DH, Py_ssize_t DW, Py_ssize_t OH, Py_ssize_t OW,
        const floating *weight, const floating *dout, floating *scratch, floating *dw,
        floating *dx) noexcept nogil:
    """One image's weight gradient, dw (K, FH*FW) += sum over the image's pixels, and,
    unless dx is NULL, its input gradient dx (C, H, W) := the forward's adjoint.
    scratch: SW*(H + 2*PH)*WQ values (the padded plane, in phases), FH*FW (flipped taps),
    then the larger of SW*(H + 2*PH)*WQ and (H + (FH-1)*DH)*(W + (FW-1)*DW) (the padded
    input gradient in phases, or the padded output gradient of input_grad_by_gather)."""
    cdef Py_ssize_t k, c, r, t, m = K // C, WP = W + 2 * PW, HP = H + 2 * PH
    cdef Py_ssize_t WQ = phase_width(WP, SW), taps = FH * FW, P = OH * OW
    cdef Py_ssize_t EH = (FH - 1) * DH - PH, EW = (FW - 1) * DW - PW
    cdef bint gather = input_grad_by_gather(C, K, FH, FW, SH, SW, PH, PW, DH, DW)
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
        memset(dplane, 0, SW * HP * WQ * sizeof(floating))
        for r in range(m):
            k = c * m + r
            plane_input_grad(dout + k * P, weight + k * taps, FH, FW, SH, SW, DH, DW, OH, OW,
                             WQ, HP * WQ, dplane)
        unpad_plane(dplane, H, W, PH, PW, SW, dx + c * H * W)
