# cython: language_level=3
"""conv2d -> ReLU -> max-pool as one kernel, forward and backward.

Why: run as three layers, the convolution writes its whole (N, K, OH, OW) output to memory,
ReLU reads and writes it again, and the pool reads it once more (and their backward passes
do the same with the gradients): for LeNet-5's first layer that is 5 MB per pass, far
outside the cache. Fused, each image's convolution output lives only in a per-thread
buffer (K*P values, 19 KB for LeNet's conv1) and is pooled while it is still in cache; only
the pooled output and its argmax reach memory. The backward pass rebuilds the image's
output gradient in the same buffer from the pooled gradient.

The arithmetic is that of the three separate kernels, operation for operation (the same
im2col, GEMM, bias, ReLU, pool plane and per-image backward), so results are bit-identical
to conv2d, relu and max_pool2d run one after the other, for any n_threads.

Contract as in _conv.pyx: the caller (fastcnn/_conv_plan.py) has validated and allocated.
Names: N images; the convolution's geometry g and the pool window as _conv_image.pxd's
ConvGeometry and PoolWindow give them (P = OH*OW); POH x POW the pooled output.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t

from _chunks cimport finish_chunks, start_chunk
from _conv_image cimport (
    ConvGeometry,
    PoolWindow,
    add_bias,
    image_backward,
    image_forward,
    use_kernel_isa,
)
from _pool_plane cimport max_pool_plane, relu_max_pool_plane_backward
from _relu_block cimport relu_block


def select_kernel_isa(int max_level):
    """As _conv.select_kernel_isa, for this module's copy of the kernels."""
    return use_kernel_isa(max_level)


select_kernel_isa(3)  # the best copy, until fastcnn._isa applies FASTCNN_MAX_CPU_ISA


def conv2d_relu_max_pool2d_forward(
        ConvGeometry g, PoolWindow pool, const floating[:, :, :, ::1] x,
        const floating[:, :, :, ::1] weight, const floating[::1] bias,
        const floating[:, ::1] packed, floating[:, ::1] workspace,
        floating[:, ::1] columns, floating[:, :, :, ::1] out,
        int64_t[:, :, :, ::1] argmax, int n_threads):
    """out[n], argmax[n] := max_pool(relu(weight . im2col(x[n]) + bias)), image by image.

    g, packed, workspace and columns as in _conv.conv2d_forward, except that each
    workspace row holds the image's convolution output (K*P) before its scratch (at
    g.scratch_at; not needed when columns is given). pool: the window over the (OH, OW)
    convolution output.
    """
    cdef Py_ssize_t N = x.shape[0], P = g.OH * g.OW
    cdef Py_ssize_t POH = out.shape[2], POW = out.shape[3]
    cdef bint has_bias = bias is not None
    cdef const floating *bias_ptr = &bias[0] if has_bias else NULL
    cdef bint keep = columns is not None
    cdef const floating *packed_ptr = &packed[0, 0] if packed is not None else NULL
    cdef Py_ssize_t n, k
    cdef floating *conv
    cdef floating *col
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            conv = &workspace[threadid(), 0]
            col = &columns[n, 0] if keep else conv + g.scratch_at
            image_forward(&x[n, 0, 0, 0], &g, &weight[0, 0, 0, 0], packed_ptr, col, conv)
            if has_bias:
                add_bias(conv, bias_ptr, g.K, P)
            relu_block(conv, conv, g.K * P)
            for k in range(g.K):
                max_pool_plane(conv + k * P, g.OH, g.OW, pool.KH, pool.KW, pool.TH, pool.TW,
                               pool.UH, pool.UW, &out[n, k, 0, 0], &argmax[n, k, 0, 0], POH,
                               POW)


def conv2d_relu_max_pool2d_backward(
        ConvGeometry g, const floating[:, :, :, ::1] x, const floating[:, ::1] weight_t,
        const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] out,
        const int64_t[:, :, :, ::1] argmax, const floating[:, ::1] dx_packed,
        const floating[:, ::1] columns, int chunk, floating[:, ::1] workspace,
        floating[:, ::1] grad_w_chunks, floating[:, ::1] grad_b_chunks,
        floating[:, :, :, ::1] grad_x, floating[::1] grad_w, floating[::1] grad_b,
        int n_threads):
    """Gradients of conv2d_relu_max_pool2d_forward, from the pooled output's gradient
    grad_out, the pooled output out and its argmax.

    Per image, the convolution's output gradient (K x P) is rebuilt at the start of the
    image's workspace row (the pool's scatter, masked where the ReLU output was not
    positive) and then taken as in _conv.conv2d_backward, whose arguments these are; g's
    offsets place the rest of that backward pass's workspace after it. grad_b and grad_x
    may be None.
    """
    cdef Py_ssize_t N = x.shape[0], P = g.OH * g.OW
    cdef Py_ssize_t POH = out.shape[2], POW = out.shape[3]
    cdef Py_ssize_t n_chunks = grad_w_chunks.shape[0], w_size = grad_w.shape[0]
    cdef bint want_b = grad_b is not None, want_x = grad_x is not None
    cdef bint have_columns = columns is not None
    cdef const floating *dx_packed_ptr = &dx_packed[0, 0] if dx_packed is not None else NULL
    cdef Py_ssize_t ch, n, k, start, stop
    cdef floating *dconv
    cdef floating *dw
    cdef floating *db
    with nogil:
        for ch in prange(n_chunks, schedule="static", num_threads=n_threads):
            dconv = &workspace[threadid(), 0]
            dw = &grad_w_chunks[ch, 0]
            db = &grad_b_chunks[ch, 0] if want_b else NULL
            start_chunk(dw, w_size, db, g.K)
            start = ch * chunk
            stop = start + chunk if start + chunk < N else N
            for n in range(start, stop):
                for k in range(g.K):
                    relu_max_pool_plane_backward(&grad_out[n, k, 0, 0], &out[n, k, 0, 0],
                                                 &argmax[n, k, 0, 0], POH * POW,
                                                 dconv + k * P, P)
                image_backward(&x[n, 0, 0, 0], &columns[n, 0] if have_columns else NULL, &g,
                               &weight_t[0, 0], dconv, dx_packed_ptr, dconv, dw, db,
                               &grad_x[n, 0, 0, 0] if want_x else NULL)
        finish_chunks(&grad_w_chunks[0, 0] if n_chunks else NULL, n_chunks, w_size,
                      &grad_w[0], &grad_b_chunks[0, 0] if want_b and n_chunks else NULL, g.K,
                      &grad_b[0] if want_b else NULL, n_threads)
