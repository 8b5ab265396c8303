"""Every bad input of fastcnn.functional, with its exception type and message (PyTorch's
OpInfo ``error_inputs`` style): a clear Python error, never a crash or a wrong answer."""

import numpy as np
import pytest
from kernel_copies import ALL_GEOMETRIES

from fastcnn import functional as F

X = np.zeros((2, 3, 8, 8), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)
B = np.zeros(4, np.float32)
G = np.zeros((2, 4, 6, 6), np.float32)  # grad of conv2d(X, W)
P, IDX = F.max_pool2d(X, 2, return_indices=True)
XL = np.zeros((5, 400), np.float32)
# conv2d_relu_max_pool2d(X, W): a (2, 4, 6, 6) convolution output pooled to (2, 4, 3, 3)
PF, IF = F.conv2d_relu_max_pool2d(X, W)
GF = np.zeros_like(PF)
# ... and one that keeps its column matrices, (2, 27 * 3 * 3), on every ISA copy: im2col +
# GEMM, at stride 2 (no row kernel) with fewer filters than half the shortest vector (no
# filter kernel; functional._conv_method)
KG = min(copy.vl(np.float32) for copy in ALL_GEOMETRIES) // 2 - 1
WG = np.zeros((KG, 3, 3, 3), np.float32)
PG, IG, CG = F.conv2d_relu_max_pool2d(X, WG, stride=2, save_columns=True)
assert CG is not None and CG.shape == (2, 243), "not on im2col + GEMM: pick another geometry"
GG = np.zeros_like(PG)
WL = np.zeros((120, 400), np.float32)

