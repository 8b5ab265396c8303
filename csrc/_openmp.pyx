"""What the compiled kernels were built with: OpenMP on or off, debug checks on or off.

The C preprocessor answers, not a file written by setup.py, so the answer is always the
truth about the binary that is loaded.
"""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCNN_HAS_OPENMP 1
    #else
    #define FASTCNN_HAS_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    #endif
    """
    bint FASTCNN_HAS_OPENMP
    bint FASTCNN_DEBUG_CYTHON
    int omp_get_max_threads() nogil


OPENMP_ENABLED = FASTCNN_HAS_OPENMP
DEBUG_CYTHON = FASTCNN_DEBUG_CYTHON


def openmp_max_threads():
    """omp_get_max_threads(): honours OMP_NUM_THREADS and threadpoolctl's OpenMP limit."""
    return omp_get_max_threads()
