/* Every kernel of every ISA copy of csrc/direct_conv.h, float and double, against a naive
 * scalar reference written here from the header's definitions, bit for bit.
 *
 * For each copy in fastcnn_kernel_copies that this CPU runs (level <= fastcnn_cpu_isa()),
 * each kernel is run on a grid of small shapes built around that copy's vector length VL
 * (rows of exactly VL pixels, one over a multiple, filter counts around VL, 2*VL, 4*VL,
 * every stride 1-3 and kernel size 1-5, ...). The data are small integers, so every sum is
 * exact and any order of summation gives the same bits: a copy must match the reference
 * exactly (memcmp), FMA or not. Every buffer has guard cells on both sides, and starts at
 * a varying misalignment: the output's guards (and, for the kernels that overwrite, its
 * every cell) start as a sentinel the result is compared against, so a write past the end
 * or a cell left unwritten is a failure; input guards hold a large value that would change
 * any result it entered, and the inputs must be unchanged afterwards.
 *
 * Also run: the header's test-only copies (FASTCNN_EMULATED_COPIES: the avx512 and avx2
 * geometries in portable C), which every CPU runs.
 *
 * Also checked: every copy's name, level, VL (vl_f32 = 16/8/4/4 for avx512/avx2/
 * baseline/portable, vl_f64 half that) and GW (the filter kernel's block of WIDE_NV
 * vectors of filters), that the copies are listed best first, and that
 * fastcnn_select_kernels(level) picks the best copy the CPU runs of at most that level.
 *
 * Plain C99, so that it builds with any compiler the header supports (tcc, gcc for
 * aarch64 under qemu: tools/c_kernel_tests.sh). Prints one line per copy, then the total
 * as "N passed, M failed" (read by CI); exits 1 on any failure.
 * Usage: test_direct_conv [-v]   (-v: one line per kernel and type as well) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* also the avx512 and avx2 geometries (vector widths and tiles) in portable C, which run
 * on any CPU: every loop and remainder of the avx512 copy is exercised even where the CPU
 * has no AVX-512 (-DFASTCNN_NO_EMULATED_COPIES leaves them out: twice the build time, and
 * slow under qemu) */
#if !defined(FASTCNN_EMULATED_COPIES) && !defined(FASTCNN_NO_EMULATED_COPIES)
#define FASTCNN_EMULATED_COPIES 1
#endif
#include "direct_conv.h"

#define GUARD 64             /* guard cells on each side of every buffer: > any VL */
#define IN_GUARD 1000.0      /* input guards: a value that changes any result it enters */
#define OUT_SENTINEL -999.0  /* output cells and guards a kernel must not leave as they are */
#define MAX_REPORTS 20       /* mismatches printed in full */

/* ---------------------------------------------------------------- buffers */

/* n elements of es bytes at data offset `off` (GUARD plus a misalignment of 0-3 elements)
 * in an allocation of off + n + GUARD + 16 n elements: the back guard holds the overrun of
 * a whole filter vector's stores past the last filter (up to VL - 1 more rows of output),
 * which would otherwise corrupt the heap rather than fail a comparison. */
typedef struct {
    unsigned char *base;
    ptrdiff_t n, off, total;
    size_t es;
} buf;

static unsigned rng_state = 1;
static unsigned rng(void)
{ /* xorshift32: the same sequence on every platform */
    unsigned x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng_state = x;
    return x;
}
static int rnd(int lo, int hi) { return lo + (int)(rng() % (unsigned)(hi - lo + 1)); }
static double small_int(void) { return (double)rnd(-3, 3); }

static unsigned misalign_counter = 0;

static void set_at(buf *b, ptrdiff_t e, double v) /* e: index in the allocation */
{
    if (b->es == sizeof(float))
        ((float *)(void *)b->base)[e] = (float)v;
    else
        ((double *)(void *)b->base)[e] = v;
}
static double get_at(const buf *b, ptrdiff_t e)
{
    if (b->es == sizeof(float)) return ((const float *)(const void *)b->base)[e];
    return ((const double *)(const void *)b->base)[e];
}
static void put(buf *b, ptrdiff_t i, double v) { set_at(b, b->off + i, v); }
static double get(const buf *b, ptrdiff_t i) { return get_at(b, b->off + i); }
static void *data(const buf *b) { return b->base + (size_t)b->off * b->es; }

/* every cell, guards included, set to fill */
static buf make(ptrdiff_t n, size_t es, double fill)
{
    buf b;
    b.n = n;
    b.es = es;
    b.off = GUARD + (ptrdiff_t)(misalign_counter++ % 4);
    b.total = b.off + n + GUARD + 16 * n;
    b.base = (unsigned char *)malloc((size_t)b.total * es);
    if (!b.base) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    set_at(&b, 0, fill); /* then doubling copies */
    for (ptrdiff_t done = 1; done < b.total; done *= 2)
        memcpy(b.base + (size_t)done * es, b.base,
               (size_t)(done < b.total - done ? done : b.total - done) * es);
    return b;
}
static buf clone(const buf *src)
{
    buf b = *src;
    b.base = (unsigned char *)malloc((size_t)b.total * b.es);
    if (!b.base) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memcpy(b.base, src->base, (size_t)b.total * b.es);
    return b;
}
static void drop(buf *b)
{
    free(b->base);
    b->base = NULL;
}
static void fill_random(buf *b)
{
    for (ptrdiff_t i = 0; i < b->n; i++) put(b, i, small_int());
}

/* ---------------------------------------------------------------- checking */

static int reports = 0;
static int verbose = 0;

/* got must equal want bit for bit, guards included; describe the first difference. */
static int same(const char *what, const char *ctx, const buf *got, const buf *want)
{
    const size_t bytes = (size_t)got->total * got->es;
    if (got->total == want->total && memcmp(got->base, want->base, bytes) == 0) return 1;
    if (reports++ < MAX_REPORTS) {
        ptrdiff_t e = 0, diffs = 0;
        for (ptrdiff_t k = 0; k < got->total; k++)
            if (memcmp(got->base + (size_t)k * got->es, want->base + (size_t)k * got->es,
                       got->es) != 0) {
                if (!diffs++) e = k;
            }
        const ptrdiff_t i = e - got->off;
        printf("MISMATCH %s %s: %td of %td cells differ; first at %s %td: got %.17g, want "
               "%.17g\n",
               ctx, what, diffs, got->total,
               i < 0 ? "front guard" : i >= got->n ? "back guard, data index" : "index", i,
               get_at(got, e), get_at(want, e));
    }
    return 0;
}