ERROR_INPUTS = [
    # conv2d
    (
        "conv2d 3-D input",
        lambda: F.conv2d(X[0], W),
        ValueError,
        r"input must be 4-D, got shape \(3, 8, 8\) \(for one image, pass x\[None\]\)",
    ),
    (
        "conv2d 2-D input",
        lambda: F.conv2d(X[0, 0], W),
        ValueError,
        r"input must be 4-D, got shape \(8, 8\)",
    ),
    (
        "conv2d channel mismatch",
        lambda: F.conv2d(X, W[:, :2]),
        ValueError,
        r"input has 3 channels .* expects 2",
    ),
    ("conv2d weight 3-D", lambda: F.conv2d(X, W[0]), ValueError, r"weight must be 4-D"),
    (
        "conv2d groups channel mismatch",
        lambda: F.conv2d(X, W, groups=3),
        ValueError,
        r"conv2d: out_channels must be divisible by groups, got out_channels=4 and groups=3",
    ),
    (
        "conv2d groups weight shape",
        lambda: F.conv2d(np.zeros((2, 4, 8, 8), np.float32), W[:, :1], groups=2),
        ValueError,
        r"input has 4 channels .* expects 2 \(1 per group, groups=2\); weight must be "
        r"\(out_channels, in_channels // groups, kH, kW\)",
    ),
    (
        "conv2d groups not dividing the input",
        lambda: F.conv2d(X, W[:, :1], groups=2),
        ValueError,
        r"conv2d: in_channels must be divisible by groups, got in_channels=3 and groups=2",
    ),
    ("conv2d groups 0", lambda: F.conv2d(X, W, groups=0), ValueError, r"groups must be positive"),
    (
        "conv2d groups float",
        lambda: F.conv2d(X, W, groups=1.0),
        TypeError,
        r"conv2d: groups must be an int, got float 1.0",
    ),
    (
        "conv2d dilation 0",
        lambda: F.conv2d(X, W, dilation=0),
        ValueError,
        r"conv2d: dilation must be positive, got 0",
    ),
    (
        "conv2d dilation too big",
        lambda: F.conv2d(X, W, dilation=(4, 1)),
        ValueError,
        r"conv2d: dilated kernel size \(9, 3\) is larger than the padded input \(8, 8\)",
    ),
    (
        "conv2d_backward groups weight shape",
        lambda: F.conv2d_backward(G, X, W, groups=2),
        ValueError,
        r"conv2d_backward: in_channels must be divisible by groups",
    ),
    (
        "conv2d_backward grad of the dilated shape",
        lambda: F.conv2d_backward(G, X, W, dilation=2),
        ValueError,
        r"grad_output has shape \(2, 4, 6, 6\), expected \(2, 4, 4, 4\)",
    ),
    (
        "conv2d bias length",
        lambda: F.conv2d(X, W, B[:3]),
        ValueError,
        r"bias has shape \(3,\), expected \(4,\)",
    ),
    ("conv2d bias 2-D", lambda: F.conv2d(X, W, B[None]), ValueError, r"bias must be 1-D"),
    (
        "conv2d kernel too big",
        lambda: F.conv2d(X, np.zeros((1, 3, 11, 3), np.float32)),
        ValueError,
        r"kernel size \(11, 3\) is larger than the padded input \(8, 8\)",
    ),
    (
        "conv2d kernel too big padded",
        lambda: F.conv2d(X, np.zeros((1, 3, 11, 3), np.float32), padding=1),
        ValueError,
        r"larger than the padded input \(10, 10\)",
    ),
    (
        "conv2d stride 0",
        lambda: F.conv2d(X, W, stride=0),
        ValueError,
        r"stride must be positive, got 0",
    ),
    (
        "conv2d stride negative pair",
        lambda: F.conv2d(X, W, stride=(1, -1)),
        ValueError,
        r"stride must be positive",
    ),
    (
        "conv2d negative padding",
        lambda: F.conv2d(X, W, padding=-1),
        ValueError,
        r"padding must be >= 0, got -1",
    ),
    (
        "conv2d float stride",
        lambda: F.conv2d(X, W, stride=1.5),
        TypeError,
        r"stride must be an int or a pair of ints, got 1.5",
    ),
    (
        "conv2d bool padding",
        lambda: F.conv2d(X, W, padding=True),
        TypeError,
        r"padding must be an int or a pair",
    ),
    (
        "conv2d triple stride",
        lambda: F.conv2d(X, W, stride=(1, 1, 1)),
        TypeError,
        r"stride must be an int or a pair",
    ),
    (
        "conv2d int input",
        lambda: F.conv2d(X.astype(np.int64), W),
        TypeError,
        r"input has dtype int64; .* float32 or float64 .*astype\(np.float32\)",
    ),
    ("conv2d bool input", lambda: F.conv2d(X.astype(bool), W), TypeError, r"input has dtype bool"),
    (
        "conv2d complex input",
        lambda: F.conv2d(X.astype(np.complex64), W),
        TypeError,
        r"input has dtype complex64",
    ),
    (
        "conv2d object input",
        lambda: F.conv2d(X.astype(object), W),
        TypeError,
        r"input has dtype object",
    ),
    (
        "conv2d float16 input",
        lambda: F.conv2d(X.astype(np.float16), W),
        TypeError,
        r"input has dtype float16",
    ),
    (
        "conv2d mixed dtypes",
        lambda: F.conv2d(X, W.astype(np.float64)),
        TypeError,
        r"weight is float64 but the input is float32; .* weight.astype\(np.float32\)",
    ),
    (
        "conv2d mixed bias dtype",
        lambda: F.conv2d(X, W, B.astype(np.float64)),
        TypeError,
        r"bias is float64 but the input is float32",
    ),
    (
        "conv2d None weight",
        lambda: F.conv2d(X, None),
        TypeError,
        r"weight must be an array, got None",
    ),
    (
        "conv2d empty channels",
        lambda: F.conv2d(np.zeros((2, 0, 8, 8), np.float32), W),
        ValueError,
        r"empty channel or spatial dimension",
    ),
    (
        "conv2d empty kernel",
        lambda: F.conv2d(X, np.zeros((0, 3, 3, 3), np.float32)),
        ValueError,
        r"weight of shape \(0, 3, 3, 3\) has an empty dimension",
    ),
    # conv2d_backward
    (
        "conv2d_backward grad shape",
        lambda: F.conv2d_backward(G[:, :, :5], X, W),
        ValueError,
        r"grad_output has shape \(2, 4, 5, 6\), expected \(2, 4, 6, 6\)",
    ),
    (
        "conv2d_backward grad dtype",
        lambda: F.conv2d_backward(G.astype(np.float64), X, W),
        TypeError,
        r"grad_output is float64 but the input is float32",
    ),
    (
        "conv2d_backward 3-D grad",
        lambda: F.conv2d_backward(G[0], X, W),
        ValueError,
        r"grad_output must be 4-D",
    ),
    (
        "conv2d_backward columns shape",
        lambda: F.conv2d_backward(G, X, W, columns=np.zeros((2, 10), np.float32)),
        ValueError,
        r"columns has shape \(2, 10\), expected \(2, 972\) \(from conv2d\(..., save_columns=True\)",
    ),
    (
        "conv2d_backward columns dtype",
        lambda: F.conv2d_backward(G, X, W, columns=np.zeros((2, 972))),
        TypeError,
        r"columns is float64 but the input is float32",
    ),
    # im2col / col2im
    (
        "im2col kernel too big",
        lambda: F.im2col(X, 9),
        ValueError,
        r"kernel size \(9, 9\) is larger than the padded input",
    ),
    ("im2col kernel 0", lambda: F.im2col(X, 0), ValueError, r"kernel_size must be positive"),
    ("im2col 3-D", lambda: F.im2col(X[0], 3), ValueError, r"input must be 4-D"),
    (
        "col2im wrong rows",
        lambda: F.col2im(np.zeros((71, 27), np.float32), X.shape, 3),
        ValueError,
        r"col has shape \(71, 27\), expected \(72, 27\)",
    ),
    (
        "col2im bad input_shape",
        lambda: F.col2im(np.zeros((72, 27), np.float32), (2, 3, 8), 3),
        ValueError,
        r"input_shape must be \(N, C, H, W\)",
    ),
    (
        "col2im non-int input_shape",
        lambda: F.col2im(np.zeros((72, 27), np.float32), "abcd", 3),
        TypeError,
        r"input_shape must be a tuple of 4 ints",
    ),
    (
        "col2im int col",
        lambda: F.col2im(np.zeros((72, 27), np.int32), X.shape, 3),
        TypeError,
        r"col has dtype int32",
    ),
    # max_pool2d
    (
        "max_pool2d padding too big",
        lambda: F.max_pool2d(X, 2, padding=2),
        ValueError,
        r"padding \(2, 2\) must be at most half the kernel size \(2, 2\)",
    ),
    (
        "max_pool2d kernel too big",
        lambda: F.max_pool2d(X, 9),
        ValueError,
        r"kernel size \(9, 9\) is larger than the padded input \(8, 8\)",
    ),
    ("max_pool2d stride 0", lambda: F.max_pool2d(X, 2, 0), ValueError, r"stride must be positive"),
    (
        "max_pool2d negative padding",
        lambda: F.max_pool2d(X, 2, padding=-1),
        ValueError,
        r"padding must be >= 0",
    ),
    (
        "max_pool2d kernel 0",
        lambda: F.max_pool2d(X, 0),
        ValueError,
        r"kernel_size must be positive",
    ),
    ("max_pool2d 3-D", lambda: F.max_pool2d(X[0], 2), ValueError, r"input must be 4-D"),
    (
        "max_pool2d int",
        lambda: F.max_pool2d(X.astype(np.int8), 2),
        TypeError,
        r"input has dtype int8",
    ),
    (
        "max_pool2d_backward bad index",
        lambda: F.max_pool2d_backward(P, IDX + 64, X.shape),
        ValueError,
        r"indices must lie in \[0, 64\), H\*W of input_shape \(2, 3, 8, 8\)",
    ),
    (
        "max_pool2d_backward negative index",
        lambda: F.max_pool2d_backward(P, IDX - 1, X.shape),
        ValueError,
        r"indices must lie in \[0, 64\), H\*W of input_shape",
    ),
    (
        "max_pool2d_backward float index",
        lambda: F.max_pool2d_backward(P, IDX.astype(np.float32), X.shape),
        TypeError,
        r"indices must be integers",
    ),
    (
        "max_pool2d_backward index shape",
        lambda: F.max_pool2d_backward(P, IDX[:, :, :2], X.shape),
        ValueError,
        r"indices has shape \(2, 3, 2, 4\), expected \(2, 3, 4, 4\)",
    ),
    (
        "max_pool2d_backward N mismatch",
        lambda: F.max_pool2d_backward(P, IDX, (3, 3, 8, 8)),
        ValueError,
        r"does not match input_shape",
    ),
    # avg_pool2d
    (
        "avg_pool2d padding too big",
        lambda: F.avg_pool2d(X, 3, padding=2),
        ValueError,
        r"padding \(2, 2\) must be at most half",
    ),
    (
        "avg_pool2d kernel too big",
        lambda: F.avg_pool2d(X, (2, 10)),
        ValueError,
        r"kernel size \(2, 10\) is larger",
    ),
    (
        "avg_pool2d complex",
        lambda: F.avg_pool2d(X.astype(np.complex128), 2),
        TypeError,
        r"input has dtype complex128",
    ),
    (
        "avg_pool2d_backward grad shape",
        lambda: F.avg_pool2d_backward(P[:, :, :3], X.shape, 2),
        ValueError,
        r"grad_output has shape \(2, 3, 3, 4\), expected \(2, 3, 4, 4\)",
    ),
    # conv2d_relu_max_pool2d
    (
        "conv2d_relu_max_pool2d int input",
        lambda: F.conv2d_relu_max_pool2d(X.astype(np.int64), W),
        TypeError,
        r"^conv2d_relu_max_pool2d: input has dtype int64; .* float32 or float64 .*astype\(np.float32\)",
    ),
    (
        "conv2d_relu_max_pool2d mixed dtypes",
        lambda: F.conv2d_relu_max_pool2d(X, W.astype(np.float64)),
        TypeError,
        r"weight is float64 but the input is float32; .* weight.astype\(np.float32\)",
    ),
    (
        "conv2d_relu_max_pool2d mixed bias dtype",
        lambda: F.conv2d_relu_max_pool2d(X, W, B.astype(np.float64)),
        TypeError,
        r"bias is float64 but the input is float32",
    ),
    (
        "conv2d_relu_max_pool2d 3-D input",
        lambda: F.conv2d_relu_max_pool2d(X[0], W),
        ValueError,
        r"input must be 4-D, got shape \(3, 8, 8\) \(for one image, pass x\[None\]\)",
    ),
    (
        "conv2d_relu_max_pool2d channel mismatch",
        lambda: F.conv2d_relu_max_pool2d(X, W[:, :2]),
        ValueError,
        r"input has 3 channels .* expects 2",
    ),
    (
        "conv2d_relu_max_pool2d bias length",
        lambda: F.conv2d_relu_max_pool2d(X, W, B[:3]),
        ValueError,
        r"bias has shape \(3,\), expected \(4,\)",
    ),
    (
        "conv2d_relu_max_pool2d conv kernel too big",
        lambda: F.conv2d_relu_max_pool2d(X, np.zeros((1, 3, 11, 3), np.float32)),
        ValueError,
        r"kernel size \(11, 3\) is larger than the padded input \(8, 8\)",
    ),
    (
        "conv2d_relu_max_pool2d conv stride 0",
        lambda: F.conv2d_relu_max_pool2d(X, W, stride=0),
        ValueError,
        r"stride must be positive, got 0",
    ),
    (
        "conv2d_relu_max_pool2d pool window larger than conv output",
        lambda: F.conv2d_relu_max_pool2d(X, W, pool_kernel_size=7),
        ValueError,
        r"pool kernel size \(7, 7\) is larger than the padded convolution output \(6, 6\) \(convolution output \(6, 6\) \+ padding",
    ),
    (
        "conv2d_relu_max_pool2d pool window larger than padded conv output",
        lambda: F.conv2d_relu_max_pool2d(X, W, pool_kernel_size=(2, 9), pool_padding=(0, 1)),
        ValueError,
        r"pool kernel size \(2, 9\) is larger than the padded convolution output \(6, 8\)",
    ),
    (
        "conv2d_relu_max_pool2d pool padding over half",
        lambda: F.conv2d_relu_max_pool2d(X, W, pool_kernel_size=2, pool_padding=2),
        ValueError,
        r"pool_padding \(2, 2\) must be at most half the pool kernel size \(2, 2\)",
    ),
    (
        "conv2d_relu_max_pool2d pool padding over half of one side",
        lambda: F.conv2d_relu_max_pool2d(X, W, pool_kernel_size=(3, 2), pool_padding=(1, 2)),
        ValueError,
        r"pool_padding \(1, 2\) must be at most half the pool kernel size \(3, 2\)",
    ),
    (
        "conv2d_relu_max_pool2d pool stride 0",
        lambda: F.conv2d_relu_max_pool2d(X, W, pool_stride=0),
        ValueError,
        r"pool_stride must be positive, got 0",
    ),
    (
        "conv2d_relu_max_pool2d pool kernel 0",
        lambda: F.conv2d_relu_max_pool2d(X, W, pool_kernel_size=0),
        ValueError,
        r"pool_kernel_size must be positive, got 0",
    ),
    (
        "conv2d_relu_max_pool2d float pool kernel",
        lambda: F.conv2d_relu_max_pool2d(X, W, pool_kernel_size=2.0),
        TypeError,
        r"pool_kernel_size must be an int or a pair of ints, got 2.0",
    ),
    (
        "conv2d_relu_max_pool2d save_columns not a bool",
        lambda: F.conv2d_relu_max_pool2d(X, W, save_columns="no"),
        TypeError,
        r"^conv2d_relu_max_pool2d: save_columns must be True or False, got 'no'",
    ),
    # conv2d_relu_max_pool2d_backward
    (
        "conv2d_relu_max_pool2d_backward input_grad not a bool",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, IF, X, W, input_grad="no"),
        TypeError,
        r"input_grad must be True or False, got 'no'",
    ),
    (
        "conv2d_relu_max_pool2d_backward bias_grad not a bool",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, IF, X, W, bias_grad=None),
        TypeError,
        r"bias_grad must be True or False, got None",
    ),
    (
        "conv2d_relu_max_pool2d_backward int input",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, IF, X.astype(np.int32), W),
        TypeError,
        r"^conv2d_relu_max_pool2d_backward: input has dtype int32",
    ),
    (
        "conv2d_relu_max_pool2d_backward grad dtype",
        lambda: F.conv2d_relu_max_pool2d_backward(GF.astype(np.float64), PF, IF, X, W),
        TypeError,
        r"grad_output is float64 but the input is float32; .* grad_output.astype\(np.float32\)",
    ),
    (
        "conv2d_relu_max_pool2d_backward output dtype",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF.astype(np.float64), IF, X, W),
        TypeError,
        r"output is float64 but the input is float32",
    ),
    (
        "conv2d_relu_max_pool2d_backward 3-D input",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, IF, X[0], W),
        ValueError,
        r"input must be 4-D, got shape \(3, 8, 8\)",
    ),
    (
        "conv2d_relu_max_pool2d_backward channel mismatch",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, IF, X, W[:, :2]),
        ValueError,
        r"input has 3 channels .* expects 2",
    ),
    (
        "conv2d_relu_max_pool2d_backward grad shape",
        lambda: F.conv2d_relu_max_pool2d_backward(GF[:, :, :2], PF, IF, X, W),
        ValueError,
        r"grad_output has shape \(2, 4, 2, 3\), expected \(2, 4, 3, 3\)",
    ),
    (
        "conv2d_relu_max_pool2d_backward 3-D grad",
        lambda: F.conv2d_relu_max_pool2d_backward(GF[0], PF, IF, X, W),
        ValueError,
        r"grad_output must be 4-D",
    ),
    (
        "conv2d_relu_max_pool2d_backward output batch mismatch",
        lambda: F.conv2d_relu_max_pool2d_backward(GF[:1], PF[:1], IF[:1], X, W),
        ValueError,
        r"output has shape \(1, 4, 3, 3\), expected \(N, K\) = \(2, 4\) in front",
    ),
    (
        "conv2d_relu_max_pool2d_backward output channel mismatch",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF[:, :3], IF, X, W),
        ValueError,
        r"output has shape \(2, 3, 3, 3\), expected \(N, K\) = \(2, 4\)",
    ),
    (
        "conv2d_relu_max_pool2d_backward None output",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, None, IF, X, W),
        TypeError,
        r"output must be an array, got None",
    ),
    (
        "conv2d_relu_max_pool2d_backward indices shape",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, IF[:, :, :2], X, W),
        ValueError,
        r"indices has shape \(2, 4, 2, 3\), expected \(2, 4, 3, 3\)",
    ),
    (
        "conv2d_relu_max_pool2d_backward index past the conv plane",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, IF + 36, X, W),
        ValueError,
        r"indices must lie in \[0, 36\), OH\*OW of the convolution's \(6, 6\) output \(are stride and padding those of the forward call\?\); got values in \[36, ",
    ),
    (
        "conv2d_relu_max_pool2d_backward negative index",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, IF - 1, X, W),
        ValueError,
        r"indices must lie in \[0, 36\), OH\*OW .*got values in \[-1, ",
    ),
    (
        "conv2d_relu_max_pool2d_backward float indices",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, IF.astype(np.float32), X, W),
        TypeError,
        r"indices must be integers, got dtype float32",
    ),
    (
        "conv2d_relu_max_pool2d_backward None indices",
        lambda: F.conv2d_relu_max_pool2d_backward(GF, PF, None, X, W),
        TypeError,
        r"indices must be integers, got dtype object",
    ),
    (
        "conv2d_relu_max_pool2d_backward columns shape",
        lambda: F.conv2d_relu_max_pool2d_backward(GG, PG, IG, X, WG, stride=2, columns=CG[:, :10]),
        ValueError,
        r"columns has shape \(2, 10\), expected \(2, 243\) \(from conv2d_relu_max_pool2d\(..., save_columns=True\)",
    ),
    (
        "conv2d_relu_max_pool2d_backward columns of a conv2d with another stride",
        lambda: F.conv2d_relu_max_pool2d_backward(
            GG, PG, IG, X, WG, stride=2, columns=F.conv2d(X, WG, stride=3, save_columns=True)[1]
        ),
        ValueError,
        r"columns has shape \(2, 108\), expected \(2, 243\)",
    ),
    (
        "conv2d_relu_max_pool2d_backward columns dtype",
        lambda: F.conv2d_relu_max_pool2d_backward(
            GG, PG, IG, X, WG, stride=2, columns=CG.astype(np.float64)
        ),
        TypeError,
        r"columns is float64 but the input is float32",
    ),
    # linear
    (
        "linear width mismatch",
        lambda: F.linear(np.zeros((5, 256), np.float32), WL),
        ValueError,
        r"input has 256 features \(last dim of shape \(5, 256\)\) but weight of shape \(120, 400\) expects 400",
    ),
    (
        "linear scalar input",
        lambda: F.linear(np.float32(1), WL),
        ValueError,
        r"input must have at least 1 dimension",
    ),
    ("linear 3-D weight", lambda: F.linear(XL, WL[None]), ValueError, r"weight must be 2-D"),
    (
        "linear bias length",
        lambda: F.linear(XL, WL, np.zeros(3, np.float32)),
        ValueError,
        r"bias has shape \(3,\), expected \(120,\)",
    ),
    (
        "linear mixed dtypes",
        lambda: F.linear(XL, WL.astype(np.float64)),
        TypeError,
        r"weight is float64 but the input is float32",
    ),
    (
        "linear int input",
        lambda: F.linear(XL.astype(np.int32), WL),
        TypeError,
        r"input has dtype int32",
    ),
    (
        "linear None input",
        lambda: F.linear(None, WL),
        ValueError,
        r"input must have at least 1 dimension",
    ),
    (
        "linear_backward grad shape",
        lambda: F.linear_backward(np.zeros((5, 7), np.float32), XL, WL),
        ValueError,
        r"grad_output has shape \(5, 7\), expected \(5, 120\)",
    ),
    (
        "linear_backward grad ndim",
        lambda: F.linear_backward(np.zeros(120, np.float32), XL, WL),
        ValueError,
        r"grad_output must be 2-D",
    ),
    (
        "avg_pool2d str flag",
        lambda: F.avg_pool2d(X, 2, count_include_pad="no"),
        TypeError,
        r"count_include_pad must be True or False, got 'no'",
    ),
    (
        "avg_pool2d_backward int flag",
        lambda: F.avg_pool2d_backward(P, X.shape, 2, count_include_pad=2),
        TypeError,
        r"count_include_pad must be True or False, got 2",
    ),
    # relu
    ("relu int input", lambda: F.relu(np.arange(3)), TypeError, r"relu: input has dtype int64"),
    ("relu None", lambda: F.relu(None), TypeError, r"relu: input must be an array, got None"),
    (
        "relu_backward shape",
        lambda: F.relu_backward(np.ones(3, np.float32), np.ones(4, np.float32)),
        ValueError,
        r"grad_output has shape \(3,\), expected \(4,\)",
    ),
    (
        "relu_backward mixed dtypes",
        lambda: F.relu_backward(np.ones(3), np.ones(3, np.float32)),
        TypeError,
        r"grad_output is float64 but the input is float32",
    ),
    # add_relu
    (
        "add_relu int input",
        lambda: F.add_relu(np.arange(3), np.ones(3)),
        TypeError,
        r"add_relu: input has dtype int64",
    ),
    (
        "add_relu broadcast",
        lambda: F.add_relu(np.ones((2, 3), np.float32), np.ones(3, np.float32)),
        ValueError,
        r"add_relu: other must be 2-D, got shape \(3,\)",
    ),
    (
        "add_relu shape",
        lambda: F.add_relu(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)),
        ValueError,
        r"add_relu: other has shape \(3, 2\), expected \(2, 3\) \(the input's shape: no "
        r"broadcasting\)",
    ),
    (
        "add_relu mixed dtypes",
        lambda: F.add_relu(np.ones(3, np.float32), np.ones(3)),
        TypeError,
        r"add_relu: other is float64 but the input is float32",
    ),
]


@pytest.mark.parametrize(
    "call, error, message", [c[1:] for c in ERROR_INPUTS], ids=[c[0] for c in ERROR_INPUTS]
)
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_error_messages_name_the_function():
    with pytest.raises(ValueError, match=r"^conv2d: "):
        F.conv2d(X[0], W)
    with pytest.raises(ValueError, match=r"^max_pool2d: "):
        F.max_pool2d(X, 2, padding=2)
