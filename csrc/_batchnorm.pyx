# cython: language_level=3
"""BatchNorm kernels on (N, C, S) arrays: S is H*W for BatchNorm2d, L or 1 for BatchNorm1d.

Training forward (batch statistics), evaluation forward and backward. Each training kernel
works one channel at a time, all its passes together, so the channel's N rows of S values
are still in cache for the next pass (NumPy's reductions over axes (0, 2, 3) take a pass
each and run on one thread). Channels are spread over fastcnn's threads; a channel is
summed by one thread in a fixed order, so the bits are the same for any thread count.
The forward pass's sums (channel_sum) are eight partial sums in the input's dtype:
independent add chains the compiler keeps in vector registers (four floats to an SSE
register), whose totals, and so the statistics, are in double. The backward pass's keep
four scalar double sums a row: measured, the float lanes were no faster there and slower
on 4x4 maps. Kernel alone, one thread, AMD EPYC, ms per call, four scalar double sums a
row -> the lanes: forward (64, 16, 32, 32) 0.77 -> 0.50, (64, 128, 8, 8) 0.40 -> 0.27-0.35,
(64, 512, 4, 4) 0.48-0.53 -> 0.33-0.42; backward (64, 512, 4, 4) 0.82-0.88 -> 1.21. The
element-wise passes are in the input's dtype with per-channel coefficients rounded once.

Each kernel can also apply the ReLU that follows a BatchNorm (nn/_fusion.py): the forward
kernels write relu(y) with relu_block's select, and the backward takes the ReLU's output
and uses relu_grad_block's masked gradient wherever it reads grad_out. The bits are those
of the two layers run one after the other, without the ReLU's two passes over memory.

Per-channel statistics and coefficients are float64 arrays of length C. Contract as in
_conv.pyx: the caller validates and allocates; nothing here validates.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

from _relu_block cimport relu_grad_block


cdef enum:
    LANES = 8  # partial sums: independent add chains the compiler keeps in vector registers
    LANE_DEPTH = 32  # values each lane sums in the input's dtype before it goes to double


cdef inline void clear(floating *lane) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(LANES):
        lane[j] = 0


cdef inline double lanes_total(const floating *lane) noexcept nogil:
    """The LANES partial sums added in a fixed tree, in double"""
    return ((<double> lane[0] + lane[1]) + (<double> lane[2] + lane[3])) + (
        (<double> lane[4] + lane[5]) + (<double> lane[6] + lane[7]))


cdef inline bint lanes_full(Py_ssize_t *depth, Py_ssize_t S) noexcept nogil:
    """Count a row of S values into the lanes' depth; true (and restart the count) once
    each lane holds LANE_DEPTH values, when the caller moves the lanes into its total"""
    depth[0] = depth[0] + (S + LANES - 1) // LANES
    if depth[0] < LANE_DEPTH:
        return False
    depth[0] = 0
    return True


# The forward pass's channel sum takes the channel's N rows of S values in order (row n at
# x + n * stride). A row's values go to the lanes in turn (value i to lane i % LANES) in
# the input's dtype, and the last S % LANES straight to the double total; the lanes' tree
# total goes to the double whenever they are LANE_DEPTH deep, and at the end. So 4x4 rows
# share their lanes instead of paying a flush each, and the lanes are only ever indexed by
# constants: the compiler keeps them in registers.


cdef inline double channel_sum(const floating *x, Py_ssize_t N, Py_ssize_t stride,
                               Py_ssize_t S, floating shift, bint squared) noexcept nogil:
    """The sum over the channel of value - shift, or of its square if squared (the compiler
    takes the flag out of the loops)"""
    cdef floating lane[LANES]
    cdef const floating *row
    cdef floating d
    cdef double total = 0
    cdef Py_ssize_t n, i, j, depth = 0
    clear(lane)
    for n in range(N):
        row = x + n * stride
        i = 0
        while i + LANES <= S:
            for j in range(LANES):
                d = row[i + j] - shift
                lane[j] = lane[j] + (d * d if squared else d)
            i = i + LANES
        while i < S:
            d = row[i] - shift
            total = total + (d * d if squared else d)
            i = i + 1
        if lanes_full(&depth, S):
            total = total + lanes_total(lane)
            clear(lane)
    return total + lanes_total(lane)


cdef inline void row_grad_sums(const floating *g, const floating *x, Py_ssize_t n, double mean,
                               double *sum_g, double *sum_g_dev) noexcept nogil:
    """sum_g += sum of g[i]; sum_g_dev += sum of g[i] * (x[i] - mean); in double, each as
    four interleaved partial sums added in order"""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        a0 = a0 + g[i]
        a1 = a1 + g[i + 1]
        a2 = a2 + g[i + 2]
        a3 = a3 + g[i + 3]
        b0 = b0 + g[i] * (x[i] - mean)
        b1 = b1 + g[i + 1] * (x[i + 1] - mean)
        b2 = b2 + g[i + 2] * (x[i + 2] - mean)
        b3 = b3 + g[i + 3] * (x[i + 3] - mean)
        i = i + 4
    while i < n:
        a0 = a0 + g[i]
        b0 = b0 + g[i] * (x[i] - mean)
        i = i + 1
    sum_g[0] = sum_g[0] + ((a0 + a1) + (a2 + a3))
    sum_g_dev[0] = sum_g_dev[0] + ((b0 + b1) + (b2 + b3))


cdef inline void normalise_row(const floating *x, floating *y, Py_ssize_t n, floating mean,
                               floating scale, floating shift, bint relu) noexcept nogil:
    """y := (x - mean) * scale + shift, then with relu relu_block's 0 where y <= 0"""
    cdef Py_ssize_t i
    cdef floating value
    if relu:
        for i in range(n):
            value = (x[i] - mean) * scale + shift
            y[i] = 0 if value <= 0 else value
    else:
        for i in range(n):
            y[i] = (x[i] - mean) * scale + shift


