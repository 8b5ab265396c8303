# cython: language_level=3
"""Deterministic batch reductions: per-chunk partial sums added in chunk order."""

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset


cdef inline void sum_chunks(const floating *chunks, Py_ssize_t n_chunks, Py_ssize_t size,
                            floating *out, int n_threads) noexcept nogil:
    """out[i] := chunks[0, i] + chunks[1, i] + ... + chunks[n_chunks - 1, i], left to right.

    chunks is (n_chunks, size), row-major. Threads split i, never the chunk order, so the
    sums are the same bits for any n_threads.
    """
    cdef Py_ssize_t i, j
    cdef floating total
    for i in prange(size, schedule="static", num_threads=n_threads):
        total = 0
        for j in range(n_chunks):
            total = total + chunks[j * size + i]
        out[i] = total


cdef inline void start_chunk(floating *grad_w, Py_ssize_t w_size, floating *grad_b,
                             Py_ssize_t b_size) noexcept nogil:
    """Zero one chunk's partial weight (and, unless NULL, bias) gradient sums."""
    memset(grad_w, 0, w_size * sizeof(floating))
    if grad_b != NULL:
        memset(grad_b, 0, b_size * sizeof(floating))


cdef inline void finish_chunks(floating *w_chunks, Py_ssize_t n_chunks, Py_ssize_t w_size,
                               floating *grad_w, floating *b_chunks, Py_ssize_t b_size,
                               floating *grad_b, int n_threads) noexcept nogil:
    """grad_w, grad_b (unless NULL) := their chunks' sums, in chunk order. An empty batch
    has no chunks: the sums are then zeros, read from nowhere."""
    sum_chunks(w_chunks if n_chunks else NULL, n_chunks, w_size, grad_w, n_threads)
    if grad_b != NULL:
        sum_chunks(b_chunks if n_chunks else NULL, n_chunks, b_size, grad_b, 1)
