# cython: language_level=3
"""Deterministic batch reductions: per-chunk partial sums added in chunk order."""

from cython cimport floating
from cython.parallel cimport prange


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
