/* Direct (im2col-free) convolution kernels of one image, in one copy per instruction set,
 * and the dispatch that picks the copy to run.
 *
 * Why: for a layer with few input channels (LeNet's first layer: 1 channel, 6 filters of
 * 5x5) the im2col matrix is 25 rows of 784 pixels, and multiplying it by a 6 x 25 weight
 * matrix is a shape no BLAS is fast at. Two kernels, each with its weight gradient:
 *   - the row kernel (stride 1): output rows cut into vectors of VL pixels, four filters
 *     per input vector loaded; for few filters and wide rows;
 *   - the filter kernel (any stride): a vector of VL filters per weight load, times a tile
 *     of output pixels; for many filters. It also computes a stride-1 layer's input
 *     gradient, as the convolution of the padded output gradient with the flipped kernels.
 * col2im of one image, and the transpose of its output gradient for the filter kernel, are
 * here too, so that they are vectorised per copy; so are the depthwise kernels of one
 * channel's padded plane (forward and weight gradient, any stride and dilation), which
 * _depthwise.pxd runs per channel: a depthwise filter reads one plane, so the row and
 * filter kernels' tiles over filters would be mostly empty.
 *
 * The copies (cpu_dispatch.h): avx512, avx2, baseline (SSE2 / NEON) and portable C. The
 * kernels are written once, in direct_conv_impl.h, and instantiated below for each copy
 * and for float and double; each copy has its own vector width and register tiles
 * (FASTCNN_WIDE_NV ...), sized to its register file so the inner loops do not spill. The
 * entry points (fastcnn_row_forward_f32, ...) call the selected copy through a table;
 * fastcnn_select_kernels(level) selects the best copy this CPU has up to `level` (each
 * extension module that includes this header selects at import: fastcnn/_isa.py).
 *
 * Layouts (all row-major):
 *   xpad   (C, HP, WP): the input image with its zero padding already in place;
 *          row kernel: HP = OH + FH - 1 and WP = OW + FW - 1 (stride 1).
 *   wpack  (ceil(K/4), C*FH*FW, 4): the row kernel's weights, four filters side by side,
 *          zero past K.
 *   wt     (KP/GW, C*FH*FW, GW): the filter kernel's, transposed and blocked by GW
 *          filters (GW = WIDE_NV*VL: a wide tile's), KP >= K a multiple of GW, zero past K.
 *   out    (K, OH, OW);  dout (K, OH, OW);  dw (K, C*FH*FW), or (C*FH*FW, KP) transposed
 *          for the filter kernel, whose dout_t is (KP/GW, OH*OW, GW), zero past K.
 *   plane  one channel's padded plane for the depthwise kernels, in SW column phases of
 *          rows of WQ values, `phase` values apart (direct_conv_impl.h); filter w (FH, FW).
 * The row kernel needs output rows of at least VL pixels (OW >= VL): the caller checks.
 *
 * Determinism: every output value is computed by the same operations in the same order
 * whatever the thread count. A row whose width is not a multiple of VL ends with a block
 * that overlaps the one before it: the forward pass recomputes those pixels identically,
 * and the weight gradient zeroes both operands of the products it has already counted
 * (both, so that such a product is 0 * 0, never 0 * inf: no NaN the GEMM path would not add).
 * Copies differ from each other in rounding only where one has FMA and another not, or a
 * different VL changes a lane sum; each matches the reference bit for bit on integers.
 */
#ifndef FASTCNN_DIRECT_CONV_H
#define FASTCNN_DIRECT_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_dispatch.h"

#define FASTCNN_FILTERS 4 /* the row kernel's filters computed together */
#define FASTCNN_CAT_(a, b) a##_##b
#define FASTCNN_CAT(a, b) FASTCNN_CAT_(a, b)