cdef inline void scale_row(const floating *g, floating *gx, Py_ssize_t n,
                           floating a) noexcept nogil:
    """gx := a * g (g may be gx)"""
    cdef Py_ssize_t i
    for i in range(n):
        gx[i] = a * g[i]


cdef inline void input_grad_row(const floating *g, const floating *x, floating *gx,
                                Py_ssize_t n, floating mean, floating a, floating b,
                                floating d) noexcept nogil:
    """gx := a * g - b * (x - mean) - d"""
    cdef Py_ssize_t i
    for i in range(n):
        gx[i] = a * g[i] - b * (x[i] - mean) - d


cdef inline void input_grad_row_in_place(const floating *x, floating *gx, Py_ssize_t n,
                                         floating mean, floating a, floating b,
                                         floating d) noexcept nogil:
    """gx := a * gx - b * (x - mean) - d (input_grad_row on g = gx, written so that the
    compiler need not test whether g and gx overlap before it vectorises)"""
    cdef Py_ssize_t i
    for i in range(n):
        gx[i] = a * gx[i] - b * (x[i] - mean) - d


cdef inline void channel_forward_train(const floating *x, floating *y, Py_ssize_t N,
                                       Py_ssize_t C, Py_ssize_t S, Py_ssize_t c, double weight,
                                       double bias, double eps, bint relu, double *mean,
                                       double *var, double *inv_std) noexcept nogil:
    """Channel c's mean, biased variance and 1/sqrt(var + eps) (two passes), then its y"""
    cdef Py_ssize_t n, count = N * S
    cdef double m, v
    m = channel_sum(x + c * S, N, C * S, S, 0, False) / count
    v = channel_sum(x + c * S, N, C * S, S, <floating> m, True) / count
    mean[c] = m
    var[c] = v
    inv_std[c] = 1 / sqrt(v + eps)
    for n in range(N):
        normalise_row(x + (n * C + c) * S, y + (n * C + c) * S, S, <floating> m,
                      <floating> (inv_std[c] * weight), <floating> bias, relu)


