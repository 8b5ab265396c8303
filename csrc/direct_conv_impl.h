/* The direct convolution kernels for one element type: included by direct_conv.h (read its
 * comment first) once per type, with FASTCNN_T, FASTCNN_MASK_T (an integer of the same
 * size) and FASTCNN_SUFFIX defined. No include guard: that is the point. */

#define T FASTCNN_T
#define NAME(name) FASTCNN_CAT(name, FASTCNN_SUFFIX)
#define VL ((ptrdiff_t)(64 / sizeof(T)))

typedef T NAME(fastcnn_vec) __attribute__((vector_size(64)));
typedef T NAME(fastcnn_uvec) __attribute__((vector_size(64), aligned(sizeof(T))));
typedef FASTCNN_MASK_T NAME(fastcnn_mask) __attribute__((vector_size(64)));
#define vec NAME(fastcnn_vec)
#define uvec NAME(fastcnn_uvec)  /* for loads and stores at any element boundary */
#define mask NAME(fastcnn_mask)
#define LOAD(p) (*(const uvec *)(p))

/* Start of the output-row block that begins at ow0: the last block of a row whose width
 * is not a multiple of VL is moved back to end at the row's end (it then overlaps). */
static inline ptrdiff_t NAME(fastcnn_block_start)(ptrdiff_t ow0, ptrdiff_t OW)
{
    return ow0 + VL <= OW ? ow0 : OW - VL;
}

/* out[k, oh, :] := sum over (c, i, j) of w[k, c, i, j] * xpad[c, oh + i, j:j + OW] */
static FASTCNN_CLONES void NAME(fastcnn_direct_forward)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wpack, ptrdiff_t K,
    ptrdiff_t FH, ptrdiff_t FW, T *out, ptrdiff_t OH, ptrdiff_t OW)
{
    const ptrdiff_t Q = C * FH * FW, P = OH * OW;
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FASTCNN_FILTERS) {
        for (ptrdiff_t oh = 0; oh < OH; oh++) {
            for (ptrdiff_t ow0 = 0; ow0 < OW; ow0 += VL) {
                const ptrdiff_t o = NAME(fastcnn_block_start)(ow0, OW);
                vec a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                const T *w = wpack + k0 * Q;
                for (ptrdiff_t c = 0; c < C; c++) {
                    for (ptrdiff_t i = 0; i < FH; i++) {
                        const T *row = xpad + (c * HP + oh + i) * WP + o;
                        for (ptrdiff_t j = 0; j < FW; j++, w += FASTCNN_FILTERS) {
                            const vec x = LOAD(row + j);
                            a0 += w[0] * x;
                            a1 += w[1] * x;
                            a2 += w[2] * x;
                            a3 += w[3] * x;
                        }
                    }
                }
                T *dst = out + k0 * P + oh * OW + o;
                *(uvec *)dst = a0;
                if (k0 + 1 < K) *(uvec *)(dst + P) = a1;
                if (k0 + 2 < K) *(uvec *)(dst + 2 * P) = a2;
                if (k0 + 3 < K) *(uvec *)(dst + 3 * P) = a3;
            }
        }
    }
}

/* One tile of the filter-vector forward pass: output pixels p0 .. p0 + TW - 1 (in row-major
 * order, so a tile may span two rows) of the NV filter vectors from k0 (filters k0 ..
 * k0 + NV*VL - 1, those past K dropped). Each weight vector loaded (VL filters at one
 * (c, i, j)) feeds TW multiply-adds, one per pixel, and each input value broadcast feeds NV.
 * NV and TW are compile-time constants at every call, so the accumulators live in
 * registers: 8 x 1 (8 independent chains hide the multiply-add latency: a tile of 2 ran at
 * a third of the speed) or 6 x 4 (10 loads per 24 multiply-adds, where 8 x 1 needs 9 per
 * 8; on AVX2 its 24 accumulators do not all fit in registers, and it is still correct). */