/* ---------------------------------------------------------------- per-copy counts */

enum { ROW_FORWARD, ROW_WEIGHT_GRAD, FILTER_FORWARD, FILTER_WEIGHT_GRAD, COL2IM, TRANSPOSE,
       DEPTHWISE_FORWARD, DEPTHWISE_WEIGHT_GRAD, N_KERNELS };
static const char *const kernel_names[N_KERNELS] = {
    "row_forward", "row_weight_grad", "filter_forward", "filter_weight_grad", "col2im",
    "transpose_padded", "depthwise_forward", "depthwise_weight_grad"};
static long passed[N_KERNELS], failed[N_KERNELS];

static void count(int kernel, int ok)
{
    if (ok)
        passed[kernel]++;
    else
        failed[kernel]++;
}

/* ---------------------------------------------------------------- the kernels, one case each */

static ptrdiff_t vl_of(const fastcnn_kernel_table *t, int f64) { return f64 ? t->vl_f64 : t->vl_f32; }
static ptrdiff_t gw_of(const fastcnn_kernel_table *t, int f64) { return f64 ? t->gw_f64 : t->gw_f32; }

/* where element (r, k) of an (R, KP) matrix of the filter kernel's operands is: KP/GW
 * blocks of (R, GW) */
static ptrdiff_t blocked(ptrdiff_t r, ptrdiff_t k, ptrdiff_t R, ptrdiff_t GW)
{
    return k / GW * R * GW + r * GW + k % GW;
}
static size_t es_of(int f64) { return f64 ? sizeof(double) : sizeof(float); }

/* out[k, oh, ow] := sum over (c, i, j) of w[k, c, i, j] * xpad[c, oh + i, ow + j] */
static int case_row_forward(const fastcnn_kernel_table *t, int f64, ptrdiff_t C, ptrdiff_t K,
                            ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t OH, ptrdiff_t OW)
{
    const size_t es = es_of(f64);
    const ptrdiff_t HP = OH + FH - 1, WP = OW + FW - 1, Q = C * FH * FW, KB = (K + 3) / 4;
    buf x = make(C * HP * WP, es, IN_GUARD), w = make(K * Q, es, IN_GUARD);
    buf wpack = make(KB * Q * 4, es, IN_GUARD), out = make(K * OH * OW, es, OUT_SENTINEL);
    fill_random(&x);
    fill_random(&w);
    for (ptrdiff_t kb = 0; kb < KB; kb++)
        for (ptrdiff_t q = 0; q < Q; q++)
            for (ptrdiff_t r = 0; r < 4; r++)
                put(&wpack, (kb * Q + q) * 4 + r, kb * 4 + r < K ? get(&w, (kb * 4 + r) * Q + q) : 0);
    buf want = clone(&out), x0 = clone(&x), wpack0 = clone(&wpack);
    for (ptrdiff_t k = 0; k < K; k++)
        for (ptrdiff_t oh = 0; oh < OH; oh++)
            for (ptrdiff_t ow = 0; ow < OW; ow++) {
                double s = 0;
                for (ptrdiff_t c = 0; c < C; c++)
                    for (ptrdiff_t i = 0; i < FH; i++)
                        for (ptrdiff_t j = 0; j < FW; j++)
                            s += get(&w, k * Q + (c * FH + i) * FW + j) *
                                 get(&x, (c * HP + oh + i) * WP + ow + j);
                put(&want, (k * OH + oh) * OW + ow, s);
            }
    if (f64)
        t->row_forward_f64((const double *)data(&x), C, HP, WP, (const double *)data(&wpack), K,
                           FH, FW, (double *)data(&out), OH, OW);
    else
        t->row_forward_f32((const float *)data(&x), C, HP, WP, (const float *)data(&wpack), K,
                           FH, FW, (float *)data(&out), OH, OW);
    char ctx[160];
    snprintf(ctx, sizeof ctx, "%s row_forward_f%d C=%td K=%td FH=%td FW=%td OH=%td OW=%td",
             t->name, f64 ? 64 : 32, C, K, FH, FW, OH, OW);
    int ok = same("out", ctx, &out, &want);
    ok &= same("xpad (input changed)", ctx, &x, &x0);
    ok &= same("wpack (input changed)", ctx, &wpack, &wpack0);
    drop(&x), drop(&w), drop(&wpack), drop(&out), drop(&want), drop(&x0), drop(&wpack0);
    return ok;
}

/* dw[k, (c*FH + i)*FW + j] += sum over (oh, ow) of dout[k, oh, ow] * xpad[c, oh + i, ow + j] */
static int case_row_weight_grad(const fastcnn_kernel_table *t, int f64, ptrdiff_t C,
                                ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t OH,
                                ptrdiff_t OW)
{
    const size_t es = es_of(f64);
    const ptrdiff_t HP = OH + FH - 1, WP = OW + FW - 1, Q = C * FH * FW;
    buf x = make(C * HP * WP, es, IN_GUARD), dout = make(K * OH * OW, es, IN_GUARD);
    buf dw = make(K * Q, es, OUT_SENTINEL);
    fill_random(&x);
    fill_random(&dout);
    fill_random(&dw); /* accumulated into */
    buf want = clone(&dw), x0 = clone(&x), dout0 = clone(&dout);
    for (ptrdiff_t k = 0; k < K; k++)
        for (ptrdiff_t c = 0; c < C; c++)
            for (ptrdiff_t i = 0; i < FH; i++)
                for (ptrdiff_t j = 0; j < FW; j++) {
                    const ptrdiff_t q = (c * FH + i) * FW + j;
                    double s = 0;
                    for (ptrdiff_t oh = 0; oh < OH; oh++)
                        for (ptrdiff_t ow = 0; ow < OW; ow++)
                            s += get(&dout, (k * OH + oh) * OW + ow) *
                                 get(&x, (c * HP + oh + i) * WP + ow + j);
                    put(&want, k * Q + q, get(&dw, k * Q + q) + s);
                }
    if (f64)
        t->row_weight_grad_f64((const double *)data(&x), C, HP, WP, (const double *)data(&dout),
                               K, FH, FW, OH, OW, (double *)data(&dw));
    else
        t->row_weight_grad_f32((const float *)data(&x), C, HP, WP, (const float *)data(&dout),
                               K, FH, FW, OH, OW, (float *)data(&dw));
    char ctx[160];
    snprintf(ctx, sizeof ctx, "%s row_weight_grad_f%d C=%td K=%td FH=%td FW=%td OH=%td OW=%td",
             t->name, f64 ? 64 : 32, C, K, FH, FW, OH, OW);
    int ok = same("dw", ctx, &dw, &want);
    ok &= same("xpad (input changed)", ctx, &x, &x0);
    ok &= same("dout (input changed)", ctx, &dout, &dout0);
    drop(&x), drop(&dout), drop(&dw), drop(&want), drop(&x0), drop(&dout0);
    return ok;
}

