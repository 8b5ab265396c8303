# cython: language_level=3
"""One image's depthwise convolution (groups == C input channels, one input channel per
group, K = m*C filters: filter k reads input channel k // m), forward and backward.

A depthwise filter reads one plane, so the GEMM of the general path would be C products of
one row each; here each output row is instead summed tap by tap straight from the padded
plane, in loops over the output column that the compiler vectorises (stride 1).

Names as in _conv_image.pxd, plus the dilation DH x DW; the padded plane is
HP x WP = (H + 2*PH) x (W + 2*PW). Nothing here validates or allocates: the callers hand
in scratch of the sizes each function names.
"""

from cython cimport floating
from libc.string cimport memcpy, memset


cdef inline void pad_plane(const floating *x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t PH,
                           Py_ssize_t PW, floating *plane) noexcept nogil:
    """plane (H + 2*PH, W + 2*PW) := the plane x (H, W) with its zero border"""
    cdef Py_ssize_t h, WP = W + 2 * PW
    memset(plane, 0, (H + 2 * PH) * WP * sizeof(floating))
    for h in range(H):
        memcpy(plane + (h + PH) * WP + PW, x + h * W, W * sizeof(floating))


cdef inline void depthwise_row_3x3(const floating *top, Py_ssize_t WP, Py_ssize_t DH,
                                   Py_ssize_t DW, const floating *w, floating *out,
                                   Py_ssize_t OW) noexcept nogil:
    """out[ow] := sum_{i,j} w[i*3 + j] * top[i*DH*WP + ow + j*DW], stride 1: the nine
    taps summed in registers, in (i, j) order, one pass over the row."""
    cdef const floating *r0 = top
    cdef const floating *r1 = top + DH * WP
    cdef const floating *r2 = top + 2 * DH * WP
    cdef floating w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4]
    cdef floating w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8]
    cdef Py_ssize_t ow, d2 = 2 * DW
    for ow in range(OW):
        out[ow] = (w0 * r0[ow] + w1 * r0[ow + DW] + w2 * r0[ow + d2]
                   + w3 * r1[ow] + w4 * r1[ow + DW] + w5 * r1[ow + d2]
                   + w6 * r2[ow] + w7 * r2[ow + DW] + w8 * r2[ow + d2])


cdef inline void depthwise_plane_forward(const floating *plane, Py_ssize_t WP,
                                         const floating *w, Py_ssize_t FH, Py_ssize_t FW,
                                         Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH,
                                         Py_ssize_t DW, floating *out, Py_ssize_t OH,
                                         Py_ssize_t OW) noexcept nogil:
    """out (OH, OW) := sum_{i,j} w[i, j] * plane[oh*SH + i*DH, ow*SW + j*DW]"""
    cdef Py_ssize_t oh, ow, i, j
    cdef floating tap
    cdef floating *row
    cdef const floating *src
    for oh in range(OH):
        row = out + oh * OW
        if FH == 3 and FW == 3 and SW == 1:
            depthwise_row_3x3(plane + oh * SH * WP, WP, DH, DW, w, row, OW)
            continue
        memset(row, 0, OW * sizeof(floating))
        for i in range(FH):
            for j in range(FW):
                tap = w[i * FW + j]
                src = plane + (oh * SH + i * DH) * WP + j * DW
                if SW == 1:
                    for ow in range(OW):
                        row[ow] += tap * src[ow]
                else:
                    for ow in range(OW):
                        row[ow] += tap * src[ow * SW]