static inline __attribute__((always_inline)) void NAME(fastcnn_filter_vector_tile)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wt, ptrdiff_t KP,
    ptrdiff_t k0, ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW,
    ptrdiff_t p0, const int NV, const int TW, T *out, ptrdiff_t OH, ptrdiff_t OW)
{
    vec acc[4][8]; /* NV <= 4, TW <= 8 */
    ptrdiff_t origin[8]; /* of each pixel's window in an input channel */
    _Pragma("GCC unroll 8")
    for (int t = 0; t < TW; t++) {
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) acc[v][t] = (vec){0};
        origin[t] = (p0 + t) / OW * SH * WP + (p0 + t) % OW * SW;
    }
    const T *w = wt + k0;
    for (ptrdiff_t c = 0; c < C; c++) {
        for (ptrdiff_t i = 0; i < FH; i++) {
            const T *row = xpad + (c * HP + i) * WP;
            for (ptrdiff_t j = 0; j < FW; j++, w += KP) {
                vec weights[4];
                _Pragma("GCC unroll 8")
                for (int v = 0; v < NV; v++) weights[v] = LOAD(w + v * VL);
                _Pragma("GCC unroll 8")
                for (int t = 0; t < TW; t++) {
                    const T x = row[origin[t] + j];
                    _Pragma("GCC unroll 8")
                    for (int v = 0; v < NV; v++) acc[v][t] += x * weights[v];
                }
            }
        }
    }
    const ptrdiff_t P = OH * OW;
    for (int v = 0; v < NV; v++) {
        const ptrdiff_t first = k0 + v * VL, filters = K - first < VL ? K - first : VL;
        for (ptrdiff_t lane = 0; lane < filters; lane++) {
            T *dst = out + (first + lane) * P + p0;
            _Pragma("GCC unroll 8")
            for (int t = 0; t < TW; t++) dst[t] = acc[v][t][lane];
        }
    }
}

/* Pixels p_start .. P - 1 of filters k0 .. k0 + VL - 1: in tiles of 8, the last few in tiles
 * of 4, 2 and 1. */
static inline __attribute__((always_inline)) void NAME(fastcnn_filter_vector_pixels)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wt, ptrdiff_t KP,
    ptrdiff_t k0, ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW,
    ptrdiff_t p_start, T *out, ptrdiff_t OH, ptrdiff_t OW)
{
    const ptrdiff_t P = OH * OW;
    ptrdiff_t p0 = p_start;
    for (; p0 + 8 <= P; p0 += 8)
        NAME(fastcnn_filter_vector_tile)(xpad, C, HP, WP, wt, KP, k0, K, FH, FW, SH, SW, p0, 1, 8,
                                         out, OH, OW);
    for (; p0 + 4 <= P; p0 += 4)
        NAME(fastcnn_filter_vector_tile)(xpad, C, HP, WP, wt, KP, k0, K, FH, FW, SH, SW, p0, 1, 4,
                                         out, OH, OW);
    for (; p0 + 2 <= P; p0 += 2)
        NAME(fastcnn_filter_vector_tile)(xpad, C, HP, WP, wt, KP, k0, K, FH, FW, SH, SW, p0, 1, 2,
                                         out, OH, OW);
    for (; p0 < P; p0++)
        NAME(fastcnn_filter_vector_tile)(xpad, C, HP, WP, wt, KP, k0, K, FH, FW, SH, SW, p0, 1, 1,
                                         out, OH, OW);
}

/* out[k, oh, ow] := sum over (c, i, j) of w[k, c, i, j] * xpad[c, oh*SH + i, ow*SW + j],
 * vectorised across filters: wt is the weight as a (C*FH*FW, KP) matrix, KP >= K a multiple
 * of VL, zero past K. Any stride; pays off when K fills most of a vector. */
static FASTCNN_CLONES void NAME(fastcnn_filter_vector_forward)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *wt, ptrdiff_t KP,
    ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW, T *out, ptrdiff_t OH,
    ptrdiff_t OW)
{
    const ptrdiff_t P = OH * OW;
    ptrdiff_t k0 = 0;
    /* four filter vectors at a time while there are four whole ones, pixels in tiles of 6;
     * the pixels left over, and the filters left over, by the one-vector tiles below */
    for (; k0 + 4 * VL <= K; k0 += 4 * VL) {
        ptrdiff_t p0 = 0;
        for (; p0 + 6 <= P; p0 += 6)
            NAME(fastcnn_filter_vector_tile)(xpad, C, HP, WP, wt, KP, k0, K, FH, FW, SH, SW, p0,
                                             4, 6, out, OH, OW);
        for (ptrdiff_t v = 0; v < 4; v++)
            NAME(fastcnn_filter_vector_pixels)(xpad, C, HP, WP, wt, KP, k0 + v * VL, K, FH, FW,
                                               SH, SW, p0, out, OH, OW);
    }
    for (; k0 < K; k0 += VL)
        NAME(fastcnn_filter_vector_pixels)(xpad, C, HP, WP, wt, KP, k0, K, FH, FW, SH, SW, 0,
                                           out, OH, OW);
}

/* One tile of the filter-vector weight gradient: input row i of channel c, kernel columns
 * j0 .. j0 + FWC - 1, filters k0 .. k0 + VL - 1. For each output pixel, its gradient vector
 * (VL filters) is loaded once and multiplied by FWC broadcast input values. */
