# cython: language_level=3
"""Augmentation kernels: RandomAffine's nearest-pixel resampling of a float32 batch.

Output pixel (r, c) of image n takes the input pixel at the rounded inverse-transformed
position, the same on every channel, or ``fill`` where that position is outside the image.
The position is computed in double with the operations, in the order, of
``RandomAffine._source_positions`` (fastcnn/data/transforms.py), whose NumPy twin is
``fastcnn._reference.affine_nearest``, and rounded half to even as ``np.rint`` does, so the
output is the twin's bit for bit. That needs every product rounded on its own: setup.py
builds this module with ``-ffp-contract=off`` so the compiler fuses no ``a * b + c`` into an
FMA (one rounding instead of two; gcc does that by default wherever the target has FMA,
e.g. every ARM64 CPU).

Rows of output (image, row) are spread over fastcnn's threads; each output pixel is
computed on its own, so the bits are the same for any thread count. Per row, the source
positions of up to CHUNK columns are computed first, in a loop that vectorises, then the
pixels are gathered. A NaN or inf in the
image is copied as a value (the gather never looks at it). Contract as in _conv.pyx: the
caller validates and allocates; nothing here validates.
"""

from cython.parallel cimport prange
from libc.math cimport fabs


cdef enum:
    CHUNK = 64  # columns whose source positions are computed at once (two int arrays)


cdef inline void source_positions(int first, int count, double centre_x,
                                  double centre_y, double translate_x, double cos,
                                  double sin, double cos_dy, double sin_dy, double height,
                                  double width, int *rows, int *columns) noexcept nogil:
    """rows[i], columns[i]: the source pixel of output column first + i of a row, rows[i] =
    -1 where it is outside the image. A loop without branches and with an int counter (SSE2
    converts int32, not int64, to double), so that it vectorises.

    Not rint: a libm call per coordinate was most of the kernel's time, and would not
    vectorise. rint(v) is -0.0 (pixel 0) for v in [-0.5, 0) and >= size for v >= size, so
    only v in [-0.5, size) can be inside (NaN is not); there rint(v) is
    (|v| + 2**52) - 2**52: from 2**52 up, doubles are whole numbers, so the sum is rounded
    to one, half to even in the default rounding mode, as rint rounds."""
    cdef int i
    cdef double dx, row, column, whole_row, whole_column, two_to_52 = 4503599627370496.0
    cdef bint inside
    for i in range(count):
        dx = ((first + i) - centre_x) - translate_x
        row = ((-sin) * dx + cos_dy) + centre_y
        column = (cos * dx + sin_dy) + centre_x
        whole_row = (fabs(row) + two_to_52) - two_to_52
        whole_column = (fabs(column) + two_to_52) - two_to_52
        inside = ((row >= -0.5) & (whole_row < height)
                  & (column >= -0.5) & (whole_column < width))
        # select, then convert: only values in range reach the conversion
        rows[i] = <int>(whole_row if inside else -1.0)
        columns[i] = <int>(whole_column if inside else 0.0)


cdef inline void nearest_row(const float *image, float *out, Py_ssize_t channels,
                             Py_ssize_t height, Py_ssize_t width, Py_ssize_t r, double cos,
                             double sin, double translate_x, double translate_y,
                             float fill) noexcept nogil:
    """Row r of one image's output, every channel: out[ch * H * W + r * W + c] for c < W,
    from the image's planes at image[ch * H * W]"""
    cdef Py_ssize_t plane = height * width, ch, source
    cdef int first, i, count
    cdef bint inside
    cdef double centre_y = (height - 1) / 2.0, centre_x = (width - 1) / 2.0
    cdef double dy = (r - centre_y) - translate_y
    cdef double cos_dy = cos * dy, sin_dy = sin * dy  # the same products for every pixel
    cdef int rows[CHUNK]
    cdef int columns[CHUNK]
    out = out + r * width
    first = 0
    while first < width:
        count = <int>min(CHUNK, width - first)
        source_positions(first, count, centre_x, centre_y, translate_x, cos, sin, cos_dy,
                         sin_dy, height, width, rows, columns)
        for i in range(count):  # a select, not a branch: no mispredictions at the edges
            inside = rows[i] >= 0
            source = (rows[i] if inside else 0) * width + columns[i]  # outside: pixel 0
            for ch in range(channels):
                out[ch * plane + first + i] = image[ch * plane + source] if inside else fill
        first = first + count


def affine_nearest(const float[:, :, :, ::1] x, const double[::1] cos_over_scale,
                   const double[::1] sin_over_scale, const double[::1] translate_x,
                   const double[::1] translate_y, float fill, float[:, :, :, ::1] out,
                   int n_threads):
    """out[n, :, r, c] := x[n, :, rint(row), rint(col)], or fill where that is outside x,
    with, in double, dx = (c - centre_x) - translate_x[n], dy = (r - centre_y) -
    translate_y[n], row = (-sin * dx + cos * dy) + centre_y and col = (cos * dx + sin * dy)
    + centre_x, centre = ((H - 1) / 2, (W - 1) / 2), cos and sin the image's cos_over_scale
    and sin_over_scale. Work items: (image, row)."""
    cdef Py_ssize_t channels = x.shape[1], height = x.shape[2], job, n
    with nogil:
        for job in prange(x.shape[0] * height, schedule="static", num_threads=n_threads):
            n = job // height
            if channels == 1:  # a copy with no channel loop (grayscale): 20% faster
                nearest_row(&x[n, 0, 0, 0], &out[n, 0, 0, 0], 1, height, x.shape[3],
                            job % height, cos_over_scale[n], sin_over_scale[n],
                            translate_x[n], translate_y[n], fill)
            else:
                nearest_row(&x[n, 0, 0, 0], &out[n, 0, 0, 0], channels, height, x.shape[3],
                            job % height, cos_over_scale[n], sin_over_scale[n],
                            translate_x[n], translate_y[n], fill)
