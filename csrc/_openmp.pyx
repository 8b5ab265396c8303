"""What the compiled kernels were built with: OpenMP on or off, debug checks on or off
(which ISA copy of the C kernels runs: fastcnn/_isa.py).

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

    /* The file of the library that omp_get_max_threads -- and so every OpenMP call of the
       kernels -- is bound to in this process (with PyTorch loaded first, that can be
       PyTorch's copy rather than fastcnn's own). NULL where it cannot be asked. */
    #if FASTCNN_HAS_OPENMP && (defined(__linux__) || defined(__APPLE__))
    #include <dlfcn.h>
    static const char *fastcnn_openmp_library(void) {
        Dl_info info;
        if (dladdr((void *)&omp_get_max_threads, &info) && info.dli_fname)
            return info.dli_fname;
        return NULL;
    }
    #else
    static const char *fastcnn_openmp_library(void) { return NULL; }
    #endif
    """
    bint FASTCNN_HAS_OPENMP
    bint FASTCNN_DEBUG_CYTHON


cdef extern from *:
    int omp_get_max_threads() nogil
    const char *fastcnn_openmp_library()


OPENMP_ENABLED = FASTCNN_HAS_OPENMP
DEBUG_CYTHON = FASTCNN_DEBUG_CYTHON


def openmp_max_threads():
    """omp_get_max_threads(): honours OMP_NUM_THREADS and threadpoolctl's OpenMP limit."""
    return omp_get_max_threads()


def openmp_library():
    """Path of the OpenMP runtime the kernels call into, or None if unknown / serial."""
    path = fastcnn_openmp_library()
    return None if path == NULL else path.decode(errors="replace")