static inline __attribute__((always_inline)) void NAME(fastcnn_filter_vector_grad_tile)(
    const T *xpad, ptrdiff_t HP, ptrdiff_t WP, const T *dout_t, ptrdiff_t KP, ptrdiff_t k0,
    ptrdiff_t c, ptrdiff_t i, ptrdiff_t j0, const int FWC, ptrdiff_t FH, ptrdiff_t FW,
    ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t OH, ptrdiff_t OW, T *dw_t)
{
    /* even and odd pixels of a row in separate sums (then added): twice the independent
     * multiply-add chains, in a fixed order */
    vec even[5], odd[5]; /* FWC <= 5 */
    _Pragma("GCC unroll 8")
    for (int j = 0; j < FWC; j++) even[j] = odd[j] = (vec){0};
    for (ptrdiff_t oh = 0; oh < OH; oh++) {
        const T *row = xpad + (c * HP + oh * SH + i) * WP + j0;
        const T *g = dout_t + oh * OW * KP + k0;
        ptrdiff_t ow = 0;
        for (; ow + 2 <= OW; ow += 2) {
            const vec grad0 = LOAD(g + ow * KP), grad1 = LOAD(g + (ow + 1) * KP);
            _Pragma("GCC unroll 8")
            for (int j = 0; j < FWC; j++) {
                even[j] += row[ow * SW + j] * grad0;
                odd[j] += row[(ow + 1) * SW + j] * grad1;
            }
        }
        if (ow < OW) {
            const vec grad0 = LOAD(g + ow * KP);
            _Pragma("GCC unroll 8")
            for (int j = 0; j < FWC; j++) even[j] += row[ow * SW + j] * grad0;
        }
    }
    _Pragma("GCC unroll 8")
    for (int j = 0; j < FWC; j++) {
        T *dst = dw_t + ((c * FH + i) * FW + j0 + j) * KP + k0;
        *(uvec *)dst = LOAD(dst) + (even[j] + odd[j]);
    }
}

/* dw_t[(c*FH + i)*FW + j, k] += sum over (oh, ow) of dout_t[oh*OW + ow, k] *
 * xpad[c, oh*SH + i, ow*SW + j]: the weight gradient, transposed, vectorised across
 * filters. dout_t is the output gradient as a (OH*OW, KP) matrix, zero past K. */
static FASTCNN_CLONES void NAME(fastcnn_filter_vector_weight_grad)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *dout_t, ptrdiff_t KP,
    ptrdiff_t K, ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t OH,
    ptrdiff_t OW, T *dw_t)
{
    for (ptrdiff_t k0 = 0; k0 < K; k0 += VL) {
        for (ptrdiff_t c = 0; c < C; c++) {
            for (ptrdiff_t i = 0; i < FH; i++) {
                ptrdiff_t j0 = 0;
                for (; j0 + 5 <= FW; j0 += 5)
                    NAME(fastcnn_filter_vector_grad_tile)(xpad, HP, WP, dout_t, KP, k0, c, i, j0,
                                                          5, FH, FW, SH, SW, OH, OW, dw_t);
                for (; j0 + 3 <= FW; j0 += 3)
                    NAME(fastcnn_filter_vector_grad_tile)(xpad, HP, WP, dout_t, KP, k0, c, i, j0,
                                                          3, FH, FW, SH, SW, OH, OW, dw_t);
                for (; j0 < FW; j0++)
                    NAME(fastcnn_filter_vector_grad_tile)(xpad, HP, WP, dout_t, KP, k0, c, i, j0,
                                                          1, FH, FW, SH, SW, OH, OW, dw_t);
            }
        }
    }
}

/* x (C, H, W) := 0; x[c, oh*SH + i - PH, ow*SW + j - PW] += col[(c*FH + i)*FW + j, oh*OW + ow]
 * for every (c, i, j, oh, ow) inside x: im2col's adjoint for one image. Here rather than in
 * Cython for the clones: its short rows (LeNet conv2: 10 values) take one AVX-512 or AVX2
 * add where the baseline build needed three. */
static FASTCNN_CLONES void NAME(fastcnn_col2im)(
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
    T part[64 / sizeof(T)];
    for (ptrdiff_t lane = 0; lane < VL; lane++) part[lane] = v[lane];
    for (ptrdiff_t half = VL / 2; half > 0; half /= 2)
        for (ptrdiff_t lane = 0; lane < half; lane++) part[lane] += part[lane + half];
    return part[0];
}

/* One tile of the weight gradient: filters k0..k0+3 (d[r] their output gradients), input
 * row i of channel c, and FWC kernel columns j0..j0+FWC-1. Each block of output gradients
 * is loaded once and multiplied by FWC shifted input vectors. FWC is a compile-time
 * constant at every call, so the FWC x 4 accumulators live in registers. */
