# cython: language_level=3
"""Pooling kernels: max-pool with a stored argmax, average pool; forward and backward.

Contract as in _conv.pyx: the caller (fastcnn/functional.py) validates, allocates and picks
n_threads; nothing here validates. Each (image, channel) plane is handled by one thread from
start to end, so the scatter-adds of the backward passes never race and their order is fixed.

Names: N images, C channels, H x W input, KH x KW window, stride SH x SW, padding PH x PW
(padding is never a candidate for the max and only counts in the average when
count_include_pad), OH x OW output.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset

from _pool_plane cimport max_pool_plane, max_pool_plane_backward


def max_pool2d_forward(const floating[:, :, :, ::1] x, int KH, int KW, int SH, int SW,
                       int PH, int PW, floating[:, :, :, ::1] out,
                       int64_t[:, :, :, ::1] argmax, int n_threads):
    """out[n, c], argmax[n, c] := max_pool_plane(x[n, c]) for every plane.

    PyTorch's CPU rules: ties go to the first maximum in row-major order, a NaN beats
    everything and the last NaN is taken; padding is never a candidate.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t plane
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=n_threads):
            max_pool_plane(&x[0, 0, 0, 0] + plane * H * W, H, W, KH, KW, SH, SW, PH, PW,
                           &out[0, 0, 0, 0] + plane * OH * OW,
                           &argmax[0, 0, 0, 0] + plane * OH * OW, OH, OW)


def max_pool2d_backward(const floating[:, :, :, ::1] grad_out,
                        const int64_t[:, :, :, ::1] argmax,
                        floating[:, :, :, ::1] grad_x, int n_threads):
    """grad_x := 0; grad_x[n, c].flat[argmax[n, c, oh, ow]] += grad_out[n, c, oh, ow]"""
    cdef Py_ssize_t N = grad_x.shape[0], C = grad_x.shape[1]
    cdef Py_ssize_t H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t OH = grad_out.shape[2], OW = grad_out.shape[3]
    cdef Py_ssize_t plane
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=n_threads):
            max_pool_plane_backward(&grad_out[0, 0, 0, 0] + plane * OH * OW,
                                    &argmax[0, 0, 0, 0] + plane * OH * OW, OH * OW,
                                    &grad_x[0, 0, 0, 0] + plane * H * W, H * W)


cdef inline void avg_window(Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t H, Py_ssize_t W,
                            int KH, int KW, int SH, int SW, int PH, int PW,
                            bint count_include_pad, Py_ssize_t *h0, Py_ssize_t *h1,
                            Py_ssize_t *w0, Py_ssize_t *w1, Py_ssize_t *divisor) noexcept nogil:
    """The window of output (oh, ow) clipped to x, and what its sum is divided by
    (PyTorch's rule)."""
    cdef Py_ssize_t hs = oh * SH - PH, ws = ow * SW - PW
    cdef Py_ssize_t he = min(hs + KH, H + PH), we = min(ws + KW, W + PW)
    cdef Py_ssize_t padded_size = (he - hs) * (we - ws)
    h0[0] = max(hs, 0)
    w0[0] = max(ws, 0)
    h1[0] = min(he, H)
    w1[0] = min(we, W)
    if count_include_pad:
        divisor[0] = padded_size
    else:
        divisor[0] = (h1[0] - h0[0]) * (w1[0] - w0[0])


cdef void avg_pool_plane(const floating *x, Py_ssize_t H, Py_ssize_t W, int KH, int KW,
                         int SH, int SW, int PH, int PW, bint count_include_pad,
                         floating *out, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """out[oh, ow] := (sum of x over the window of (oh, ow)) / divisor, for one plane"""
    cdef Py_ssize_t oh, ow, h, w, h0, h1, w0, w1, divisor
    cdef floating total
    for oh in range(OH):
        for ow in range(OW):
            avg_window(oh, ow, H, W, KH, KW, SH, SW, PH, PW, count_include_pad,
                       &h0, &h1, &w0, &w1, &divisor)
            total = 0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    total = total + x[h * W + w]
            out[oh * OW + ow] = total / divisor


cdef void avg_pool_plane_backward(const floating *grad_out, Py_ssize_t OH, Py_ssize_t OW,
                                  int KH, int KW, int SH, int SW, int PH, int PW,
                                  bint count_include_pad, floating *grad_x, Py_ssize_t H,
                                  Py_ssize_t W) noexcept nogil:
    """grad_x := 0; grad_x[h, w] += grad_out[oh, ow] / divisor over each window, for one plane"""
    cdef Py_ssize_t oh, ow, h, w, h0, h1, w0, w1, divisor
    cdef floating share
    memset(grad_x, 0, H * W * sizeof(floating))
    for oh in range(OH):
        for ow in range(OW):
            avg_window(oh, ow, H, W, KH, KW, SH, SW, PH, PW, count_include_pad,
                       &h0, &h1, &w0, &w1, &divisor)
            share = grad_out[oh * OW + ow] / divisor
            for h in range(h0, h1):
                for w in range(w0, w1):
                    grad_x[h * W + w] += share


def avg_pool2d_forward(const floating[:, :, :, ::1] x, int KH, int KW, int SH, int SW,
                       int PH, int PW, bint count_include_pad,
                       floating[:, :, :, ::1] out, int n_threads):
    """out[n, c] := avg_pool_plane(x[n, c]) for every plane"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t plane
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=n_threads):
            avg_pool_plane(&x[0, 0, 0, 0] + plane * H * W, H, W, KH, KW, SH, SW, PH, PW,
                           count_include_pad, &out[0, 0, 0, 0] + plane * OH * OW, OH, OW)


def avg_pool2d_backward(const floating[:, :, :, ::1] grad_out, int KH, int KW, int SH, int SW,
                        int PH, int PW, bint count_include_pad,
                        floating[:, :, :, ::1] grad_x, int n_threads):
    """grad_x[n, c] := avg_pool_plane_backward(grad_out[n, c]) for every plane"""
    cdef Py_ssize_t N = grad_x.shape[0], C = grad_x.shape[1]
    cdef Py_ssize_t H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t OH = grad_out.shape[2], OW = grad_out.shape[3]
    cdef Py_ssize_t plane
    with nogil:
        for plane in prange(N * C, schedule="static", num_threads=n_threads):
            avg_pool_plane_backward(&grad_out[0, 0, 0, 0] + plane * OH * OW, OH, OW, KH, KW,
                                    SH, SW, PH, PW, count_include_pad,
                                    &grad_x[0, 0, 0, 0] + plane * H * W, H, W)
