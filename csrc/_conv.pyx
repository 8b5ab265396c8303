# cython: language_level=3
"""Convolution kernels: conv2d forward/backward and the NumPy book's im2col/col2im.

Contract (see fastcnn/functional.py, the only caller): arrays are C-contiguous and of one
floating dtype, shapes are consistent, outputs and workspaces are preallocated, and n_threads
>= 1. Nothing here validates. Every parallel loop runs over images (or fixed chunks of
images), so each output element is computed by the same instructions in the same order
whatever the thread count: results are bit-identical for any n_threads.

Names: N images, C input channels, H x W input, K filters of FH x FW, stride SH x SW,
padding PH x PW, dilation DH x DW, OH x OW output, G groups; Q = (C/G)*FH*FW weights per
filter, P = OH*OW; an image's column matrix has C*FH*FW rows (Q per group).
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memset

from _chunks cimport finish_chunks, start_chunk
from _conv_image cimport (
    METHOD_DEPTHWISE,
    METHOD_FILTER,
    METHOD_GEMM,
    METHOD_ROW,
    ConvGeometry,
    add_bias,
    cpu_isa,
    image_backward,
    image_forward,
    use_kernel_isa,
)

# The method codes of _conv_image.pxd, by name, for fastcnn/_conv_plan.py.
METHOD_CODES = {
    "gemm": METHOD_GEMM,
    "row": METHOD_ROW,
    "filter": METHOD_FILTER,
    "depthwise": METHOD_DEPTHWISE,
}


def select_kernel_isa(int max_level):
    """Run this module's C kernels on the best ISA copy the CPU has of at most max_level
    (csrc/cpu_dispatch.h's levels): (name, level, VL and GW of float32, VL and GW of
    float64) of it. Called by fastcnn/_isa.py only, never while a kernel runs."""
    return use_kernel_isa(max_level)


def cpu_isa_level():
    """The best ISA level this CPU runs and this build has a copy for."""
    return cpu_isa()


select_kernel_isa(3)  # the best copy, until fastcnn._isa applies FASTCNN_MAX_CPU_ISA


def conv2d_forward(ConvGeometry g, const floating[:, :, :, ::1] x,
                   const floating[:, :, :, ::1] weight, const floating[::1] bias,
                   const floating[:, ::1] packed, floating[:, ::1] workspace,
                   floating[:, ::1] columns, floating[:, :, :, ::1] out, int n_threads):
    """out[n] := weight (K x Q) . im2col(x[n]) (Q x P) + bias, image by image.

    g (a dict, made a ConvGeometry by Cython): the plan's geometry, methods and workspace
    offsets (_conv_image.pxd). packed: the weights packed for g.forward_method (None for
    METHOD_GEMM; _conv_image.image_forward). workspace: a row per thread. columns: None,
    or (N, C*FH*FW*P) to keep every image's column matrix for the backward pass (which then need
    not build them again); the workspace is unused then. bias may be None.
    """
    cdef Py_ssize_t N = x.shape[0], P = g.OH * g.OW
    cdef bint has_bias = bias is not None
    cdef const floating *bias_ptr = &bias[0] if has_bias else NULL
    cdef bint keep = columns is not None
    cdef const floating *packed_ptr = &packed[0, 0] if packed is not None else NULL
    cdef Py_ssize_t n
    cdef floating *col
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            col = &columns[n, 0] if keep else &workspace[threadid(), g.scratch_at]
            image_forward(&x[n, 0, 0, 0], &g, &weight[0, 0, 0, 0], packed_ptr, col,
                          &out[n, 0, 0, 0])
            if has_bias:
                add_bias(&out[n, 0, 0, 0], bias_ptr, g.K, P)


def conv2d_backward(ConvGeometry g, const floating[:, :, :, ::1] x,
                    const floating[:, ::1] weight_t, const floating[:, :, :, ::1] grad_out,
                    const floating[:, ::1] dx_packed, const floating[:, ::1] columns,
                    int chunk, floating[:, ::1] workspace, floating[:, ::1] grad_w_chunks,
                    floating[:, ::1] grad_b_chunks, floating[:, :, :, ::1] grad_x,
                    floating[::1] grad_w, floating[::1] grad_b, int n_threads):
    """grad_w := sum_n grad_out[n] . im2col(x[n])^T;  grad_b := sum_{n,p} grad_out[n, :, p];
    grad_x[n] := col2im(weight^T . grad_out[n]).

    g as in conv2d_forward; its weight_grad_method and KP say how the weight gradient is
    computed and its offsets lay out each workspace row (_conv_image.image_backward).
    weight_t is the weight as a (Q x K) matrix, transposed once by the caller; dx_packed:
    None, or the flipped kernels packed for the input gradient by the filter kernel, or the
    weight itself for METHOD_DEPTHWISE.
    grad_w is flat, in the layout the method gives: (K x Q), or (Q x KP) for METHOD_FILTER.
    columns: None, or the (N, C*FH*FW*P) column matrices kept by conv2d_forward.

    Images are taken in chunks of `chunk`; each chunk sums its images in order into its own
    row of grad_w_chunks / grad_b_chunks, and the chunks are then added in chunk order, so
    the sums do not depend on n_threads. grad_b and grad_x may be None (not wanted).
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t n_chunks = grad_w_chunks.shape[0], w_size = grad_w.shape[0]
    cdef bint want_b = grad_b is not None, want_x = grad_x is not None
    cdef bint have_columns = columns is not None
    cdef const floating *dx_packed_ptr = &dx_packed[0, 0] if dx_packed is not None else NULL
    cdef Py_ssize_t ch, n, start, stop
    cdef floating *dw
    cdef floating *db
    with nogil:
        for ch in prange(n_chunks, schedule="static", num_threads=n_threads):
            dw = &grad_w_chunks[ch, 0]
            db = &grad_b_chunks[ch, 0] if want_b else NULL
            start_chunk(dw, w_size, db, g.K)
            start = ch * chunk
            stop = start + chunk if start + chunk < N else N
            for n in range(start, stop):
                image_backward(&x[n, 0, 0, 0], &columns[n, 0] if have_columns else NULL, &g,
                               &weight_t[0, 0], &grad_out[n, 0, 0, 0], dx_packed_ptr,
                               &workspace[threadid(), 0], dw, db,
                               &grad_x[n, 0, 0, 0] if want_x else NULL)
        finish_chunks(&grad_w_chunks[0, 0] if n_chunks else NULL, n_chunks, w_size,
                      &grad_w[0], &grad_b_chunks[0, 0] if want_b and n_chunks else NULL, g.K,
                      &grad_b[0] if want_b else NULL, n_threads)