/* A copy's entry points: what fastcnn_select_kernels chooses among. */
typedef struct {
    const char *name; /* "avx2", ... as FASTCNN_MAX_CPU_ISA names it */
    int level;        /* FASTCNN_ISA_* */
    ptrdiff_t vl_f32, vl_f64; /* VL: values per vector */
    ptrdiff_t gw_f32, gw_f64; /* GW: filters per block of the filter kernel's operands */
    void (*row_forward_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *,
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, float *, ptrdiff_t, ptrdiff_t);
    void (*row_forward_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *,
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, double *, ptrdiff_t, ptrdiff_t);
    void (*row_weight_grad_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                ptrdiff_t, float *);
    void (*row_weight_grad_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                ptrdiff_t, double *);
    void (*filter_forward_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *,
                               ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                               float *, ptrdiff_t, ptrdiff_t);
    void (*filter_forward_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                               const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                               ptrdiff_t, double *, ptrdiff_t, ptrdiff_t);
    void (*filter_weight_grad_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                   const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                   ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float *);
    void (*filter_weight_grad_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                   const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                   ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                   double *);
    void (*col2im_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                       ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                       float *);
    void (*col2im_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                       ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                       double *);
    void (*transpose_padded_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, float *);
    void (*transpose_padded_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, double *);
    void (*depthwise_forward_f32)(const float *, ptrdiff_t, ptrdiff_t, const float *,
                                  ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                  ptrdiff_t, float *, ptrdiff_t, ptrdiff_t);
    void (*depthwise_forward_f64)(const double *, ptrdiff_t, ptrdiff_t, const double *,
                                  ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                  ptrdiff_t, double *, ptrdiff_t, ptrdiff_t);
    void (*depthwise_weight_grad_f32)(const float *, ptrdiff_t, ptrdiff_t, const float *,
                                      ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                      ptrdiff_t, ptrdiff_t, ptrdiff_t, float *);
    void (*depthwise_weight_grad_f64)(const double *, ptrdiff_t, ptrdiff_t, const double *,
                                      ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                      ptrdiff_t, ptrdiff_t, ptrdiff_t, double *);
} fastcnn_kernel_table;

/* ---- portable C: 16-byte "vectors" of plain arrays, with the SSE2 copy's tiles */
#define FASTCNN_COPY portable
#define FASTCNN_COPY_NAME "portable"
#define FASTCNN_ISA_LEVEL FASTCNN_ISA_PORTABLE
#define FASTCNN_PORTABLE 1
#define FASTCNN_VECTOR_BYTES 16
#define FASTCNN_WIDE_NV 2
#define FASTCNN_WIDE_TW 6
#define FASTCNN_NARROW_TW 8
#define FASTCNN_GRAD_COLS 2
#include "direct_conv_copy.h"
#undef FASTCNN_PORTABLE

#if FASTCNN_HAS_VECTOR_EXTENSIONS
/* ---- baseline: 16-byte vectors, whatever the build's -march gives (SSE2, NEON, ...).
 * NEON has 32 registers: a 3 x 6 wide tile (4 x 6, AVX-512's, spilled three accumulators
 * per loop pass in gcc 12's aarch64 code: its broadcasts take registers too) and 5-column
 * gradient tiles; SSE2 has 16 (AVX2's tiles fit). */
#define FASTCNN_COPY baseline
#define FASTCNN_COPY_NAME "baseline"
#define FASTCNN_ISA_LEVEL FASTCNN_ISA_BASELINE
#define FASTCNN_PORTABLE 0
#define FASTCNN_VECTOR_BYTES 16
#if defined(__aarch64__)
#define FASTCNN_WIDE_NV 3
#define FASTCNN_GRAD_COLS 5
#else
#define FASTCNN_WIDE_NV 2
#define FASTCNN_GRAD_COLS 2
#endif
#include "direct_conv_copy.h"
#endif

#if FASTCNN_HAS_X86_COPIES
/* ---- avx2: 32-byte vectors, 16 registers: wide tile 2 x 6 (12 accumulators, 2 weight
 * vectors, a broadcast), row-gradient tiles of 2 columns (8 accumulators, 4 gradients) */
FASTCNN_TARGET_BEGIN(FASTCNN_AVX2_FEATURES)
#define FASTCNN_COPY avx2
#define FASTCNN_COPY_NAME "avx2"
#define FASTCNN_ISA_LEVEL FASTCNN_ISA_AVX2
#define FASTCNN_VECTOR_BYTES 32
#define FASTCNN_WIDE_NV 2
#define FASTCNN_GRAD_COLS 2
#include "direct_conv_copy.h"
FASTCNN_TARGET_END

