# cython: language_level=3
"""Element-wise kernels on flat, C-contiguous arrays: ReLU forward and backward, a sum, and
ReLU of a sum (a residual block's end, whose add is NumPy's otherwise: one thread and a
second pass for the ReLU).

One pass each, split over fastcnn's threads in blocks (NumPy's ufuncs take three passes and
two temporaries for the same ReLU and run on one thread). The per-block loops are plain
pointer loops with a select, not a branch, so the compiler vectorises them: random signs
cost no mispredictions. Contract as in _conv.pyx: the caller validates and allocates. Each
element depends only on itself: any thread count gives the same bits.
"""

from cython cimport floating
from cython.parallel cimport prange

from _relu_block cimport add_block, add_relu_block, relu_block, relu_grad_block

cdef enum:
    BLOCK = 16384  # elements per parallel work item: 64 KiB of float32


def relu_forward(const floating[::1] x, floating[::1] out, int n_threads):
    """out := relu(x), block by block"""
    cdef Py_ssize_t size = x.shape[0], blocks = (size + BLOCK - 1) // BLOCK, b, start
    with nogil:
        for b in prange(blocks, schedule="static", num_threads=n_threads):
            start = b * BLOCK
            relu_block(&x[start], &out[start], min(BLOCK, size - start))


def relu_backward(const floating[::1] grad_out, const floating[::1] out,
                  floating[::1] grad_x, int n_threads):
    """grad_x := grad_out where out is not <= 0, else 0 (torch's threshold_backward on the
    output: a NaN passes its gradient on)"""
    cdef Py_ssize_t size = out.shape[0], blocks = (size + BLOCK - 1) // BLOCK, b, start
    with nogil:
        for b in prange(blocks, schedule="static", num_threads=n_threads):
            start = b * BLOCK
            relu_grad_block(&grad_out[start], &out[start], &grad_x[start],
                            min(BLOCK, size - start))


def add_forward(const floating[::1] a, const floating[::1] b, floating[::1] out,
                int n_threads):
    """out := a + b, block by block"""
    cdef Py_ssize_t size = a.shape[0], blocks = (size + BLOCK - 1) // BLOCK, blk, start
    with nogil:
        for blk in prange(blocks, schedule="static", num_threads=n_threads):
            start = blk * BLOCK
            add_block(&a[start], &b[start], &out[start], min(BLOCK, size - start))


def add_relu_forward(const floating[::1] a, const floating[::1] b, floating[::1] out,
                     int n_threads):
    """out := relu(a + b), block by block: the bits of a + b, then relu_forward"""
    cdef Py_ssize_t size = a.shape[0], blocks = (size + BLOCK - 1) // BLOCK, blk, start
    with nogil:
        for blk in prange(blocks, schedule="static", num_threads=n_threads):
            start = blk * BLOCK
            add_relu_block(&a[start], &b[start], &out[start], min(BLOCK, size - start))
