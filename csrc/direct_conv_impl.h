/* The direct convolution kernels for one element type and one ISA copy: included by
 * direct_conv.h (read its comment first) once per (type, copy), with these defined:
 *
 *   FASTCNN_T, FASTCNN_MASK_T   the element type and an integer type of its size
 *   FASTCNN_SUFFIX              the names' suffix, e.g. f32_avx2
 *   FASTCNN_VECTOR_BYTES        bytes per vector: 64, 32 or 16
 *   FASTCNN_PORTABLE            1: vectors are structs of arrays (any C99 compiler);
 *                               0: GCC vector extensions (a register each)
 *   FASTCNN_WIDE_NV, FASTCNN_WIDE_TW   the filter kernel's wide tile: NV filter vectors x TW
 *                               pixels, NV*TW accumulators (sized to the register file)
 *   FASTCNN_NARROW_TW           pixels of its one-vector tile
 *   FASTCNN_GRAD_COLS           kernel columns per tile of the row kernel's weight gradient
 *                               (GRAD_COLS x 4 accumulators)
 *
 * No include guard: that is the point. Every loop below is written once; only the vector
 * width and the tile sizes differ between copies, and every copy computes each output by
 * the same operations in the same order whatever the thread count. */

#define T FASTCNN_T
#define NAME(name) FASTCNN_CAT(name, FASTCNN_SUFFIX)
#define VL ((ptrdiff_t)(FASTCNN_VECTOR_BYTES / sizeof(T)))
#define MAX_VL (FASTCNN_VECTOR_BYTES / sizeof(T))
#define WIDE_NV FASTCNN_WIDE_NV
#define TILE_TW (FASTCNN_WIDE_TW > FASTCNN_NARROW_TW ? FASTCNN_WIDE_TW : FASTCNN_NARROW_TW)

#define vec NAME(fastcnn_vec)
#define mask NAME(fastcnn_mask)

/* ---- vector operations: VZERO, VLOAD(p) and VSTORE(p, v) at any element boundary,
 * VMADD(acc, a, b) = acc + a*b and VMADDS(acc, s, b) = acc + s*b for a scalar s (one fused
 * multiply-add where the copy has FMA: the compiler contracts them), VADD, VLANE(v, l),
 * VKEEP(v, m): v with the lanes where m is 0 set to +0.0 (bitwise, so 0 * inf is never
 * formed: no NaN the GEMM path would not add). */
#if FASTCNN_PORTABLE
typedef struct { T v[MAX_VL]; } vec;
typedef struct { FASTCNN_MASK_T v[MAX_VL]; } mask;

static inline vec NAME(fastcnn_vzero)(void)
{
    vec r;
    for (ptrdiff_t l = 0; l < VL; l++) r.v[l] = 0;
    return r;
}
static inline vec NAME(fastcnn_vload)(const T *p)
{
    vec r;
    for (ptrdiff_t l = 0; l < VL; l++) r.v[l] = p[l];
    return r;
}
static inline void NAME(fastcnn_vstore)(T *p, vec a)
{
    for (ptrdiff_t l = 0; l < VL; l++) p[l] = a.v[l];
}
static inline vec NAME(fastcnn_vmadd)(vec acc, vec a, vec b)
{
    for (ptrdiff_t l = 0; l < VL; l++) acc.v[l] += a.v[l] * b.v[l];
    return acc;
}
static inline vec NAME(fastcnn_vmadds)(vec acc, T s, vec b)
{
    for (ptrdiff_t l = 0; l < VL; l++) acc.v[l] += s * b.v[l];
    return acc;
}
static inline vec NAME(fastcnn_vadd)(vec a, vec b)
{
    for (ptrdiff_t l = 0; l < VL; l++) a.v[l] += b.v[l];
    return a;
}
static inline vec NAME(fastcnn_vkeep)(vec a, mask m)
{
    for (ptrdiff_t l = 0; l < VL; l++) a.v[l] = m.v[l] ? a.v[l] : 0;
    return a;
}
#define VZERO() NAME(fastcnn_vzero)()
#define VLOAD(p) NAME(fastcnn_vload)(p)
#define VSTORE(p, a) NAME(fastcnn_vstore)((p), (a))
#define VMADD(acc, a, b) NAME(fastcnn_vmadd)((acc), (a), (b))
#define VMADDS(acc, s, b) NAME(fastcnn_vmadds)((acc), (s), (b))
#define VADD(a, b) NAME(fastcnn_vadd)((a), (b))
#define VLANE(a, l) ((a).v[l])
#define VKEEP(a, m) NAME(fastcnn_vkeep)((a), (m))
#define MASK_LANE(m, l) ((m).v[l])
#else
typedef T vec __attribute__((vector_size(FASTCNN_VECTOR_BYTES)));
typedef T NAME(fastcnn_uvec) __attribute__((vector_size(FASTCNN_VECTOR_BYTES), aligned(sizeof(T))));
typedef FASTCNN_MASK_T mask __attribute__((vector_size(FASTCNN_VECTOR_BYTES)));
#define VZERO() ((vec){0})
#define VLOAD(p) (*(const NAME(fastcnn_uvec) *)(p))
#define VSTORE(p, a) (*(NAME(fastcnn_uvec) *)(p) = (a))
#define VMADD(acc, a, b) ((acc) + (a) * (b))
#define VMADDS(acc, s, b) ((acc) + (s) * (b))
#define VADD(a, b) ((a) + (b))
#define VLANE(a, l) ((a)[l])
#define VKEEP(a, m) ((vec)((mask)(a) & (m)))
#define MASK_LANE(m, l) ((m)[l])
#endif