/* out[k, oh, ow] := sum over (c, i, j) of w[k, c, i, j] * xpad[c, oh*SH + i, ow*SW + j],
 * wt the weights as a (Q, KP) matrix blocked by GW filters, zero past K; the padded image
 * may have up to SH-1 rows and SW-1 columns more than the windows use */
static int case_filter_forward(const fastcnn_kernel_table *t, int f64, ptrdiff_t C,
                               ptrdiff_t K, ptrdiff_t KP, ptrdiff_t FH, ptrdiff_t FW,
                               ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t OH, ptrdiff_t OW,
                               ptrdiff_t extra_h, ptrdiff_t extra_w)
{
    const size_t es = es_of(f64);
    const ptrdiff_t HP = (OH - 1) * SH + FH + extra_h, WP = (OW - 1) * SW + FW + extra_w;
    const ptrdiff_t Q = C * FH * FW;
    buf x = make(C * HP * WP, es, IN_GUARD), w = make(K * Q, es, IN_GUARD);
    buf wt = make(Q * KP, es, IN_GUARD), out = make(K * OH * OW, es, OUT_SENTINEL);
    fill_random(&x);
    fill_random(&w);
    const ptrdiff_t GW = gw_of(t, f64);
    for (ptrdiff_t q = 0; q < Q; q++)
        for (ptrdiff_t k = 0; k < KP; k++)
            put(&wt, blocked(q, k, Q, GW), k < K ? get(&w, k * Q + q) : 0);
    buf want = clone(&out), x0 = clone(&x), wt0 = clone(&wt);
    for (ptrdiff_t k = 0; k < K; k++)
        for (ptrdiff_t oh = 0; oh < OH; oh++)
            for (ptrdiff_t ow = 0; ow < OW; ow++) {
                double s = 0;
                for (ptrdiff_t c = 0; c < C; c++)
                    for (ptrdiff_t i = 0; i < FH; i++)
                        for (ptrdiff_t j = 0; j < FW; j++)
                            s += get(&w, k * Q + (c * FH + i) * FW + j) *
                                 get(&x, (c * HP + oh * SH + i) * WP + ow * SW + j);
                put(&want, (k * OH + oh) * OW + ow, s);
            }
    if (f64)
        t->filter_forward_f64((const double *)data(&x), C, HP, WP, (const double *)data(&wt),
                              K, FH, FW, SH, SW, (double *)data(&out), OH, OW);
    else
        t->filter_forward_f32((const float *)data(&x), C, HP, WP, (const float *)data(&wt), K,
                              FH, FW, SH, SW, (float *)data(&out), OH, OW);
    char ctx[200];
    snprintf(ctx, sizeof ctx,
             "%s filter_forward_f%d C=%td K=%td KP=%td FH=%td FW=%td SH=%td SW=%td OH=%td "
             "OW=%td HP=%td WP=%td",
             t->name, f64 ? 64 : 32, C, K, KP, FH, FW, SH, SW, OH, OW, HP, WP);
    int ok = same("out", ctx, &out, &want);
    ok &= same("xpad (input changed)", ctx, &x, &x0);
    ok &= same("wt (input changed)", ctx, &wt, &wt0);
    drop(&x), drop(&w), drop(&wt), drop(&out), drop(&want), drop(&x0), drop(&wt0);
    return ok;
}

/* dw_t[(c*FH + i)*FW + j, k] += sum over (oh, ow) of dout_t[oh*OW + ow, k] *
 * xpad[c, oh*SH + i, ow*SW + j]: dout_t (P, KP) blocked by GW filters, zero past K (so
 * dw_t's columns past K keep their values); dw_t (Q, KP) not blocked */
