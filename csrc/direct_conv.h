/* Direct (im2col-free) convolution of one image at stride 1, vectorised along output rows.
 *
 * Why: for a layer with few input channels (LeNet's first layer: 1 channel, 6 filters of
 * 5x5) the im2col matrix is 25 rows of 784 pixels, and multiplying it by a 6 x 25 weight
 * matrix is a shape no BLAS is fast at. Here each output row is cut into vectors of VL
 * pixels (16 floats or 8 doubles: one AVX-512 register, two AVX2 ones), and four filters
 * are computed at once: each input vector loaded feeds four multiply-adds.
 *
 * Wheels cannot be built with -march=native, so the kernels are compiled three times (GCC's
 * target_clones: x86-64-v4 = AVX-512, x86-64-v3 = AVX2 + FMA, and the baseline) and the
 * loader picks the best one the CPU supports. The vector types are GCC vector extensions,
 * so the same source is correct on every clone. The kernels are written once, in
 * direct_conv_impl.h, and instantiated below for float and double.
 *
 * Layouts (all row-major):
 *   xpad   (C, HP, WP): the input image with its zero padding already in place;
 *          HP = OH + FH - 1 and WP = OW + FW - 1 (stride 1).
 *   wpack  (ceil(K/4), C*FH*FW, 4): the weights of four filters side by side, zero past K.
 *   out    (K, OH, OW);  dout (K, OH, OW);  dw (K, C*FH*FW).
 * Every output row must hold at least VL pixels (OW >= VL): the caller checks.
 *
 * Determinism: every output value is computed by the same operations in the same order
 * whatever the thread count. A row whose width is not a multiple of VL ends with a block
 * that overlaps the one before it: the forward pass recomputes those pixels identically,
 * and the weight gradient zeroes both operands of the products it has already counted
 * (both, so that such a product is 0 * 0, never 0 * inf: no NaN the GEMM path would not add).
 */
#ifndef FASTCNN_DIRECT_CONV_H
#define FASTCNN_DIRECT_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_dispatch.h"

#define FASTCNN_FILTERS 4 /* filters computed together */
#define FASTCNN_CAT_(a, b) a##_##b
#define FASTCNN_CAT(a, b) FASTCNN_CAT_(a, b)

#define FASTCNN_T float
#define FASTCNN_MASK_T int32_t
#define FASTCNN_SUFFIX f32
#include "direct_conv_impl.h"
#undef FASTCNN_T
#undef FASTCNN_MASK_T
#undef FASTCNN_SUFFIX

#define FASTCNN_T double
#define FASTCNN_MASK_T int64_t
#define FASTCNN_SUFFIX f64
#include "direct_conv_impl.h"
#undef FASTCNN_T
#undef FASTCNN_MASK_T
#undef FASTCNN_SUFFIX

#endif /* FASTCNN_DIRECT_CONV_H */
