# cython: language_level=3
"""Fully connected (Linear) layer kernels: y = x.W^T + b and its gradients.

Why not NumPy's matmul: it runs NumPy's own multi-threaded BLAS, whose spinning threads
fight the convolution kernels' OpenMP threads (measured: a LeNet-5 step spent 65% of its
time in NumPy's BLAS thread server). Here the batch is cut into fixed chunks of rows, the
chunks are spread over OpenMP threads, and each chunk is one single-threaded GEMM; weight
and bias gradients are summed per chunk and the chunks then added in order, so results
are bit-identical for any thread count.

Names: N rows (batch), IN input features, OUT output features, chunk rows per chunk.
Contract as in _conv.pyx: the caller validates and allocates; nothing here validates.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset
from _chunks cimport sum_chunks
from _gemm cimport matmul_nn, matmul_nt_acc, matmul_tn_acc


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, int chunk, floating[:, ::1] out, int n_threads):
    """out[rows] := bias + x[rows] . weight^T, chunk by chunk of rows"""
    cdef Py_ssize_t N = x.shape[0], IN = x.shape[1], OUT = weight.shape[0]
    cdef Py_ssize_t n_chunks = (N + chunk - 1) // chunk
    cdef bint has_bias = bias is not None
    cdef Py_ssize_t ch, r, o, start, rows
    with nogil:
        for ch in prange(n_chunks, schedule="static", num_threads=n_threads):
            start = ch * chunk
            rows = chunk if start + chunk <= N else N - start
            for r in range(start, start + rows):
                for o in range(OUT):
                    out[r, o] = bias[o] if has_bias else 0
            matmul_nt_acc(<int> rows, <int> OUT, <int> IN, &x[start, 0], <int> IN,
                          &weight[0, 0], <int> IN, &out[start, 0], <int> OUT)


def linear_backward(const floating[:, ::1] x, const floating[:, ::1] weight,
                    const floating[:, ::1] grad_out, int chunk,
                    floating[:, ::1] grad_w_chunks, floating[:, ::1] grad_b_chunks,
                    floating[:, ::1] grad_x, floating[:, ::1] grad_w, floating[::1] grad_b,
                    int n_threads):
    """grad_x := grad_out . weight;  grad_w := sum over chunks of grad_out[rows]^T . x[rows];
    grad_b := sum over chunks of the column sums of grad_out[rows].  grad_x, grad_b may be None.
    """
    cdef Py_ssize_t N = x.shape[0], IN = x.shape[1], OUT = weight.shape[0]
    cdef Py_ssize_t n_chunks = grad_w_chunks.shape[0]
    cdef bint want_b = grad_b is not None, want_x = grad_x is not None
    cdef Py_ssize_t ch, r, o, start, rows
    with nogil:
        for ch in prange(n_chunks, schedule="static", num_threads=n_threads):
            start = ch * chunk
            rows = chunk if start + chunk <= N else N - start
            memset(&grad_w_chunks[ch, 0], 0, OUT * IN * sizeof(floating))
            matmul_tn_acc(<int> OUT, <int> IN, <int> rows, &grad_out[start, 0], <int> OUT,
                          &x[start, 0], <int> IN, &grad_w_chunks[ch, 0], <int> IN)
            if want_b:
                for o in range(OUT):
                    grad_b_chunks[ch, o] = 0
                for r in range(start, start + rows):
                    for o in range(OUT):
                        grad_b_chunks[ch, o] += grad_out[r, o]
            if want_x:
                matmul_nn(<int> rows, <int> IN, <int> OUT, &grad_out[start, 0], <int> OUT,
                          &weight[0, 0], <int> IN, &grad_x[start, 0], <int> IN)
        # (an empty batch has no chunks: the sums are then zeros, read from nowhere)
        sum_chunks(&grad_w_chunks[0, 0] if n_chunks else NULL, n_chunks, OUT * IN,
                   &grad_w[0, 0], n_threads)
        if want_b:
            sum_chunks(&grad_b_chunks[0, 0] if n_chunks else NULL, n_chunks, OUT, &grad_b[0], 1)