static int case_filter_weight_grad(const fastcnn_kernel_table *t, int f64, ptrdiff_t C,
                                   ptrdiff_t K, ptrdiff_t KP, ptrdiff_t FH, ptrdiff_t FW,
                                   ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t OH, ptrdiff_t OW,
                                   ptrdiff_t extra_h, ptrdiff_t extra_w)
{
    const size_t es = es_of(f64);
    const ptrdiff_t HP = (OH - 1) * SH + FH + extra_h, WP = (OW - 1) * SW + FW + extra_w;
    const ptrdiff_t Q = C * FH * FW, P = OH * OW;
    buf x = make(C * HP * WP, es, IN_GUARD), dout_t = make(P * KP, es, IN_GUARD);
    buf dw_t = make(Q * KP, es, OUT_SENTINEL);
    fill_random(&x);
    const ptrdiff_t GW = gw_of(t, f64);
    for (ptrdiff_t p = 0; p < P; p++)
        for (ptrdiff_t k = 0; k < KP; k++) put(&dout_t, blocked(p, k, P, GW), k < K ? small_int() : 0);
    for (ptrdiff_t e = 0; e < Q * KP; e++) put(&dw_t, e, (double)rnd(1, 9)); /* nonzero */
    buf want = clone(&dw_t), x0 = clone(&x), dout_t0 = clone(&dout_t);
    for (ptrdiff_t c = 0; c < C; c++)
        for (ptrdiff_t i = 0; i < FH; i++)
            for (ptrdiff_t j = 0; j < FW; j++)
                for (ptrdiff_t k = 0; k < K; k++) {
                    const ptrdiff_t q = (c * FH + i) * FW + j;
                    double s = 0;
                    for (ptrdiff_t oh = 0; oh < OH; oh++)
                        for (ptrdiff_t ow = 0; ow < OW; ow++)
                            s += get(&dout_t, blocked(oh * OW + ow, k, P, GW)) *
                                 get(&x, (c * HP + oh * SH + i) * WP + ow * SW + j);
                    put(&want, q * KP + k, get(&dw_t, q * KP + k) + s);
                }
    if (f64)
        t->filter_weight_grad_f64((const double *)data(&x), C, HP, WP,
                                  (const double *)data(&dout_t), KP, K, FH, FW, SH, SW, OH, OW,
                                  (double *)data(&dw_t));
    else
        t->filter_weight_grad_f32((const float *)data(&x), C, HP, WP,
                                  (const float *)data(&dout_t), KP, K, FH, FW, SH, SW, OH, OW,
                                  (float *)data(&dw_t));
    char ctx[200];
    snprintf(ctx, sizeof ctx,
             "%s filter_weight_grad_f%d C=%td K=%td KP=%td FH=%td FW=%td SH=%td SW=%td "
             "OH=%td OW=%td HP=%td WP=%td",
             t->name, f64 ? 64 : 32, C, K, KP, FH, FW, SH, SW, OH, OW, HP, WP);
    int ok = same("dw_t", ctx, &dw_t, &want);
    ok &= same("xpad (input changed)", ctx, &x, &x0);
    ok &= same("dout_t (input changed)", ctx, &dout_t, &dout_t0);
    drop(&x), drop(&dout_t), drop(&dw_t), drop(&want), drop(&x0), drop(&dout_t0);
    return ok;
}

/* x (C, H, W) := 0; x[c, oh*SH + i - PH, ow*SW + j - PW] += col[(c*FH + i)*FW + j, oh*OW + ow]
 * for every (c, i, j, oh, ow) inside x */
static int case_col2im(const fastcnn_kernel_table *t, int f64, ptrdiff_t C, ptrdiff_t H,
                       ptrdiff_t W, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW,
                       ptrdiff_t PH, ptrdiff_t PW)
{
    const size_t es = es_of(f64);
    const ptrdiff_t OH = (H + 2 * PH - FH) / SH + 1, OW = (W + 2 * PW - FW) / SW + 1;
    const ptrdiff_t Q = C * FH * FW, P = OH * OW;
    buf col = make(Q * P, es, IN_GUARD), x = make(C * H * W, es, OUT_SENTINEL);
    fill_random(&col);
    buf want = clone(&x), col0 = clone(&col);
    for (ptrdiff_t e = 0; e < C * H * W; e++) put(&want, e, 0);
    for (ptrdiff_t c = 0; c < C; c++)
        for (ptrdiff_t i = 0; i < FH; i++)
            for (ptrdiff_t j = 0; j < FW; j++)
                for (ptrdiff_t oh = 0; oh < OH; oh++)
                    for (ptrdiff_t ow = 0; ow < OW; ow++) {
                        const ptrdiff_t h = oh * SH + i - PH, w = ow * SW + j - PW;
                        if (h < 0 || h >= H || w < 0 || w >= W) continue;
                        const ptrdiff_t e = (c * H + h) * W + w;
                        put(&want, e,
                            get(&want, e) + get(&col, ((c * FH + i) * FW + j) * P + oh * OW + ow));
                    }
    if (f64)
        t->col2im_f64((const double *)data(&col), C, H, W, FH, FW, SH, SW, PH, PW, OH, OW,
                      (double *)data(&x));
    else
        t->col2im_f32((const float *)data(&col), C, H, W, FH, FW, SH, SW, PH, PW, OH, OW,
                      (float *)data(&x));
    char ctx[200];
    snprintf(ctx, sizeof ctx,
             "%s col2im_f%d C=%td H=%td W=%td FH=%td FW=%td SH=%td SW=%td PH=%td PW=%td",
             t->name, f64 ? 64 : 32, C, H, W, FH, FW, SH, SW, PH, PW);
    int ok = same("x", ctx, &x, &want);
    ok &= same("col (input changed)", ctx, &col, &col0);
    drop(&col), drop(&x), drop(&want), drop(&col0);
    return ok;
}

/* a_t (cols x ld) := a (rows x cols) transposed, zero in columns rows .. ld-1, blocked by
 * GW as the filter kernel's operands (ld a multiple of GW) */
static int case_transpose(const fastcnn_kernel_table *t, int f64, ptrdiff_t rows,
                          ptrdiff_t cols, ptrdiff_t ld)
{
    const size_t es = es_of(f64);
    buf a = make(rows * cols, es, IN_GUARD), a_t = make(cols * ld, es, OUT_SENTINEL);
    fill_random(&a);
    buf want = clone(&a_t), a0 = clone(&a);
    const ptrdiff_t GW = gw_of(t, f64);
    for (ptrdiff_t c = 0; c < cols; c++)
        for (ptrdiff_t r = 0; r < ld; r++)
            put(&want, blocked(c, r, cols, GW), r < rows ? get(&a, r * cols + c) : 0);
    if (f64)
        t->transpose_padded_f64((const double *)data(&a), rows, cols, ld, (double *)data(&a_t));
    else
        t->transpose_padded_f32((const float *)data(&a), rows, cols, ld, (float *)data(&a_t));
    char ctx[160];
    snprintf(ctx, sizeof ctx, "%s transpose_padded_f%d rows=%td cols=%td ld=%td", t->name,
             f64 ? 64 : 32, rows, cols, ld);
    int ok = same("a_t", ctx, &a_t, &want);
    ok &= same("a (input changed)", ctx, &a, &a0);
    drop(&a), drop(&a_t), drop(&want), drop(&a0);
    return ok;
}