/* Start of the output-row block that begins at ow0: the last block of a row whose width
 * is not a multiple of VL is moved back to end at the row's end (it then overlaps). */
static inline ptrdiff_t NAME(fastcnn_block_start)(ptrdiff_t ow0, ptrdiff_t OW)
{
    return ow0 + VL <= OW ? ow0 : OW - VL;
}

/* The filter kernel's operands are blocked by filter groups of GW = WIDE_NV*VL filters:
 * an (R, KP) matrix (KP a multiple of GW) is stored as KP/GW blocks of (R, GW), so that a
 * tile of filters k0 .. reads one contiguous stream (a row of KP values would put each
 * weight vector of a tile in another cache line: the loads stalled the multiply-adds).
 * Row r of filter k0's block, for a tile starting at filter k0: */
#define GW (WIDE_NV * VL)
static inline const T *NAME(fastcnn_group_row)(const T *blocked, ptrdiff_t rows, ptrdiff_t k0)
{
    return blocked + k0 / GW * rows * GW + k0 % GW;
}

/* One tile of the row kernel: RV vectors of output row oh from column o (RV*VL pixels) of
 * filters k0 .. k0 + 3 (those past K computed from zero weights, not stored): 4*RV
 * independent multiply-add chains (4 were latency-bound), each input vector loaded feeding
 * four of them. */
static FASTCNN_ALWAYS_INLINE void NAME(fastcnn_row_tile)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *w, ptrdiff_t k0,
    ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t oh, ptrdiff_t o, const int RV, T *out,
    ptrdiff_t OW, ptrdiff_t P)
{
    vec acc[2][FASTCNN_FILTERS]; /* RV <= 2 */
    FASTCNN_UNROLL
    for (int v = 0; v < RV; v++)
        FASTCNN_UNROLL
        for (int r = 0; r < FASTCNN_FILTERS; r++) acc[v][r] = VZERO();
    for (ptrdiff_t c = 0; c < C; c++) {
        for (ptrdiff_t i = 0; i < FH; i++) {
            const T *row = xpad + (c * HP + oh + i) * WP + o;
            for (ptrdiff_t j = 0; j < FW; j++, w += FASTCNN_FILTERS) {
                FASTCNN_UNROLL
                for (int v = 0; v < RV; v++) {
                    const vec x = VLOAD(row + j + v * VL);
                    FASTCNN_UNROLL
                    for (int r = 0; r < FASTCNN_FILTERS; r++)
                        acc[v][r] = VMADDS(acc[v][r], w[r], x);
                }
            }
        }
    }
    for (int r = 0; r < FASTCNN_FILTERS && k0 + r < K; r++)
        FASTCNN_UNROLL
        for (int v = 0; v < RV; v++) VSTORE(out + (k0 + r) * P + oh * OW + o + v * VL, acc[v][r]);
}

/* The row kernel. out[k, oh, :] := sum over (c, i, j) of w[k, c, i, j] * xpad[c, oh + i,
 * j:j + OW]: output rows in tiles of two vectors (one where a row holds fewer than two),
 * four filters per input vector loaded. A row's last tile is moved back to end at the
 * row's end, overlapping the one before: its pixels there are computed again, identically. */
static void NAME(fastcnn_row_forward)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wpack, ptrdiff_t K,
    ptrdiff_t FH, ptrdiff_t FW, T *out, ptrdiff_t OH, ptrdiff_t OW)
{
    const ptrdiff_t Q = C * FH * FW, P = OH * OW;
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FASTCNN_FILTERS) {
        const T *w = wpack + k0 * Q;
        for (ptrdiff_t oh = 0; oh < OH; oh++) {
            if (OW < 2 * VL) {
                for (ptrdiff_t ow0 = 0; ow0 < OW; ow0 += VL)
                    NAME(fastcnn_row_tile)(xpad, C, HP, WP, w, k0, K, FH, FW, oh,
                                           NAME(fastcnn_block_start)(ow0, OW), 1, out, OW, P);
                continue;
            }
            for (ptrdiff_t ow0 = 0; ow0 < OW; ow0 += 2 * VL) {
                const ptrdiff_t o = ow0 + 2 * VL <= OW ? ow0 : OW - 2 * VL;
                NAME(fastcnn_row_tile)(xpad, C, HP, WP, w, k0, K, FH, FW, oh, o, 2, out, OW, P);
            }
        }
    }
}

/* One tile of the filter kernel: output pixels p0 .. p0 + TW - 1 (in row-major order, so a
 * tile may span two rows) of the NV filter vectors from k0 (filters k0 .. k0 + NV*VL - 1,
 * those past K dropped). Each weight vector loaded (VL filters at one (c, i, j)) feeds TW
 * multiply-adds, one per pixel, and each input value broadcast feeds NV. NV and TW are
 * compile-time constants at every call, so the NV*TW accumulators live in registers: the
 * wide tile is sized so that they, NV weight vectors and a broadcast fit the copy's
 * register file (AVX-512: 4 x 6 of 32 registers; AVX2: 2 x 6 of 16), the narrow tile
 * (1 x 8) keeps 8 independent chains to hide the multiply-add latency. */