cdef inline void depthwise_image_forward(
        const floating *x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t K,
        Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH,
        Py_ssize_t PW, Py_ssize_t DH, Py_ssize_t DW, Py_ssize_t OH, Py_ssize_t OW,
        const floating *weight, floating *plane, floating *out) noexcept nogil:
    """out[k] (OH, OW) := filter k (FH, FW of weight) over input plane k // (K/C) of x.
    plane: scratch of (H + 2*PH) * (W + 2*PW) values."""
    cdef Py_ssize_t k, m = K // C, WP = W + 2 * PW, taps = FH * FW
    for k in range(K):
        if k % m == 0:
            pad_plane(x + (k // m) * H * W, H, W, PH, PW, plane)
        depthwise_plane_forward(plane, WP, weight + k * taps, FH, FW, SH, SW, DH, DW,
                                out + k * OH * OW, OH, OW)


cdef inline floating lane_total(const floating *values, Py_ssize_t length) noexcept nogil:
    """sum of values[0:length] in a fixed order: 8 running partial sums, then pairwise
    (independent adds, where one running sum would be a chain)."""
    cdef floating part[8]
    cdef Py_ssize_t i, lane, full = length - length % 8
    for lane in range(8):
        part[lane] = 0
    for i in range(0, full, 8):
        for lane in range(8):
            part[lane] = part[lane] + values[i + lane]
    for i in range(full, length):
        part[i - full] = part[i - full] + values[i]
    for lane in range(4):
        part[lane] = part[lane] + part[lane + 4]
    return (part[0] + part[2]) + (part[1] + part[3])


cdef inline void depthwise_plane_weight_grad(
        const floating *plane, Py_ssize_t WP, const floating *dout, Py_ssize_t FH,
        Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH, Py_ssize_t DW,
        Py_ssize_t OH, Py_ssize_t OW, floating *acc, floating *dw) noexcept nogil:
    """dw[i, j] += sum_{oh,ow} dout[oh, ow] * plane[oh*SH + i*DH, ow*SW + j*DW], tap by
    tap: the products summed down each output column into acc (OW values of scratch), two
    rows at a time, in loops over ow the compiler vectorises (a dot product would be one
    chain of dependent adds); then acc in lane_total's order. A fixed order."""
    cdef Py_ssize_t oh, ow, i, j, pairs = OH - OH % 2
    cdef const floating *d0
    cdef const floating *d1
    cdef const floating *s0
    cdef const floating *s1
    for i in range(FH):
        for j in range(FW):
            memset(acc, 0, OW * sizeof(floating))
            for oh in range(0, pairs, 2):
                d0 = dout + oh * OW
                d1 = d0 + OW
                s0 = plane + (oh * SH + i * DH) * WP + j * DW
                s1 = s0 + SH * WP
                if SW == 1:
                    for ow in range(OW):
                        acc[ow] = acc[ow] + (d0[ow] * s0[ow] + d1[ow] * s1[ow])
                else:
                    for ow in range(OW):
                        acc[ow] = acc[ow] + (d0[ow] * s0[ow * SW] + d1[ow] * s1[ow * SW])
            if pairs < OH:
                d0 = dout + pairs * OW
                s0 = plane + (pairs * SH + i * DH) * WP + j * DW
                for ow in range(OW):
                    acc[ow] = acc[ow] + d0[ow] * s0[ow * SW]
            dw[i * FW + j] += lane_total(acc, OW)


cdef inline void depthwise_plane_input_grad(
        const floating *dout, const floating *w, Py_ssize_t FH, Py_ssize_t FW,
        Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t DH, Py_ssize_t DW, Py_ssize_t OH,
        Py_ssize_t OW, Py_ssize_t WP, floating *dplane) noexcept nogil:
    """dplane[oh*SH + i*DH, ow*SW + j*DW] += w[i, j] * dout[oh, ow]: the forward's adjoint
    on the padded plane (the caller zeroes it and keeps its interior)."""
    cdef Py_ssize_t oh, ow, i, j
    cdef floating tap
    cdef const floating *d
    cdef floating *dst
    for oh in range(OH):
        d = dout + oh * OW
        for i in range(FH):
            for j in range(FW):
                tap = w[i * FW + j]
                dst = dplane + (oh * SH + i * DH) * WP + j * DW
                if SW == 1:
                    for ow in range(OW):
                        dst[ow] += tap * d[ow]
                else:
                    for ow in range(OW):
                        dst[ow * SW] += tap * d[ow]


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
    scratch: (H + 2*PH)*(W + 2*PW) values (the padded plane), then OW (the weight
    gradient's column sums), FH*FW (flipped taps) and the larger of that plane and
    (H + (FH-1)*DH)*(W + (FW-1)*DW) (the padded input gradient, or the padded output
    gradient of input_grad_by_gather)."""
    cdef Py_ssize_t k, c, r, h, t, m = K // C, WP = W + 2 * PW, HP = H + 2 * PH
    cdef Py_ssize_t taps = FH * FW, P = OH * OW
    cdef Py_ssize_t EH = (FH - 1) * DH - PH, EW = (FW - 1) * DW - PW
    cdef bint gather = input_grad_by_gather(C, K, FH, FW, SH, SW, PH, PW, DH, DW)
    cdef floating *plane = scratch
    cdef floating *acc = scratch + HP * WP
    cdef floating *flipped = acc + OW
    cdef floating *dplane = flipped + taps
    for c in range(C):
        pad_plane(x + c * H * W, H, W, PH, PW, plane)
        for r in range(m):
            k = c * m + r
            depthwise_plane_weight_grad(plane, WP, dout + k * P, FH, FW, SH, SW, DH, DW,
                                        OH, OW, acc, dw + k * taps)
        if dx == NULL:
            continue
        if gather:
            for t in range(taps):
                flipped[t] = weight[c * taps + taps - 1 - t]
            pad_plane(dout + c * P, OH, OW, EH, EW, dplane)
            depthwise_plane_forward(dplane, OW + 2 * EW, flipped, FH, FW, 1, 1, DH, DW,
                                    dx + c * H * W, H, W)
            continue
        memset(dplane, 0, HP * WP * sizeof(floating))
        for r in range(m):
            k = c * m + r
            depthwise_plane_input_grad(dout + k * P, weight + k * taps, FH, FW, SH, SW,
                                       DH, DW, OH, OW, WP, dplane)
        for h in range(H):
            memcpy(dx + (c * H + h) * W, dplane + (h + PH) * WP + PW, W * sizeof(floating))