/* The depthwise kernels' plane (direct_conv_impl.h): the padded plane xpad (HP, WP) as SW
 * column phases of rows of WQ = ceil(WP / SW) (+ extra) values, `phase` = HP*WQ (+ extra)
 * apart; cells that hold no pixel keep IN_GUARD, so a kernel reading one fails. */
typedef struct {
    buf b;
    ptrdiff_t WQ, phase;
} phased;

static phased phase_split(const buf *xpad, ptrdiff_t HP, ptrdiff_t WP, ptrdiff_t SW,
                          ptrdiff_t extra)
{
    phased p;
    p.WQ = (WP + SW - 1) / SW + extra;
    p.phase = HP * p.WQ + extra;
    p.b = make(SW * p.phase, xpad->es, IN_GUARD);
    for (ptrdiff_t h = 0; h < HP; h++)
        for (ptrdiff_t c = 0; c < WP; c++)
            put(&p.b, c % SW * p.phase + h * p.WQ + c / SW, get(xpad, h * WP + c));
    return p;
}

/* out[oh, ow] := sum over (i, j) of w[i, j] * xpad[oh*SH + i*DH, ow*SW + j*DW], xpad given
 * in phases; it may have unused last rows and columns (extra) */
static int case_depthwise_forward(const fastcnn_kernel_table *t, int f64, ptrdiff_t FH,
                                  ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t DH,
                                  ptrdiff_t DW, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t extra)
{
    const size_t es = es_of(f64);
    const ptrdiff_t HP = (OH - 1) * SH + (FH - 1) * DH + 1 + extra;
    const ptrdiff_t WP = (OW - 1) * SW + (FW - 1) * DW + 1 + extra;
    buf xpad = make(HP * WP, es, IN_GUARD), w = make(FH * FW, es, IN_GUARD);
    buf out = make(OH * OW, es, OUT_SENTINEL);
    fill_random(&xpad);
    fill_random(&w);
    phased x = phase_split(&xpad, HP, WP, SW, extra);
    buf want = clone(&out), x0 = clone(&x.b), w0 = clone(&w);
    for (ptrdiff_t oh = 0; oh < OH; oh++)
        for (ptrdiff_t ow = 0; ow < OW; ow++) {
            double s = 0;
            for (ptrdiff_t i = 0; i < FH; i++)
                for (ptrdiff_t j = 0; j < FW; j++)
                    s += get(&w, i * FW + j) *
                         get(&xpad, (oh * SH + i * DH) * WP + ow * SW + j * DW);
            put(&want, oh * OW + ow, s);
        }
    if (f64)
        t->depthwise_forward_f64((const double *)data(&x.b), x.WQ, x.phase,
                                 (const double *)data(&w), FH, FW, SH, SW, DH, DW,
                                 (double *)data(&out), OH, OW);
    else
        t->depthwise_forward_f32((const float *)data(&x.b), x.WQ, x.phase,
                                 (const float *)data(&w), FH, FW, SH, SW, DH, DW,
                                 (float *)data(&out), OH, OW);
    char ctx[200];
    snprintf(ctx, sizeof ctx,
             "%s depthwise_forward_f%d FH=%td FW=%td SH=%td SW=%td DH=%td DW=%td OH=%td "
             "OW=%td extra=%td",
             t->name, f64 ? 64 : 32, FH, FW, SH, SW, DH, DW, OH, OW, extra);
    int ok = same("out", ctx, &out, &want);
    ok &= same("plane (input changed)", ctx, &x.b, &x0);
    ok &= same("w (input changed)", ctx, &w, &w0);
    drop(&xpad), drop(&x.b), drop(&w), drop(&out), drop(&want), drop(&x0), drop(&w0);
    return ok;
}

/* dw[i, j] += sum over (oh, ow) of dout[oh, ow] * xpad[oh*SH + i*DH, ow*SW + j*DW] */
static int case_depthwise_weight_grad(const fastcnn_kernel_table *t, int f64, ptrdiff_t FH,
                                      ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t DH,
                                      ptrdiff_t DW, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t extra)
{
    const size_t es = es_of(f64);
    const ptrdiff_t HP = (OH - 1) * SH + (FH - 1) * DH + 1 + extra;
    const ptrdiff_t WP = (OW - 1) * SW + (FW - 1) * DW + 1 + extra;
    buf xpad = make(HP * WP, es, IN_GUARD), dout = make(OH * OW, es, IN_GUARD);
    buf dw = make(FH * FW, es, OUT_SENTINEL);
    fill_random(&xpad);
    fill_random(&dout);
    fill_random(&dw); /* accumulated into */
    phased x = phase_split(&xpad, HP, WP, SW, extra);
    buf want = clone(&dw), x0 = clone(&x.b), dout0 = clone(&dout);
    for (ptrdiff_t i = 0; i < FH; i++)
        for (ptrdiff_t j = 0; j < FW; j++) {
            double s = 0;
            for (ptrdiff_t oh = 0; oh < OH; oh++)
                for (ptrdiff_t ow = 0; ow < OW; ow++)
                    s += get(&dout, oh * OW + ow) *
                         get(&xpad, (oh * SH + i * DH) * WP + ow * SW + j * DW);
            put(&want, i * FW + j, get(&dw, i * FW + j) + s);
        }
    if (f64)
        t->depthwise_weight_grad_f64((const double *)data(&x.b), x.WQ, x.phase,
                                     (const double *)data(&dout), FH, FW, SH, SW, DH, DW, OH,
                                     OW, (double *)data(&dw));
    else
        t->depthwise_weight_grad_f32((const float *)data(&x.b), x.WQ, x.phase,
                                     (const float *)data(&dout), FH, FW, SH, SW, DH, DW, OH,
                                     OW, (float *)data(&dw));
    char ctx[200];
    snprintf(ctx, sizeof ctx,
             "%s depthwise_weight_grad_f%d FH=%td FW=%td SH=%td SW=%td DH=%td DW=%td OH=%td "
             "OW=%td extra=%td",
             t->name, f64 ? 64 : 32, FH, FW, SH, SW, DH, DW, OH, OW, extra);
    int ok = same("dw", ctx, &dw, &want);
    ok &= same("plane (input changed)", ctx, &x.b, &x0);
    ok &= same("dout (input changed)", ctx, &dout, &dout0);
    drop(&xpad), drop(&x.b), drop(&dout), drop(&dw), drop(&want), drop(&x0), drop(&dout0);
    return ok;
}