static FASTCNN_ALWAYS_INLINE void NAME(fastcnn_filter_tile)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wt,
    ptrdiff_t k0, ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW,
    ptrdiff_t p0, const int NV, const int TW, T *out, ptrdiff_t OH, ptrdiff_t OW)
{
    vec acc[WIDE_NV][TILE_TW];
    ptrdiff_t origin[TILE_TW]; /* of each pixel's window in an input channel */
    FASTCNN_UNROLL
    for (int t = 0; t < TW; t++) {
        FASTCNN_UNROLL
        for (int v = 0; v < NV; v++) acc[v][t] = VZERO();
        origin[t] = (p0 + t) / OW * SH * WP + (p0 + t) % OW * SW;
    }
    const T *w = NAME(fastcnn_group_row)(wt, C * FH * FW, k0);
    for (ptrdiff_t c = 0; c < C; c++) {
        for (ptrdiff_t i = 0; i < FH; i++) {
            const T *row = xpad + (c * HP + i) * WP;
            for (ptrdiff_t j = 0; j < FW; j++, w += GW) {
                vec weights[WIDE_NV];
                FASTCNN_UNROLL
                for (int v = 0; v < NV; v++) weights[v] = VLOAD(w + v * VL);
                FASTCNN_UNROLL
                for (int t = 0; t < TW; t++) {
                    const T x = row[origin[t] + j];
                    FASTCNN_UNROLL
                    for (int v = 0; v < NV; v++) acc[v][t] = VMADDS(acc[v][t], x, weights[v]);
                }
            }
        }
    }
    const ptrdiff_t P = OH * OW;
    for (int v = 0; v < NV; v++) {
        const ptrdiff_t first = k0 + v * VL, filters = K - first < VL ? K - first : VL;
        for (ptrdiff_t lane = 0; lane < filters; lane++) {
            T *dst = out + (first + lane) * P + p0;
            FASTCNN_UNROLL
            for (int t = 0; t < TW; t++) dst[t] = VLANE(acc[v][t], lane);
        }
    }
}

/* Pixels p_start .. P - 1 of filters k0 .. k0 + VL - 1: in narrow tiles, the last few in
 * tiles of 4, 2 and 1. */
static FASTCNN_ALWAYS_INLINE void NAME(fastcnn_filter_pixels)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wt,
    ptrdiff_t k0, ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW,
    ptrdiff_t p_start, T *out, ptrdiff_t OH, ptrdiff_t OW)
{
    const ptrdiff_t P = OH * OW;
    ptrdiff_t p0 = p_start;
    for (; p0 + FASTCNN_NARROW_TW <= P; p0 += FASTCNN_NARROW_TW)
        NAME(fastcnn_filter_tile)(xpad, C, HP, WP, wt, k0, K, FH, FW, SH, SW, p0, 1,
                                  FASTCNN_NARROW_TW, out, OH, OW);
    for (; p0 + 4 <= P; p0 += 4)
        NAME(fastcnn_filter_tile)(xpad, C, HP, WP, wt, k0, K, FH, FW, SH, SW, p0, 1, 4,
                                  out, OH, OW);
    for (; p0 + 2 <= P; p0 += 2)
        NAME(fastcnn_filter_tile)(xpad, C, HP, WP, wt, k0, K, FH, FW, SH, SW, p0, 1, 2,
                                  out, OH, OW);
    for (; p0 < P; p0++)
        NAME(fastcnn_filter_tile)(xpad, C, HP, WP, wt, k0, K, FH, FW, SH, SW, p0, 1, 1,
                                  out, OH, OW);
}

/* The filter kernel. out[k, oh, ow] := sum over (c, i, j) of w[k, c, i, j] *
 * xpad[c, oh*SH + i, ow*SW + j], vectorised across filters: wt is the weight as a
 * (C*FH*FW, KP) matrix, blocked by GW filters (KP >= K a multiple of GW), zero past K. Any stride; pays off when K
 * fills most of a vector. */
static void NAME(fastcnn_filter_forward)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wt, ptrdiff_t K,
    ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW, T *out, ptrdiff_t OH, ptrdiff_t OW)
{
    const ptrdiff_t P = OH * OW;
    ptrdiff_t k0 = 0;
    /* WIDE_NV filter vectors at a time while there are that many whole ones, pixels in wide
     * tiles; the pixels left over, and the filters left over, by the narrow tiles */
    for (; WIDE_NV > 1 && k0 + WIDE_NV * VL <= K; k0 += WIDE_NV * VL) {
        ptrdiff_t p0 = 0;
        for (; p0 + FASTCNN_WIDE_TW <= P; p0 += FASTCNN_WIDE_TW)
            NAME(fastcnn_filter_tile)(xpad, C, HP, WP, wt, k0, K, FH, FW, SH, SW, p0,
                                      WIDE_NV, FASTCNN_WIDE_TW, out, OH, OW);
        for (ptrdiff_t v = 0; v < WIDE_NV; v++)
            NAME(fastcnn_filter_pixels)(xpad, C, HP, WP, wt, k0 + v * VL, K, FH, FW, SH,
                                        SW, p0, out, OH, OW);
    }
    for (; k0 < K; k0 += VL)
        NAME(fastcnn_filter_pixels)(xpad, C, HP, WP, wt, k0, K, FH, FW, SH, SW, 0, out,
                                    OH, OW);
}

