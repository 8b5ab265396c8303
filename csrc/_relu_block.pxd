# cython: language_level=3
"""ReLU (and a sum, alone or before a ReLU) on one block of a flat array, shared by
_elementwise.pyx and _fused.pyx.

Plain pointer loops with a select, not a branch, so the compiler vectorises them: random
signs cost no mispredictions. NaN stays NaN, as in torch.relu.
"""

from cython cimport floating


cdef inline void relu_block(const floating *x, floating *out, Py_ssize_t n) noexcept nogil:
    """out := x where not (x <= 0), else 0  (NaN stays NaN, as torch.relu)"""
    cdef Py_ssize_t i
    cdef floating value
    for i in range(n):
        value = x[i]
        out[i] = 0 if value <= 0 else value


cdef inline void relu_grad_block(const floating *grad, const floating *out, floating *grad_x,
                                 Py_ssize_t n) noexcept nogil:
    """grad_x := grad where not (out <= 0), else 0"""
    cdef Py_ssize_t i
    cdef floating g, o
    for i in range(n):
        g = grad[i]  # both loaded unconditionally: the select then vectorises
        o = out[i]
        grad_x[i] = 0 if o <= 0 else g


cdef inline void add_block(const floating *a, const floating *b, floating *out,
                           Py_ssize_t n) noexcept nogil:
    """out := a + b"""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = a[i] + b[i]


cdef inline void add_relu_block(const floating *a, const floating *b, floating *out,
                                Py_ssize_t n) noexcept nogil:
    """out := relu(a + b): the sum rounded to the dtype, then relu_block's select"""
    cdef Py_ssize_t i
    cdef floating value
    for i in range(n):
        value = a[i] + b[i]
        out[i] = 0 if value <= 0 else value