/* ---------------------------------------------------------------- the grids */

static ptrdiff_t round_up(ptrdiff_t n, ptrdiff_t m) { return (n + m - 1) / m * m; }

/* the filter counts: 1-20, around 1, 2 and 4 vectors, and some past 4*VL of every copy */
static int filter_counts(ptrdiff_t VL, ptrdiff_t *ks)
{
    static const ptrdiff_t fixed[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17,
                                      20, 33, 64, 70};
    const ptrdiff_t around[] = {VL - 1, VL, VL + 1, 2 * VL - 1, 2 * VL, 2 * VL + 1,
                                3 * VL, 4 * VL - 1, 4 * VL, 4 * VL + 1};
    int n = 0;
    for (size_t a = 0; a < sizeof fixed / sizeof fixed[0]; a++) ks[n++] = fixed[a];
    for (size_t a = 0; a < sizeof around / sizeof around[0]; a++) {
        int dup = around[a] < 1;
        for (int b = 0; b < n && !dup; b++) dup = ks[b] == around[a];
        if (!dup) ks[n++] = around[a];
    }
    return n;
}

/* Row kernel, forward and weight gradient (stride 1, OW >= VL): every kernel size 1-5 x 1-5,
 * K 1-9 (every remainder mod 4) and larger, OW = VL, VL + 1, 2VL - 1 (one-vector tiles),
 * 2VL, 2VL + 1, 3VL + 3, 4VL + 1 (two-vector tiles); C (1-9) and OH (1-3) drawn. */
static void grid_row(const fastcnn_kernel_table *t, int f64)
{
    static const ptrdiff_t ks[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 20, 33, 64, 70};
    const ptrdiff_t VL = vl_of(t, f64);
    const ptrdiff_t ows[] = {VL, VL + 1, 2 * VL - 1, 2 * VL, 2 * VL + 1, 3 * VL + 3, 4 * VL + 1};
    for (ptrdiff_t FH = 1; FH <= 5; FH++)
        for (ptrdiff_t FW = 1; FW <= 5; FW++)
            for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
                for (size_t b = 0; b < sizeof ows / sizeof ows[0]; b++) {
                    const ptrdiff_t K = ks[a], OW = ows[b];
                    if (b > 0 && OW == ows[b - 1]) continue; /* VL 2: 2VL - 1 == VL + 1 */
                    const ptrdiff_t C = K > 20 ? rnd(1, 3) : rnd(1, 9), OH = rnd(1, 3);
                    count(ROW_FORWARD, case_row_forward(t, f64, C, K, FH, FW, OH, OW));
                    count(ROW_WEIGHT_GRAD, case_row_weight_grad(t, f64, C, K, FH, FW, OH, OW));
                }
}

/* Filter kernel, forward and weight gradient: every stride 1-3 x 1-3, kernel width 1-5 and
 * filter count; kernel height (1-5), C (1-9), OH (1-3), OW (1-9, 12, 13, VL, VL + 1), KP
 * (the least multiple of GW, or one block more) and the padded image's unused rows and
 * columns (0 .. stride - 1) drawn. */
static void grid_filter(const fastcnn_kernel_table *t, int f64)
{
    const ptrdiff_t VL = vl_of(t, f64), GW = gw_of(t, f64);
    ptrdiff_t ks[40];
    const int nk = filter_counts(VL, ks);
    const ptrdiff_t ows[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, VL, VL + 1};
    for (ptrdiff_t SH = 1; SH <= 3; SH++)
        for (ptrdiff_t SW = 1; SW <= 3; SW++)
            for (ptrdiff_t FW = 1; FW <= 5; FW++)
                for (int a = 0; a < nk; a++) {
                    const ptrdiff_t K = ks[a], FH = rnd(1, 5);
                    const ptrdiff_t C = K > 20 ? rnd(1, 3) : rnd(1, 9), OH = rnd(1, 3);
                    const ptrdiff_t OW = ows[rnd(0, (int)(sizeof ows / sizeof ows[0]) - 1)];
                    const ptrdiff_t KP = round_up(K, GW) + (rnd(0, 3) == 0 ? GW : 0);
                    const ptrdiff_t eh = rnd(0, (int)SH - 1), ew = rnd(0, (int)SW - 1);
                    count(FILTER_FORWARD, case_filter_forward(t, f64, C, K, KP, FH, FW, SH, SW,
                                                              OH, OW, eh, ew));
                    count(FILTER_WEIGHT_GRAD, case_filter_weight_grad(t, f64, C, K, KP, FH, FW,
                                                                      SH, SW, OH, OW, eh, ew));
                }
}

/* col2im: every kernel size 1-5 x 1-5, stride 1-3 x 1-3, padding 0-2 x 0-2; C (1-3), H and
 * W drawn (W up to 2VL + 6 more than the kernel, for rows longer than a vector) */
static void grid_col2im(const fastcnn_kernel_table *t, int f64)
{
    const ptrdiff_t VL = vl_of(t, f64);
    for (ptrdiff_t FH = 1; FH <= 5; FH++)
        for (ptrdiff_t FW = 1; FW <= 5; FW++)
            for (ptrdiff_t SH = 1; SH <= 3; SH++)
                for (ptrdiff_t SW = 1; SW <= 3; SW++)
                    for (ptrdiff_t PH = 0; PH <= 2; PH++)
                        for (ptrdiff_t PW = 0; PW <= 2; PW++) {
                            const ptrdiff_t hmin = FH - 2 * PH > 1 ? FH - 2 * PH : 1;
                            const ptrdiff_t wmin = FW - 2 * PW > 1 ? FW - 2 * PW : 1;
                            const ptrdiff_t H = rnd((int)hmin, (int)(FH + 5));
                            const ptrdiff_t W = rnd((int)wmin, (int)(FW + 2 * VL + 6));
                            count(COL2IM, case_col2im(t, f64, rnd(1, 3), H, W, FH, FW, SH, SW,
                                                      PH, PW));
                        }
}