/* One tile of the filter kernel's weight gradient: the forward tile with pixels and weights
 * swapped. Rows q0 .. q0 + TQ - 1 of dw_t (each a (c, i, j) of the kernel, in flat order, so
 * a tile may span kernel rows and channels) for the NV filter vectors from k0. For each
 * output pixel, NV gradient vectors are loaded and each of the TQ input values it sees
 * through those (c, i, j) is broadcast into NV multiply-adds: NV*TQ accumulators, each one
 * dw_t element's sum over the pixels in order (the forward tile's register budget). */
static FASTCNN_ALWAYS_INLINE void NAME(fastcnn_filter_grad_tile)(
    const T *xpad, ptrdiff_t HP, ptrdiff_t WP, const T *dout_t, ptrdiff_t KP, ptrdiff_t k0,
    ptrdiff_t q0, const int NV, const int TQ, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH,
    ptrdiff_t SW, ptrdiff_t OH, ptrdiff_t OW, T *dw_t)
{
    vec acc[WIDE_NV][TILE_TW];
    ptrdiff_t offset[TILE_TW]; /* of each (c, i, j) in the padded image */
    FASTCNN_UNROLL
    for (int s = 0; s < TQ; s++) {
        const ptrdiff_t q = q0 + s, c = q / (FH * FW), i = q / FW % FH, j = q % FW;
        FASTCNN_UNROLL
        for (int v = 0; v < NV; v++) acc[v][s] = VZERO();
        offset[s] = (c * HP + i) * WP + j;
    }
    const T *g = NAME(fastcnn_group_row)(dout_t, OH * OW, k0);
    for (ptrdiff_t oh = 0; oh < OH; oh++) {
        const T *row = xpad + oh * SH * WP;
        for (ptrdiff_t ow = 0; ow < OW; ow++, g += GW) {
            const T *x = row + ow * SW;
            vec grads[WIDE_NV];
            FASTCNN_UNROLL
            for (int v = 0; v < NV; v++) grads[v] = VLOAD(g + v * VL);
            FASTCNN_UNROLL
            for (int s = 0; s < TQ; s++) {
                const T value = x[offset[s]];
                FASTCNN_UNROLL
                for (int v = 0; v < NV; v++) acc[v][s] = VMADDS(acc[v][s], value, grads[v]);
            }
        }
    }
    FASTCNN_UNROLL
    for (int s = 0; s < TQ; s++) {
        FASTCNN_UNROLL
        for (int v = 0; v < NV; v++) {
            T *dst = dw_t + (q0 + s) * KP + k0 + v * VL;
            VSTORE(dst, VADD(VLOAD(dst), acc[v][s]));
        }
    }
}

/* Rows q_start .. Q - 1 of dw_t, filters k0 .. k0 + VL - 1: in narrow tiles, the last few
 * in tiles of 4, 2 and 1. */
static FASTCNN_ALWAYS_INLINE void NAME(fastcnn_filter_grad_rows)(
    const T *xpad, ptrdiff_t Q, ptrdiff_t HP, ptrdiff_t WP, const T *dout_t, ptrdiff_t KP,
    ptrdiff_t k0, ptrdiff_t q_start, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW,
    ptrdiff_t OH, ptrdiff_t OW, T *dw_t)
{
    ptrdiff_t q0 = q_start;
    for (; q0 + FASTCNN_NARROW_TW <= Q; q0 += FASTCNN_NARROW_TW)
        NAME(fastcnn_filter_grad_tile)(xpad, HP, WP, dout_t, KP, k0, q0, 1, FASTCNN_NARROW_TW,
                                       FH, FW, SH, SW, OH, OW, dw_t);
    for (; q0 + 4 <= Q; q0 += 4)
        NAME(fastcnn_filter_grad_tile)(xpad, HP, WP, dout_t, KP, k0, q0, 1, 4, FH, FW, SH, SW,
                                       OH, OW, dw_t);
    for (; q0 + 2 <= Q; q0 += 2)
        NAME(fastcnn_filter_grad_tile)(xpad, HP, WP, dout_t, KP, k0, q0, 1, 2, FH, FW, SH, SW,
                                       OH, OW, dw_t);
    for (; q0 < Q; q0++)
        NAME(fastcnn_filter_grad_tile)(xpad, HP, WP, dout_t, KP, k0, q0, 1, 1, FH, FW, SH, SW,
                                       OH, OW, dw_t);
}

/* dw_t[(c*FH + i)*FW + j, k] += sum over (oh, ow) of dout_t[oh*OW + ow, k] *
 * xpad[c, oh*SH + i, ow*SW + j]: the filter kernel's weight gradient, transposed,
 * vectorised across filters. dout_t is the output gradient as a (OH*OW, KP) matrix
 * blocked by GW filters, zero past K; dw_t is (C*FH*FW, KP), not blocked. Tiled as the forward pass, with (c, i, j) in the place of the pixels. */