/* ---- avx512: 64-byte vectors, 32 registers: wide tile 4 x 6 (24 accumulators, 4 weight
 * vectors, a broadcast), row-gradient tiles of 5 columns (20 accumulators, 4 gradients) */
FASTCNN_TARGET_BEGIN(FASTCNN_AVX512_FEATURES)
#define FASTCNN_COPY avx512
#define FASTCNN_COPY_NAME "avx512"
#define FASTCNN_ISA_LEVEL FASTCNN_ISA_AVX512
#define FASTCNN_VECTOR_BYTES 64
#define FASTCNN_WIDE_NV 4
#define FASTCNN_GRAD_COLS 5
#include "direct_conv_copy.h"
FASTCNN_TARGET_END
#endif
#if FASTCNN_HAS_VECTOR_EXTENSIONS
#undef FASTCNN_PORTABLE
#endif
#undef FASTCNN_WIDE_TW
#undef FASTCNN_NARROW_TW

#ifdef FASTCNN_EMULATED_COPIES
/* ---- for tests only (tests/c): the avx512 and avx2 copies' vector widths and tiles in
 * portable C, so that a machine without AVX-512 still runs every loop and remainder of
 * the avx512 copy's geometry (the instructions are the compiler's own part). Level 0: they
 * run anywhere; never in fastcnn_kernel_copies. */
#define FASTCNN_PORTABLE 1
#define FASTCNN_WIDE_TW 6
#define FASTCNN_NARROW_TW 8
#define FASTCNN_COPY avx512_emulated
#define FASTCNN_ISA_LEVEL FASTCNN_ISA_PORTABLE
#define FASTCNN_COPY_NAME "avx512 geometry, portable C"
#define FASTCNN_VECTOR_BYTES 64
#define FASTCNN_WIDE_NV 4
#define FASTCNN_GRAD_COLS 5
#include "direct_conv_copy.h"
#define FASTCNN_COPY avx2_emulated
#define FASTCNN_ISA_LEVEL FASTCNN_ISA_PORTABLE
#define FASTCNN_COPY_NAME "avx2 geometry, portable C"
#define FASTCNN_VECTOR_BYTES 32
#define FASTCNN_WIDE_NV 2
#define FASTCNN_GRAD_COLS 2
#include "direct_conv_copy.h"
#undef FASTCNN_COPY
#undef FASTCNN_COPY_NAME
#undef FASTCNN_VECTOR_BYTES
#undef FASTCNN_WIDE_NV
#undef FASTCNN_GRAD_COLS
#undef FASTCNN_ISA_LEVEL
#undef FASTCNN_PORTABLE
#undef FASTCNN_WIDE_TW
#undef FASTCNN_NARROW_TW
static const fastcnn_kernel_table *const fastcnn_emulated_copies[] = {
    &fastcnn_kernels_avx512_emulated,
    &fastcnn_kernels_avx2_emulated,
};
#endif

/* Every copy built into this binary, best first. */
static const fastcnn_kernel_table *const fastcnn_kernel_copies[] = {
#if FASTCNN_HAS_X86_COPIES
    &fastcnn_kernels_avx512,
    &fastcnn_kernels_avx2,
#endif
#if FASTCNN_HAS_VECTOR_EXTENSIONS
    &fastcnn_kernels_baseline,
#endif
    &fastcnn_kernels_portable,
};
#define FASTCNN_N_COPIES ((int)(sizeof fastcnn_kernel_copies / sizeof fastcnn_kernel_copies[0]))

/* The copy the entry points below call: one per extension module that includes this
 * header, set at its import (before any kernel runs) and by tests between calls. */
static const fastcnn_kernel_table *fastcnn_active_kernels = &fastcnn_kernels_portable;

/* Select the best copy built that this CPU runs, of level <= max_level; return it. */
static const fastcnn_kernel_table *fastcnn_select_kernels(int max_level)
{
    const int cpu = fastcnn_cpu_isa();
    for (int i = 0; i < FASTCNN_N_COPIES; i++) {
        const fastcnn_kernel_table *copy = fastcnn_kernel_copies[i];
        if (copy->level <= cpu && copy->level <= max_level) {
            fastcnn_active_kernels = copy;
            break;
        }
    }
    return fastcnn_active_kernels;
}