/* Depthwise, forward and weight gradient: every kernel size 1-5 x 1-5, stride 1-3 x 1-3
 * and dilation 1-2 x 1-2 (the column phases of every stride, taps in any phase); OW 1,
 * VL - 1 (one value at a time), VL, VL + 1, 2VL - 1, 2VL, 3VL + 3 (overlapping last
 * blocks) drawn, OH 1-17 (the forward's 8-, 4- and 1-row tiles and their remainders)
 * drawn; the tap passes of the weight gradient (9 taps each) with every remainder; the
 * plane's unused last rows, columns and phase cells (0-2) drawn. */
static void grid_depthwise(const fastcnn_kernel_table *t, int f64)
{
    const ptrdiff_t VL = vl_of(t, f64);
    const ptrdiff_t ows[] = {1, VL - 1, VL, VL + 1, 2 * VL - 1, 2 * VL, 3 * VL + 3};
    static const ptrdiff_t ohs[] = {1, 3, 4, 5, 8, 13, 17};
    const int n_ows = (int)(sizeof ows / sizeof ows[0]), n_ohs = (int)(sizeof ohs / sizeof ohs[0]);
    for (ptrdiff_t FH = 1; FH <= 5; FH++)
        for (ptrdiff_t FW = 1; FW <= 5; FW++)
            for (ptrdiff_t SH = 1; SH <= 3; SH++)
                for (ptrdiff_t SW = 1; SW <= 3; SW++)
                    for (ptrdiff_t DH = 1; DH <= 2; DH++)
                        for (ptrdiff_t DW = 1; DW <= 2; DW++) {
                            const ptrdiff_t OW = ows[rnd(0, n_ows - 1)];
                            const ptrdiff_t OH = ohs[rnd(0, n_ohs - 1)];
                            if (OW < 1) continue;
                            count(DEPTHWISE_FORWARD,
                                  case_depthwise_forward(t, f64, FH, FW, SH, SW, DH, DW, OH,
                                                         OW, rnd(0, 2)));
                            count(DEPTHWISE_WEIGHT_GRAD,
                                  case_depthwise_weight_grad(t, f64, FH, FW, SH, SW, DH, DW,
                                                             OH, OW, rnd(0, 2)));
                        }
    /* every row tile and remainder and every row width, on a 3x3 kernel at strides 1, 2 */
    for (ptrdiff_t S = 1; S <= 2; S++)
        for (ptrdiff_t OH = 1; OH <= 17; OH++)
            for (int b = 0; b < n_ows; b++) {
                if (ows[b] < 1) continue;
                count(DEPTHWISE_FORWARD,
                      case_depthwise_forward(t, f64, 3, 3, S, S, 1, 1, OH, ows[b], 0));
                count(DEPTHWISE_WEIGHT_GRAD,
                      case_depthwise_weight_grad(t, f64, 3, 3, S, S, 1, 1, OH, ows[b], 0));
            }
}

/* transpose_padded: rows (filters) 1-20 and past 4 vectors, cols (pixels) around the
 * 16-column blocks, ld the least multiple of GW or one block more */
static void grid_transpose(const fastcnn_kernel_table *t, int f64)
{
    const ptrdiff_t GW = gw_of(t, f64);
    static const ptrdiff_t cols[] = {1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 40};
    for (ptrdiff_t rows = 1; rows <= 73; rows += rows < 20 ? 1 : 13)
        for (size_t b = 0; b < sizeof cols / sizeof cols[0]; b++)
            for (int more = 0; more <= 1; more++)
                count(TRANSPOSE,
                      case_transpose(t, f64, rows, cols[b], round_up(rows, GW) + more * GW));
}

/* ---------------------------------------------------------------- the copies */

static long meta_passed = 0, meta_failed = 0;

static void check(int ok, const char *fmt, const char *name, long a, long b)
{
    if (ok) {
        meta_passed++;
        return;
    }
    meta_failed++;
    printf("FAIL: ");
    printf(fmt, name, a, b);
    printf("\n");
}

/* Every copy the test runs: those built (fastcnn_kernel_copies), then the emulated ones. */
#ifdef FASTCNN_EMULATED_COPIES
#define N_EMULATED ((int)(sizeof fastcnn_emulated_copies / sizeof fastcnn_emulated_copies[0]))
#else
#define N_EMULATED 0
#endif
#define N_TESTED (FASTCNN_N_COPIES + N_EMULATED)
static const fastcnn_kernel_table *tested_copy(int i)
{
#ifdef FASTCNN_EMULATED_COPIES
    if (i >= FASTCNN_N_COPIES) return fastcnn_emulated_copies[i - FASTCNN_N_COPIES];
#endif
    return fastcnn_kernel_copies[i];
}

/* The baseline copy's wide tile: 3 vectors where NEON's 32 registers hold it, else 2 */
#if defined(__aarch64__)
#define BASELINE_GW_F32 12
#else
#define BASELINE_GW_F32 8
#endif