static void NAME(fastcnn_filter_weight_grad)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *dout_t, ptrdiff_t KP,
    ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t OH,
    ptrdiff_t OW, T *dw_t)
{
    const ptrdiff_t Q = C * FH * FW;
    ptrdiff_t k0 = 0;
    for (; WIDE_NV > 1 && k0 + WIDE_NV * VL <= K; k0 += WIDE_NV * VL) {
        ptrdiff_t q0 = 0;
        for (; q0 + FASTCNN_WIDE_TW <= Q; q0 += FASTCNN_WIDE_TW)
            NAME(fastcnn_filter_grad_tile)(xpad, HP, WP, dout_t, KP, k0, q0, WIDE_NV,
                                           FASTCNN_WIDE_TW, FH, FW, SH, SW, OH, OW, dw_t);
        for (ptrdiff_t v = 0; v < WIDE_NV; v++)
            NAME(fastcnn_filter_grad_rows)(xpad, Q, HP, WP, dout_t, KP, k0 + v * VL, q0, FH,
                                           FW, SH, SW, OH, OW, dw_t);
    }
    for (; k0 < K; k0 += VL)
        NAME(fastcnn_filter_grad_rows)(xpad, Q, HP, WP, dout_t, KP, k0, 0, FH, FW, SH, SW, OH,
                                       OW, dw_t);
}

/* a_t := a (rows x cols) transposed, (cols x ld) blocked by GW as the filter kernel's
 * operands are, zero in columns rows .. ld-1 (ld a multiple of GW): the output gradient
 * laid out for the filter kernel's weight gradient. In blocks of 16 columns of a, so
 * that the 16 rows of a_t being written and the rows of a being read stay in L1 (a plain
 * column-by-column loop was half of a small layer's weight gradient). */
static void NAME(fastcnn_transpose_padded)(const T *a, ptrdiff_t rows, ptrdiff_t cols,
                                           ptrdiff_t ld, T *a_t)
{
    for (ptrdiff_t c0 = 0; c0 < cols; c0 += 16) {
        const ptrdiff_t c1 = c0 + 16 < cols ? c0 + 16 : cols;
        for (ptrdiff_t r = 0; r < ld; r++) {
            T *dst = a_t + r / GW * cols * GW + r % GW;
            if (r < rows)
                for (ptrdiff_t c = c0; c < c1; c++) dst[c * GW] = a[r * cols + c];
            else
                for (ptrdiff_t c = c0; c < c1; c++) dst[c * GW] = 0;
        }
    }
}

/* x (C, H, W) := 0; x[c, oh*SH + i - PH, ow*SW + j - PW] += col[(c*FH + i)*FW + j, oh*OW + ow]
 * for every (c, i, j, oh, ow) inside x: im2col's adjoint for one image. Here rather than in
 * Cython so that each copy vectorises its short rows (LeNet conv2: 10 values) for its ISA. */
static void NAME(fastcnn_col2im)(
    const T *col, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t FH, ptrdiff_t FW,
    ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t PH, ptrdiff_t PW, ptrdiff_t OH, ptrdiff_t OW, T *x)
{
    for (ptrdiff_t e = 0; e < C * H * W; e++) x[e] = 0;
    for (ptrdiff_t c = 0; c < C; c++) {
        for (ptrdiff_t i = 0; i < FH; i++) {
            for (ptrdiff_t j = 0; j < FW; j++) {
                const T *row = col + ((c * FH + i) * FW + j) * OH * OW;
                /* the output columns whose input column ow*SW + j - PW lies in [0, W) */
                const ptrdiff_t offset = j - PW;
                const ptrdiff_t ow_lo = offset >= 0 ? 0 : (-offset + SW - 1) / SW;
                ptrdiff_t ow_hi = W - offset <= 0 ? 0 : (W - offset + SW - 1) / SW;
                ow_hi = ow_hi < OW ? ow_hi : OW;
                for (ptrdiff_t oh = 0; oh < OH; oh++) {
                    const ptrdiff_t h = oh * SH + i - PH;
                    if (h < 0 || h >= H) continue;
                    T *dst = x + (c * H + h) * W + offset;
                    const T *src = row + oh * OW;
                    if (SW == 1)
                        for (ptrdiff_t ow = ow_lo; ow < ow_hi; ow++) dst[ow] += src[ow];
                    else
                        for (ptrdiff_t ow = ow_lo; ow < ow_hi; ow++) dst[ow * SW] += src[ow];
                }
            }
        }
    }
}

/* The sum of v's lanes, pairwise: a fixed order, and a short dependency chain. */
static inline T NAME(fastcnn_lane_sum)(vec v)
{
    T part[MAX_VL];
    for (ptrdiff_t lane = 0; lane < VL; lane++) part[lane] = VLANE(v, lane);
    for (ptrdiff_t half = VL / 2; half > 0; half /= 2)
        for (ptrdiff_t lane = 0; lane < half; lane++) part[lane] += part[lane + half];
    return part[0];
}

/* One tile of the row kernel's weight gradient: filters k0..k0+3 (d[r] their output
 * gradients), input row i of channel c, and FWC kernel columns j0..j0+FWC-1. Each block of
 * output gradients is loaded once and multiplied by FWC shifted input vectors. FWC is a
 * compile-time constant at every call, so the FWC x 4 accumulators live in registers
 * (FWC <= FASTCNN_GRAD_COLS: 5 where there are 32 registers, 2 where there are 16). */