/* ---- the entry points the Cython code calls */
#define FASTCNN_ENTRY(T, S)                                                                   \
    static inline void fastcnn_row_forward_##S(                                               \
        const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wpack, ptrdiff_t K,  \
        ptrdiff_t FH, ptrdiff_t FW, T *out, ptrdiff_t OH, ptrdiff_t OW)                       \
    {                                                                                         \
        fastcnn_active_kernels->row_forward_##S(xpad, C, HP, WP, wpack, K, FH, FW, out, OH,   \
                                                OW);                                          \
    }                                                                                         \
    static inline void fastcnn_row_weight_grad_##S(                                           \
        const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *dout, ptrdiff_t K,   \
        ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t OH, ptrdiff_t OW, T *dw)                        \
    {                                                                                         \
        fastcnn_active_kernels->row_weight_grad_##S(xpad, C, HP, WP, dout, K, FH, FW, OH, OW, \
                                                    dw);                                      \
    }                                                                                         \
    static inline void fastcnn_filter_forward_##S(                                            \
        const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wt, ptrdiff_t K,     \
        ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW, T *out, ptrdiff_t OH,         \
        ptrdiff_t OW)                                                                         \
    {                                                                                         \
        fastcnn_active_kernels->filter_forward_##S(xpad, C, HP, WP, wt, K, FH, FW, SH, SW,    \
                                                   out, OH, OW);                              \
    }                                                                                         \
    static inline void fastcnn_filter_weight_grad_##S(                                        \
        const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *dout_t,              \
        ptrdiff_t KP, ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW,    \
        ptrdiff_t OH, ptrdiff_t OW, T *dw_t)                                                  \
    {                                                                                         \
        fastcnn_active_kernels->filter_weight_grad_##S(xpad, C, HP, WP, dout_t, KP, K, FH,    \
                                                       FW, SH, SW, OH, OW, dw_t);             \
    }                                                                                         \
    static inline void fastcnn_col2im_##S(                                                    \
        const T *col, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t FH, ptrdiff_t FW,      \
        ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t PH, ptrdiff_t PW, ptrdiff_t OH, ptrdiff_t OW,   \
        T *x)                                                                                 \
    {                                                                                         \
        fastcnn_active_kernels->col2im_##S(col, C, H, W, FH, FW, SH, SW, PH, PW, OH, OW, x);  \
    }                                                                                         \
    static inline void fastcnn_transpose_padded_##S(const T *a, ptrdiff_t rows,               \
                                                    ptrdiff_t cols, ptrdiff_t ld, T *a_t)     \
    {                                                                                         \
        fastcnn_active_kernels->transpose_padded_##S(a, rows, cols, ld, a_t);                 \
    }                                                                                         \
    static inline void fastcnn_depthwise_forward_##S(                                         \
        const T *plane, ptrdiff_t WQ, ptrdiff_t phase, const T *w, ptrdiff_t FH,              \
        ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t DH, ptrdiff_t DW, T *out,         \
        ptrdiff_t OH, ptrdiff_t OW)                                                           \
    {                                                                                         \
        fastcnn_active_kernels->depthwise_forward_##S(plane, WQ, phase, w, FH, FW, SH, SW,    \
                                                      DH, DW, out, OH, OW);                   \
    }                                                                                         \
    static inline void fastcnn_depthwise_weight_grad_##S(                                     \
        const T *plane, ptrdiff_t WQ, ptrdiff_t phase, const T *dout, ptrdiff_t FH,           \
        ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t DH, ptrdiff_t DW, ptrdiff_t OH,   \
        ptrdiff_t OW, T *dw)                                                                  \
    {                                                                                         \
        fastcnn_active_kernels->depthwise_weight_grad_##S(plane, WQ, phase, dout, FH, FW, SH, \
                                                          SW, DH, DW, OH, OW, dw);            \
    }
FASTCNN_ENTRY(float, f32)
FASTCNN_ENTRY(double, f64)
#undef FASTCNN_ENTRY

#endif /* FASTCNN_DIRECT_CONV_H */
