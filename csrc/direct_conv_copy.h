/* One ISA copy of the direct convolution kernels: direct_conv_impl.h for float and double,
 * and the copy's dispatch table. Included by direct_conv.h once per copy, with FASTCNN_COPY
 * (its name), FASTCNN_COPY_NAME, FASTCNN_ISA_LEVEL, FASTCNN_PORTABLE, FASTCNN_VECTOR_BYTES
 * and the tile sizes defined; the copy's own macros (all but FASTCNN_PORTABLE and the
 * pixel tiles, which copies share) are undefined at the end. No include guard: that is
 * the point. */

#define FASTCNN_T float
#define FASTCNN_MASK_T int32_t
#define FASTCNN_SUFFIX FASTCNN_CAT(f32, FASTCNN_COPY)
#include "direct_conv_impl.h"
#undef FASTCNN_T
#undef FASTCNN_MASK_T
#undef FASTCNN_SUFFIX

#define FASTCNN_T double
#define FASTCNN_MASK_T int64_t
#define FASTCNN_SUFFIX FASTCNN_CAT(f64, FASTCNN_COPY)
#include "direct_conv_impl.h"
#undef FASTCNN_T
#undef FASTCNN_MASK_T
#undef FASTCNN_SUFFIX

#define FASTCNN_KERNEL(name, type) FASTCNN_CAT(FASTCNN_CAT(name, type), FASTCNN_COPY)
static const fastcnn_kernel_table FASTCNN_CAT(fastcnn_kernels, FASTCNN_COPY) = {
    FASTCNN_COPY_NAME,
    FASTCNN_ISA_LEVEL,
    FASTCNN_VECTOR_BYTES / sizeof(float),
    FASTCNN_VECTOR_BYTES / sizeof(double),
    FASTCNN_WIDE_NV * (FASTCNN_VECTOR_BYTES / sizeof(float)),
    FASTCNN_WIDE_NV * (FASTCNN_VECTOR_BYTES / sizeof(double)),
    FASTCNN_KERNEL(fastcnn_row_forward, f32),
    FASTCNN_KERNEL(fastcnn_row_forward, f64),
    FASTCNN_KERNEL(fastcnn_row_weight_grad, f32),
    FASTCNN_KERNEL(fastcnn_row_weight_grad, f64),
    FASTCNN_KERNEL(fastcnn_filter_forward, f32),
    FASTCNN_KERNEL(fastcnn_filter_forward, f64),
    FASTCNN_KERNEL(fastcnn_filter_weight_grad, f32),
    FASTCNN_KERNEL(fastcnn_filter_weight_grad, f64),
    FASTCNN_KERNEL(fastcnn_col2im, f32),
    FASTCNN_KERNEL(fastcnn_col2im, f64),
    FASTCNN_KERNEL(fastcnn_transpose_padded, f32),
    FASTCNN_KERNEL(fastcnn_transpose_padded, f64),
    FASTCNN_KERNEL(fastcnn_depthwise_forward, f32),
    FASTCNN_KERNEL(fastcnn_depthwise_forward, f64),
    FASTCNN_KERNEL(fastcnn_depthwise_weight_grad, f32),
    FASTCNN_KERNEL(fastcnn_depthwise_weight_grad, f64),
};
#undef FASTCNN_KERNEL

#undef FASTCNN_COPY
#undef FASTCNN_COPY_NAME
#undef FASTCNN_ISA_LEVEL
#undef FASTCNN_VECTOR_BYTES
#undef FASTCNN_WIDE_NV
#undef FASTCNN_GRAD_COLS