static FASTCNN_ALWAYS_INLINE void NAME(fastcnn_row_grad_tile)(
    const T *xpad, ptrdiff_t HP, ptrdiff_t WP, const T *d[FASTCNN_FILTERS], ptrdiff_t K,
    ptrdiff_t k0, ptrdiff_t c, ptrdiff_t i, ptrdiff_t j0, const int FWC, ptrdiff_t Q,
    ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t OH, ptrdiff_t OW, mask keep, T *dw)
{
    vec acc[FASTCNN_GRAD_COLS][FASTCNN_FILTERS];
    FASTCNN_UNROLL
    for (int j = 0; j < FWC; j++)
        FASTCNN_UNROLL
        for (int r = 0; r < FASTCNN_FILTERS; r++) acc[j][r] = VZERO();
    /* the row's whole blocks, then (in a loop of its own, so that the mask does not take
     * a register from the accumulators) its overlapping last block */
    for (ptrdiff_t oh = 0; oh < OH; oh++) {
        const T *row = xpad + (c * HP + oh + i) * WP + j0;
        for (ptrdiff_t o = 0; o + VL <= OW; o += VL) {
            vec g[FASTCNN_FILTERS];
            FASTCNN_UNROLL
            for (int r = 0; r < FASTCNN_FILTERS; r++) g[r] = VLOAD(d[r] + oh * OW + o);
            FASTCNN_UNROLL
            for (int j = 0; j < FWC; j++) {
                const vec x = VLOAD(row + o + j);
                FASTCNN_UNROLL
                for (int r = 0; r < FASTCNN_FILTERS; r++) acc[j][r] = VMADD(acc[j][r], g[r], x);
            }
        }
    }
    if (OW % VL) {
        const ptrdiff_t o = OW - VL;
        for (ptrdiff_t oh = 0; oh < OH; oh++) {
            const T *row = xpad + (c * HP + oh + i) * WP + j0;
            vec g[FASTCNN_FILTERS];
            FASTCNN_UNROLL
            for (int r = 0; r < FASTCNN_FILTERS; r++) g[r] = VKEEP(VLOAD(d[r] + oh * OW + o), keep);
            FASTCNN_UNROLL
            for (int j = 0; j < FWC; j++) {
                const vec x = VKEEP(VLOAD(row + o + j), keep);
                FASTCNN_UNROLL
                for (int r = 0; r < FASTCNN_FILTERS; r++) acc[j][r] = VMADD(acc[j][r], g[r], x);
            }
        }
    }
    for (int r = 0; r < FASTCNN_FILTERS && k0 + r < K; r++)
        FASTCNN_UNROLL
        for (int j = 0; j < FWC; j++)
            dw[(k0 + r) * Q + (c * FH + i) * FW + j0 + j] += NAME(fastcnn_lane_sum)(acc[j][r]);
}

/* dw[k, (c*FH + i)*FW + j] += sum over (oh, ow) of dout[k, oh, ow] * xpad[c, oh+i, ow+j]:
 * the row kernel's weight gradient. */
static void NAME(fastcnn_row_weight_grad)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *dout, ptrdiff_t K,
    ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t OH, ptrdiff_t OW, T *dw)
{
    const ptrdiff_t Q = C * FH * FW, P = OH * OW;
    /* of a row's overlapping last block, the lanes below `overlap` were counted already */
    const ptrdiff_t overlap = OW % VL ? VL - OW % VL : 0;
    mask keep;
    for (ptrdiff_t lane = 0; lane < VL; lane++) MASK_LANE(keep, lane) = lane >= overlap ? -1 : 0;
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FASTCNN_FILTERS) {
        /* filters past K read filter k0's gradient instead, and are never stored */
        const T *d[FASTCNN_FILTERS];
        for (int r = 0; r < FASTCNN_FILTERS; r++) d[r] = dout + (k0 + r < K ? k0 + r : k0) * P;
        for (ptrdiff_t c = 0; c < C; c++) {
            for (ptrdiff_t i = 0; i < FH; i++) {
                /* columns in tiles of GRAD_COLS, then 3 (if narrower), then 1: constant
                 * tile widths */
                ptrdiff_t j0 = 0;
                for (; j0 + FASTCNN_GRAD_COLS <= FW; j0 += FASTCNN_GRAD_COLS)
                    NAME(fastcnn_row_grad_tile)(xpad, HP, WP, d, K, k0, c, i, j0,
                                                FASTCNN_GRAD_COLS, Q, FH, FW, OH, OW, keep, dw);
                for (; FASTCNN_GRAD_COLS > 3 && j0 + 3 <= FW; j0 += 3)
                    NAME(fastcnn_row_grad_tile)(xpad, HP, WP, d, K, k0, c, i, j0,
                                                FASTCNN_GRAD_COLS > 3 ? 3 : 1, Q, FH, FW, OH,
                                                OW, keep, dw);
                for (; j0 < FW; j0++)
                    NAME(fastcnn_row_grad_tile)(xpad, HP, WP, d, K, k0, c, i, j0, 1, Q, FH, FW,
                                                OH, OW, keep, dw);
            }
        }
    }
}

/* ---- depthwise convolution: one filter over one channel's padded plane, any stride and
 * dilation (csrc/_depthwise.pxd calls these per channel). The plane is stored as SW
 * column phases so that every tap reads a unit-stride row at any stride: phase p holds
 * the columns p, p + SW, p + 2SW, ..., its row r at plane + p*phase + r*WQ. Padded pixel
 * (h, c) is then at plane + (c % SW)*phase + h*WQ + c / SW, and output pixel (oh, ow)'s
 * tap (i, j) at tap(i, j) + oh*SH*WQ + ow, with tap(i, j) below: consecutive ow are
 * consecutive values. At stride 1 the plane is the padded plane itself (phase unused). */