static inline __attribute__((always_inline)) void NAME(fastcnn_weight_grad_tile)(
    const T *xpad, ptrdiff_t HP, ptrdiff_t WP, const T *d[FASTCNN_FILTERS], ptrdiff_t K,
    ptrdiff_t k0, ptrdiff_t c, ptrdiff_t i, ptrdiff_t j0, const int FWC, ptrdiff_t Q,
    ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t OH, ptrdiff_t OW, mask keep, T *dw)
{
    vec acc[5][FASTCNN_FILTERS]; /* FWC <= 5 */
    _Pragma("GCC unroll 8")
    for (int j = 0; j < FWC; j++)
        _Pragma("GCC unroll 8")
        for (int r = 0; r < FASTCNN_FILTERS; r++) acc[j][r] = (vec){0};
    /* the row's whole blocks, then (in a loop of its own, so that the mask does not take
     * a register from the accumulators) its overlapping last block */
    for (ptrdiff_t oh = 0; oh < OH; oh++) {
        const T *row = xpad + (c * HP + oh + i) * WP + j0;
        for (ptrdiff_t o = 0; o + VL <= OW; o += VL) {
            vec g[FASTCNN_FILTERS];
            _Pragma("GCC unroll 8")
            for (int r = 0; r < FASTCNN_FILTERS; r++) g[r] = LOAD(d[r] + oh * OW + o);
            _Pragma("GCC unroll 8")
            for (int j = 0; j < FWC; j++) {
                const vec x = LOAD(row + o + j);
                _Pragma("GCC unroll 8")
                for (int r = 0; r < FASTCNN_FILTERS; r++) acc[j][r] += g[r] * x;
            }
        }
    }
    if (OW % VL) {
        const ptrdiff_t o = OW - VL;
        for (ptrdiff_t oh = 0; oh < OH; oh++) {
            const T *row = xpad + (c * HP + oh + i) * WP + j0;
            vec g[FASTCNN_FILTERS];
            _Pragma("GCC unroll 8")
            for (int r = 0; r < FASTCNN_FILTERS; r++)
                g[r] = (vec)((mask)LOAD(d[r] + oh * OW + o) & keep);
            _Pragma("GCC unroll 8")
            for (int j = 0; j < FWC; j++) {
                const vec x = (vec)((mask)LOAD(row + o + j) & keep);
                _Pragma("GCC unroll 8")
                for (int r = 0; r < FASTCNN_FILTERS; r++) acc[j][r] += g[r] * x;
            }
        }
    }
    for (int r = 0; r < FASTCNN_FILTERS && k0 + r < K; r++)
        _Pragma("GCC unroll 8")
        for (int j = 0; j < FWC; j++)
            dw[(k0 + r) * Q + (c * FH + i) * FW + j0 + j] += NAME(fastcnn_lane_sum)(acc[j][r]);
}

/* dw[k, (c*FH + i)*FW + j] += sum over (oh, ow) of dout[k, oh, ow] * xpad[c, oh+i, ow+j] */
static FASTCNN_CLONES void NAME(fastcnn_direct_weight_grad)(
    const T *xpad, ptrdiff_t C, ptrdiff_t HP, ptrdiff_t WP, const T *dout, ptrdiff_t K,
    ptrdiff_t FH, ptrdiff_t FW, ptrdiff_t OH, ptrdiff_t OW, T *dw)
{
    const ptrdiff_t Q = C * FH * FW, P = OH * OW;
    /* of a row's overlapping last block, the lanes below `overlap` were counted already */
    const ptrdiff_t overlap = OW % VL ? VL - OW % VL : 0;
    mask keep;
    for (ptrdiff_t lane = 0; lane < VL; lane++) keep[lane] = lane >= overlap ? -1 : 0;
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FASTCNN_FILTERS) {
        /* filters past K read filter k0's gradient instead, and are never stored */
        const T *d[FASTCNN_FILTERS];
        for (int r = 0; r < FASTCNN_FILTERS; r++) d[r] = dout + (k0 + r < K ? k0 + r : k0) * P;
        for (ptrdiff_t c = 0; c < C; c++) {
            for (ptrdiff_t i = 0; i < FH; i++) {
                /* columns in tiles of 5, then 3, then 1: constant tile widths */
                ptrdiff_t j0 = 0;
                for (; j0 + 5 <= FW; j0 += 5)
                    NAME(fastcnn_weight_grad_tile)(xpad, HP, WP, d, K, k0, c, i, j0, 5, Q, FH,
                                                   FW, OH, OW, keep, dw);
                for (; j0 + 3 <= FW; j0 += 3)
                    NAME(fastcnn_weight_grad_tile)(xpad, HP, WP, d, K, k0, c, i, j0, 3, Q, FH,
                                                   FW, OH, OW, keep, dw);
                for (; j0 < FW; j0++)
                    NAME(fastcnn_weight_grad_tile)(xpad, HP, WP, d, K, k0, c, i, j0, 1, Q, FH,
                                                   FW, OH, OW, keep, dw);
            }
        }
    }
}

#undef T
#undef NAME
#undef VL
#undef vec
#undef uvec
#undef mask
#undef LOAD
