# cython: language_level=3
"""Element-wise kernels on flat, C-contiguous arrays: ReLU forward and backward.

One pass each, split over fastcnn's threads (NumPy's ufuncs take three passes and two
temporaries for the same ReLU and run on one thread). Contract as in _conv.pyx: the caller
validates and allocates. Each element depends only on itself: any thread count gives the
same bits.
"""

from cython cimport floating
from cython.parallel cimport prange


def relu_forward(const floating[::1] x, floating[::1] out, int n_threads):
    """out := x where not (x <= 0), else 0  (NaN stays NaN, as torch.relu)"""
    cdef Py_ssize_t i
    with nogil:
        for i in prange(x.shape[0], schedule="static", num_threads=n_threads):
            out[i] = x[i] if not (x[i] <= 0) else 0


def relu_backward(const floating[::1] grad_out, const floating[::1] out,
                  floating[::1] grad_x, int n_threads):
    """grad_x := grad_out where not (out <= 0), else 0  (torch's threshold_backward on the
    output: a NaN passes its gradient on)"""
    cdef Py_ssize_t i
    with nogil:
        for i in prange(grad_out.shape[0], schedule="static", num_threads=n_threads):
            grad_x[i] = grad_out[i] if not (out[i] <= 0) else 0