#define DEPTHWISE_ROWS 8 /* output rows of the forward's tile: independent chains */
#define DEPTHWISE_TAPS 9 /* taps per pass of the weight gradient: a 3x3 kernel in one */

static inline ptrdiff_t NAME(fastcnn_depthwise_tap)(ptrdiff_t i, ptrdiff_t j, ptrdiff_t WQ,
                                                    ptrdiff_t phase, ptrdiff_t SW,
                                                    ptrdiff_t DH, ptrdiff_t DW)
{
    return (j * DW % SW) * phase + i * DH * WQ + j * DW / SW;
}

/* The taps of a kernel row in order, without a division each (a tile would spend more on
 * those than on its multiply-adds): column j*DW is column `in` of phase `p`. */
typedef struct {
    ptrdiff_t p, in, step_p, step_in, SW;
} NAME(fastcnn_tap_walk);

static inline NAME(fastcnn_tap_walk) NAME(fastcnn_tap_walk_start)(ptrdiff_t SW, ptrdiff_t DW)
{
    NAME(fastcnn_tap_walk) walk = {0, 0, DW % SW, DW / SW, SW};
    return walk;
}
static inline void NAME(fastcnn_tap_walk_next)(NAME(fastcnn_tap_walk) *walk)
{
    walk->p += walk->step_p;
    walk->in += walk->step_in;
    if (walk->p >= walk->SW) {
        walk->p -= walk->SW;
        walk->in++;
    }
}

/* Rows oh0 .. oh0 + R - 1 of the depthwise forward, VL pixels from column o: R
 * accumulators (R a compile-time constant), each tap's weight broadcast for all R. */
static FASTCNN_ALWAYS_INLINE void NAME(fastcnn_depthwise_tile)(
    const T *plane, ptrdiff_t WQ, ptrdiff_t phase, const T *w, ptrdiff_t FH, ptrdiff_t FW,
    ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t DH, ptrdiff_t DW, ptrdiff_t oh0, const int R,
    ptrdiff_t o, T *out, ptrdiff_t OW)
{
    vec acc[DEPTHWISE_ROWS];
    const ptrdiff_t row_step = SH * WQ;
    for (int r = 0; r < R; r++) acc[r] = VZERO();
    for (ptrdiff_t i = 0; i < FH; i++) {
        const T *top = plane + (oh0 * SH + i * DH) * WQ + o;
        NAME(fastcnn_tap_walk) walk = NAME(fastcnn_tap_walk_start)(SW, DW);
        for (ptrdiff_t j = 0; j < FW; j++, NAME(fastcnn_tap_walk_next)(&walk)) {
            const T s = w[i * FW + j];
            const T *src = top + walk.p * phase + walk.in;
            for (int r = 0; r < R; r++) acc[r] = VMADDS(acc[r], s, VLOAD(src + r * row_step));
        }
    }
    for (int r = 0; r < R; r++) VSTORE(out + (oh0 + r) * OW + o, acc[r]);
}

/* out[oh, ow] := sum over (i, j) of w[i*FW + j] * the padded pixel (oh*SH + i*DH,
 * ow*SW + j*DW), the taps added in (i, j) order from 0: tiles of DEPTHWISE_ROWS rows (then
 * 4, then 1) by one vector, a row's last vector moved back to end at the row's end (its
 * overlapping pixels computed again, identically); rows narrower than a vector one pixel
 * at a time. */
static void NAME(fastcnn_depthwise_forward)(
    const T *plane, ptrdiff_t WQ, ptrdiff_t phase, const T *w, ptrdiff_t FH, ptrdiff_t FW,
    ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t DH, ptrdiff_t DW, T *out, ptrdiff_t OH, ptrdiff_t OW)
{
    if (OW < VL) {
        /* a row's pixels side by side, each tap added to all of them (independent chains;
         * one pixel's taps in turn were a chain of dependent adds) */
        for (ptrdiff_t oh = 0; oh < OH; oh++) {
            T acc[MAX_VL];
            for (ptrdiff_t l = 0; l < VL; l++) acc[l] = 0; /* all: gcc 12 warns otherwise */
            for (ptrdiff_t i = 0; i < FH; i++) {
                const T *top = plane + (oh * SH + i * DH) * WQ;
                NAME(fastcnn_tap_walk) walk = NAME(fastcnn_tap_walk_start)(SW, DW);
                for (ptrdiff_t j = 0; j < FW; j++, NAME(fastcnn_tap_walk_next)(&walk)) {
                    const T s = w[i * FW + j];
                    const T *src = top + walk.p * phase + walk.in;
                    for (ptrdiff_t ow = 0; ow < OW; ow++) acc[ow] += s * src[ow];
                }
            }
            for (ptrdiff_t ow = 0; ow < OW; ow++) out[oh * OW + ow] = acc[ow];
        }
        return;
    }
    ptrdiff_t oh = 0;
    for (; oh + DEPTHWISE_ROWS <= OH; oh += DEPTHWISE_ROWS)
        for (ptrdiff_t ow0 = 0; ow0 < OW; ow0 += VL)
            NAME(fastcnn_depthwise_tile)(plane, WQ, phase, w, FH, FW, SH, SW, DH, DW, oh,
                                         DEPTHWISE_ROWS, NAME(fastcnn_block_start)(ow0, OW),
                                         out, OW);
    for (; oh + 4 <= OH; oh += 4)
        for (ptrdiff_t ow0 = 0; ow0 < OW; ow0 += VL)
            NAME(fastcnn_depthwise_tile)(plane, WQ, phase, w, FH, FW, SH, SW, DH, DW, oh, 4,
                                         NAME(fastcnn_block_start)(ow0, OW), out, OW);
    for (; oh < OH; oh++)
        for (ptrdiff_t ow0 = 0; ow0 < OW; ow0 += VL)
            NAME(fastcnn_depthwise_tile)(plane, WQ, phase, w, FH, FW, SH, SW, DH, DW, oh, 1,
                                         NAME(fastcnn_block_start)(ow0, OW), out, OW);
}