def im2col(const floating[:, :, :, ::1] x, int FH, int FW, int SH, int SW, int PH, int PW,
           int OH, int OW, floating[:, ::1] col, int n_threads):
    """col[(n*OH + oh)*OW + ow, (c*FH + i)*FW + j] := x[n, c, oh*SH + i - PH, ow*SW + j - PW]"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t n, c, i, j, oh, ow, h, w
    cdef floating *dst
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            for oh in range(OH):
                for ow in range(OW):
                    dst = &col[(n * OH + oh) * OW + ow, 0]
                    for c in range(C):
                        for i in range(FH):
                            h = oh * SH + i - PH
                            for j in range(FW):
                                w = ow * SW + j - PW
                                if 0 <= h < H and 0 <= w < W:
                                    dst[(c * FH + i) * FW + j] = x[n, c, h, w]
                                else:
                                    dst[(c * FH + i) * FW + j] = 0


def col2im(const floating[:, ::1] col, int FH, int FW, int SH, int SW, int PH, int PW,
           int OH, int OW, floating[:, :, :, ::1] x, int n_threads):
    """x := 0;
    x[n, c, oh*SH + i - PH, ow*SW + j - PW] += col[(n*OH + oh)*OW + ow, (c*FH + i)*FW + j]"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t n, c, i, j, oh, ow, h, w
    cdef const floating *src
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            memset(&x[n, 0, 0, 0], 0, C * H * W * sizeof(floating))
            for oh in range(OH):
                for ow in range(OW):
                    src = &col[(n * OH + oh) * OW + ow, 0]
                    for c in range(C):
                        for i in range(FH):
                            h = oh * SH + i - PH
                            if h < 0 or h >= H:
                                continue
                            for j in range(FW):
                                w = ow * SW + j - PW
                                if 0 <= w < W:
                                    x[n, c, h, w] += src[(c * FH + i) * FW + j]
