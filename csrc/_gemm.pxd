# cython: language_level=3
"""Row-major matrix products on one thread, through scipy.linalg.cython_blas.

Callers run these inside their own OpenMP threads; functional.py holds the BLAS library at
one thread meanwhile, so the two thread pools never compete. Row-major C = A.B is the
column-major product C^T = B^T.A^T, which is how each is handed to BLAS.
"""

from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


cdef inline void gemm(char transa, char transb, int m, int n, int k,
                      floating alpha, floating *a, int lda, floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """C := alpha * op(A).op(B) + beta * C  (column-major BLAS; A, B only read)"""
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)


cdef inline void matmul_nn(int M, int N, int K, const floating *A, int lda,
                           const floating *B, int ldb, floating *C, int ldc) noexcept nogil:
    """C[M x N] := A[M x K] . B[K x N]"""
    gemm(c'N', c'N', N, M, K, 1, <floating *> B, ldb, <floating *> A, lda, 0, C, ldc)


cdef inline void gemv_t(int m, int n, floating *a, int lda, floating *x,
                        floating *y) noexcept nogil:
    """y[n] := op(A)^T . x + y for column-major A (m x n): BLAS's matrix-vector product"""
    cdef char trans = c'T'
    cdef int one = 1
    cdef floating alpha = 1, beta = 1
    if floating is float:
        sgemv(&trans, &m, &n, &alpha, a, &lda, x, &one, &beta, y, &one)
    else:
        dgemv(&trans, &m, &n, &alpha, a, &lda, x, &one, &beta, y, &one)


cdef inline void matmul_nt_acc(int M, int Q, int P, const floating *A, int lda,
                               const floating *B, int ldb, floating *C,
                               int ldc) noexcept nogil:
    """C[M x Q] += A[M x P] . B[Q x P]^T

    One row (a Linear layer at batch 1) is BLAS's matrix-vector product: its GEMM packs
    all of B first: LeNet-5's fc1 (400 -> 120) took 38 us that way at batch 1, 5 us as a
    matrix-vector product (AMD EPYC, one thread, 2026-12-01)."""
    if M == 1:
        gemv_t(P, Q, <floating *> B, ldb, <floating *> A, C)
        return
    gemm(c'T', c'N', Q, M, P, 1, <floating *> B, ldb, <floating *> A, lda, 1, C, ldc)


cdef inline void matmul_tn_acc(int M, int Q, int P, const floating *A, int lda,
                               const floating *B, int ldb, floating *C,
                               int ldc) noexcept nogil:
    """C[M x Q] += A[P x M]^T . B[P x Q]"""
    gemm(c'N', c'T', Q, M, P, 1, <floating *> B, ldb, <floating *> A, lda, 1, C, ldc)