/* dw[i*FW + j] += sum over (oh, ow) of dout[oh, ow] * the padded pixel (oh*SH + i*DH,
 * ow*SW + j*DW): taps in passes of DEPTHWISE_TAPS, one accumulator vector per tap
 * (independent chains, in registers), each output-gradient vector loaded once for all of
 * them, summed down every column block and then across its lanes (fastcnn_lane_sum). A
 * row's last block overlaps the one before: its lanes already counted are masked to
 * zero, as in the row kernel's weight gradient. Rows narrower than a vector one value at
 * a time. */
static void NAME(fastcnn_depthwise_weight_grad)(
    const T *plane, ptrdiff_t WQ, ptrdiff_t phase, const T *dout, ptrdiff_t FH, ptrdiff_t FW,
    ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t DH, ptrdiff_t DW, ptrdiff_t OH, ptrdiff_t OW, T *dw)
{
    const ptrdiff_t taps = FH * FW, row_step = SH * WQ;
    if (OW < VL) {
        /* DEPTHWISE_TAPS taps' sums side by side (independent chains), each summed over
         * the pixels in order */
        for (ptrdiff_t t0 = 0; t0 < taps; t0 += DEPTHWISE_TAPS) {
            const ptrdiff_t n = taps - t0 < DEPTHWISE_TAPS ? taps - t0 : DEPTHWISE_TAPS;
            ptrdiff_t at[DEPTHWISE_TAPS];
            T s[DEPTHWISE_TAPS];
            for (ptrdiff_t u = 0; u < n; u++) {
                at[u] = NAME(fastcnn_depthwise_tap)((t0 + u) / FW, (t0 + u) % FW, WQ, phase,
                                                    SW, DH, DW);
                s[u] = 0;
            }
            for (ptrdiff_t oh = 0; oh < OH; oh++)
                for (ptrdiff_t ow = 0; ow < OW; ow++) {
                    const T g = dout[oh * OW + ow];
                    const T *src = plane + oh * row_step + ow;
                    for (ptrdiff_t u = 0; u < n; u++) s[u] += g * src[at[u]];
                }
            for (ptrdiff_t u = 0; u < n; u++) dw[t0 + u] += s[u];
        }
        return;
    }
    const ptrdiff_t overlap = OW % VL ? VL - OW % VL : 0;
    mask keep;
    for (ptrdiff_t lane = 0; lane < VL; lane++) MASK_LANE(keep, lane) = lane >= overlap ? -1 : 0;
    for (ptrdiff_t t0 = 0; t0 < taps; t0 += DEPTHWISE_TAPS) {
        /* each tap's offset in the plane; those past the last tap read tap t0's, unstored */
        ptrdiff_t at[DEPTHWISE_TAPS];
        vec acc[DEPTHWISE_TAPS];
        for (int u = 0; u < DEPTHWISE_TAPS; u++) {
            const ptrdiff_t t = t0 + u < taps ? t0 + u : t0;
            at[u] = NAME(fastcnn_depthwise_tap)(t / FW, t % FW, WQ, phase, SW, DH, DW);
            acc[u] = VZERO();
        }
        for (ptrdiff_t o = 0; o + VL <= OW; o += VL)
            for (ptrdiff_t oh = 0; oh < OH; oh++) {
                const vec g = VLOAD(dout + oh * OW + o);
                const T *src = plane + oh * row_step + o;
                for (int u = 0; u < DEPTHWISE_TAPS; u++)
                    acc[u] = VMADD(acc[u], g, VLOAD(src + at[u]));
            }
        if (OW % VL) {
            const ptrdiff_t o = OW - VL;
            for (ptrdiff_t oh = 0; oh < OH; oh++) {
                const vec g = VKEEP(VLOAD(dout + oh * OW + o), keep);
                const T *src = plane + oh * row_step + o;
                for (int u = 0; u < DEPTHWISE_TAPS; u++)
                    acc[u] = VMADD(acc[u], g, VKEEP(VLOAD(src + at[u]), keep));
            }
        }
        for (int u = 0; u < DEPTHWISE_TAPS && t0 + u < taps; u++)
            dw[t0 + u] += NAME(fastcnn_lane_sum)(acc[u]);
    }
}

#undef DEPTHWISE_ROWS
#undef DEPTHWISE_TAPS

#undef T
#undef NAME
#undef GW
#undef VL
#undef MAX_VL
#undef WIDE_NV
#undef TILE_TW
#undef vec
#undef mask
#undef VZERO
#undef VLOAD
#undef VSTORE
#undef VMADD
#undef VMADDS
#undef VADD
#undef VLANE
#undef VKEEP
#undef MASK_LANE