cdef inline void channel_backward(const floating *g, const floating *relu_out, bint relu,
                                  const floating *x, floating *gx, Py_ssize_t N, Py_ssize_t C,
                                  Py_ssize_t S, Py_ssize_t c, double mean, double inv_std,
                                  double weight, bint batch_stats, double *grad_weight,
                                  double *grad_bias) noexcept nogil:
    """Channel c's sums of g and g * x_hat; then, unless gx is NULL, its input gradient.
    With relu, g is the gradient of a ReLU's output relu_out: each row's masked gradient
    (relu_grad_block's vectorised select) goes to gx first, which must not be NULL, and is
    read from there."""
    cdef Py_ssize_t n, row, count = N * S
    cdef double sum_g = 0, sum_g_dev = 0, a = weight * inv_std, b, d
    cdef const floating *grad = gx if relu else g  # this layer's output gradient
    for n in range(N):
        row = (n * C + c) * S
        if relu:
            relu_grad_block(g + row, relu_out + row, gx + row, S)
        row_grad_sums(grad + row, x + row, S, mean, &sum_g, &sum_g_dev)
    grad_bias[c] = sum_g
    grad_weight[c] = sum_g_dev * inv_std
    if gx == NULL:
        return
    if not batch_stats:  # constant statistics: x does not enter (a NaN in x stays out)
        for n in range(N):
            row = (n * C + c) * S
            scale_row(grad + row, gx + row, S, <floating> a)
        return
    # the gradient also flows through the batch's mean and variance
    d = a * sum_g / count
    b = a * inv_std * inv_std * sum_g_dev / count
    for n in range(N):
        row = (n * C + c) * S
        if relu:
            input_grad_row_in_place(x + row, gx + row, S, <floating> mean, <floating> a,
                                    <floating> b, <floating> d)
        else:
            input_grad_row(g + row, x + row, gx + row, S, <floating> mean, <floating> a,
                           <floating> b, <floating> d)


def batch_norm_forward_train(const floating[:, :, ::1] x, const double[::1] weight,
                             const double[::1] bias, double eps, double[::1] mean,
                             double[::1] var, double[::1] inv_std, bint relu,
                             floating[:, :, ::1] y, int n_threads):
    """Per channel c: mean[c], var[c] := the mean and biased variance of x[:, c, :];
    inv_std[c] := 1 / sqrt(var[c] + eps); y[:, c, :] := (x - mean) * inv_std * weight + bias,
    then relu(y) if relu. Needs N * S > 0."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    cdef const floating *xp = &x[0, 0, 0]
    cdef floating *yp = &y[0, 0, 0]
    with nogil:
        for c in prange(C, schedule="static", num_threads=n_threads):
            channel_forward_train(xp, yp, N, C, S, c, weight[c], bias[c], eps, relu,
                                  &mean[0], &var[0], &inv_std[0])


def batch_norm_forward_eval(const floating[:, :, ::1] x, const double[::1] mean,
                            const double[::1] scale, const double[::1] shift, bint relu,
                            floating[:, :, ::1] y, int n_threads):
    """y[n, c, :] := (x[n, c, :] - mean[c]) * scale[c] + shift[c], then relu(y) if relu; one
    row per work item"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], row, c
    if N * C * S == 0:
        return
    cdef const floating *xp = &x[0, 0, 0]
    cdef floating *yp = &y[0, 0, 0]
    with nogil:
        for row in prange(N * C, schedule="static", num_threads=n_threads):
            c = row % C
            normalise_row(xp + row * S, yp + row * S, S, <floating> mean[c],
                          <floating> scale[c], <floating> shift[c], relu)


def batch_norm_backward(const floating[:, :, ::1] grad_out,
                        const floating[:, :, ::1] relu_out, const floating[:, :, ::1] x,
                        const double[::1] mean, const double[::1] inv_std,
                        const double[::1] weight, bint batch_stats, double[::1] grad_weight,
                        double[::1] grad_bias, floating[:, :, ::1] grad_x, int n_threads):
    """Per channel c, with x_hat = (x - mean) * inv_std and M = N * S, and grad_out first
    masked to 0 where not (relu_out > 0) unless relu_out is None (the output of a ReLU run
    on this BatchNorm's output; grad_x must then be given):
    grad_bias[c] := sum of grad_out[:, c, :]; grad_weight[c] := sum of grad_out * x_hat;
    grad_x := weight * inv_std * grad_out, and with batch_stats (mean and inv_std were the
    batch's) minus weight * inv_std * (grad_bias / M + x_hat * grad_weight / M).
    grad_x may be None (not wanted). Needs N * S > 0."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    cdef const floating *gp = &grad_out[0, 0, 0]
    cdef const floating *xp = &x[0, 0, 0]
    cdef const floating *relu_outp = gp  # never read unless relu
    cdef bint relu = relu_out is not None
    cdef floating *gxp = NULL
    if relu:
        relu_outp = &relu_out[0, 0, 0]
    if grad_x is not None:
        gxp = &grad_x[0, 0, 0]
    with nogil:
        for c in prange(C, schedule="static", num_threads=n_threads):
            channel_backward(gp, relu_outp, relu, xp, gxp, N, C, S, c, mean[c], inv_std[c],
                             weight[c], batch_stats, &grad_weight[0], &grad_bias[0])