/* name, level, VL and GW of every copy; best first; what fastcnn_select_kernels picks */
static void check_tables(int cpu)
{
    static const struct { const char *name; int level; long vl_f32, gw_f32; } known[] = {
        {"avx512", FASTCNN_ISA_AVX512, 16, 64},
        {"avx2", FASTCNN_ISA_AVX2, 8, 16},
        {"baseline", FASTCNN_ISA_BASELINE, 4, BASELINE_GW_F32},
        {"portable", FASTCNN_ISA_PORTABLE, 4, 8},
        {"avx512 geometry, portable C", FASTCNN_ISA_PORTABLE, 16, 64},
        {"avx2 geometry, portable C", FASTCNN_ISA_PORTABLE, 8, 16},
    };
    for (int i = 0; i < N_TESTED; i++) {
        const fastcnn_kernel_table *t = tested_copy(i);
        int found = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
            if (strcmp(t->name, known[k].name) != 0) continue;
            found = 1;
            check(t->level == known[k].level, "%s: level %ld, expected %ld", t->name,
                  (long)t->level, (long)known[k].level);
            check(t->vl_f32 == known[k].vl_f32, "%s: vl_f32 %ld, expected %ld", t->name,
                  (long)t->vl_f32, known[k].vl_f32);
            check(t->vl_f64 == known[k].vl_f32 / 2, "%s: vl_f64 %ld, expected %ld", t->name,
                  (long)t->vl_f64, known[k].vl_f32 / 2);
            check(t->gw_f32 == known[k].gw_f32, "%s: gw_f32 %ld, expected %ld", t->name,
                  (long)t->gw_f32, known[k].gw_f32);
            check(t->gw_f64 == known[k].gw_f32 / 2, "%s: gw_f64 %ld, expected %ld", t->name,
                  (long)t->gw_f64, known[k].gw_f32 / 2);
        }
        check(found, "%s: unknown copy (%ld %ld)", t->name, 0, 0);
        if (i > 0 && i < FASTCNN_N_COPIES)
            check(fastcnn_kernel_copies[i - 1]->level > t->level,
                  "%s: listed after a copy of level %ld, not below it (its level %ld)", t->name,
                  (long)fastcnn_kernel_copies[i - 1]->level, (long)t->level);
        if (i >= FASTCNN_N_COPIES) /* test-only copies: never among those selected */
            for (int j = 0; j < FASTCNN_N_COPIES; j++)
                check(fastcnn_kernel_copies[j] != t, "%s: in fastcnn_kernel_copies (%ld %ld)",
                      t->name, (long)j, 0);
    }
    check(fastcnn_kernel_copies[FASTCNN_N_COPIES - 1] == &fastcnn_kernels_portable,
          "%s: the last copy is not portable (%ld copies, level %ld)",
          fastcnn_kernel_copies[FASTCNN_N_COPIES - 1]->name, (long)FASTCNN_N_COPIES,
          (long)fastcnn_kernel_copies[FASTCNN_N_COPIES - 1]->level);
    /* the copies this compiler and target should have built */
    const long expected = 1 + FASTCNN_HAS_VECTOR_EXTENSIONS + 2 * FASTCNN_HAS_X86_COPIES;
    check(FASTCNN_N_COPIES == expected, "%s: %ld copies built, expected %ld", "build",
          (long)FASTCNN_N_COPIES, expected);
    for (int max_level = FASTCNN_ISA_PORTABLE; max_level <= FASTCNN_ISA_AVX512 + 1; max_level++) {
        const fastcnn_kernel_table *want = NULL;
        for (int i = 0; i < FASTCNN_N_COPIES && !want; i++)
            if (fastcnn_kernel_copies[i]->level <= cpu && fastcnn_kernel_copies[i]->level <= max_level)
                want = fastcnn_kernel_copies[i];
        const fastcnn_kernel_table *got = fastcnn_select_kernels(max_level);
        check(got == want && fastcnn_active_kernels == want,
              "fastcnn_select_kernels chose %s for max_level %ld, not the best copy this CPU "
              "(level %ld) runs",
              got->name, (long)max_level, (long)cpu);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* a crash keeps the lines of the copies done */
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    const int cpu = fastcnn_cpu_isa();
    static const char *const level_names[] = {"portable", "baseline", "avx2", "avx512"};
    printf("fastcnn direct_conv.h: %d copies built (%s) and %d emulated, CPU level %d (%s)\n",
           FASTCNN_N_COPIES,
           FASTCNN_HAS_VECTOR_EXTENSIONS ? FASTCNN_BASELINE_NAME : "no vector extensions",
           N_EMULATED, cpu, cpu >= 0 && cpu <= 3 ? level_names[cpu] : "?");
    check_tables(cpu);
    printf("tables: %ld checks passed, %ld failed (names, levels, VL, GW, order, selection)\n",
           meta_passed, meta_failed);
    long total_passed = meta_passed, total_failed = meta_failed;
    for (int i = 0; i < N_TESTED; i++) {
        const fastcnn_kernel_table *t = tested_copy(i);
        if (t->level > cpu) {
            printf("%-9s level %d, vl_f32 %td, gw_f32 %td: skipped (this CPU's level is %d)\n",
                   t->name, t->level, t->vl_f32, t->gw_f32, cpu);
            continue;
        }
        memset(passed, 0, sizeof passed);
        memset(failed, 0, sizeof failed);
        long p = 0, f = 0;
        for (int f64 = 0; f64 <= 1; f64++) {
            rng_state = 12345u + (unsigned)f64; /* the same shapes and data for every copy */
            long before[N_KERNELS];
            for (int k = 0; k < N_KERNELS; k++) before[k] = passed[k] + failed[k];
            grid_row(t, f64);
            grid_filter(t, f64);
            grid_col2im(t, f64);
            grid_transpose(t, f64);
            grid_depthwise(t, f64);
            if (verbose)
                for (int k = 0; k < N_KERNELS; k++)
                    printf("  %s %s_f%d: %ld cases\n", t->name, kernel_names[k], f64 ? 64 : 32,
                           passed[k] + failed[k] - before[k]);
        }
        char detail[600] = "";
        size_t used = 0;
        for (int k = 0; k < N_KERNELS; k++) {
            p += passed[k];
            f += failed[k];
            char failures[40] = "";
            if (failed[k]) snprintf(failures, sizeof failures, " (%ld FAILED)", failed[k]);
            used += (size_t)snprintf(detail + used, sizeof detail - used, "%s%s %ld%s",
                                     k ? ", " : "", kernel_names[k], passed[k] + failed[k],
                                     failures);
        }
        printf("%-9s level %d, vl_f32 %td, gw_f32 %td: %ld passed, %ld failed [%s]\n", t->name,
               t->level, t->vl_f32, t->gw_f32, p, f, detail);
        total_passed += p;
        total_failed += f;
    }
    printf("%ld passed, %ld failed\n", total_passed, total_failed);
    return total_failed ? 1 : 0;
}
