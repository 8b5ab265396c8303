# cython: language_level=3
"""A chain of layers run for inference in one call: the compiled network of an eval-mode
Sequential (fastcnn/nn/_inference.py builds it).

Why: at batch 1 a LeNet-5 forward pass is a few microseconds of arithmetic per layer and
tens of microseconds of Python per layer (checks, plans, allocation, a kernel call that
parses a dozen buffers). Here the layers are steps of one C loop, each with its operands
bound once, so an inference call parses three buffers and runs every step without Python.

A step is a convolution (then its bias, an optional ReLU and an optional max-pool, per
image: the convolution output stays in the thread's workspace when it is pooled) or a
fully connected layer (then its bias and an optional ReLU, per chunk of rows). The
arithmetic is the layers' own, operation for operation (_conv.pyx, _fused.pyx, _dense.pyx,
_elementwise.pyx call the same pieces): a step gives the bits its layers give, for any
n_threads. A BatchNorm folded into a step's weights (the builder's choice) is the one
change of arithmetic.

Contract: the builder validated every shape and keeps every array it passed alive for the
Network's lifetime; nothing here validates.
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp

from _conv_image cimport ConvGeometry, PoolWindow, add_bias, image_forward, use_kernel_isa
from _gemm cimport matmul_nt_acc
from _pool_plane cimport max_pool_plane, max_pool_values_2x2
from _relu_block cimport relu_block

cnp.import_array()

cdef enum:
    STEP_CONV = 0
    STEP_LINEAR = 1


def select_kernel_isa(int max_level):
    """As _conv.select_kernel_isa, for this module's copy of the kernels."""
    return use_kernel_isa(max_level)


select_kernel_isa(3)  # the best copy, until fastcnn._isa applies FASTCNN_MAX_CPU_ISA

# The step kinds, by name, for the builder.
STEP_CODES = {"conv": STEP_CONV, "linear": STEP_LINEAR}


cdef struct Step:
    int kind
    ConvGeometry g          # STEP_CONV: the convolution (_conv_image.pxd)
    PoolWindow pool         # STEP_CONV with pooled: its max-pool window
    bint pooled, relu, has_bias
    Py_ssize_t POH, POW     # the pooled output
    Py_ssize_t in_size, out_size  # values per image read and written
    Py_ssize_t chunk        # STEP_LINEAR: rows per GEMM (the Linear layer's chunk)
    const void *weight      # conv: (K, C, FH, FW); linear: (out_size, in_size)
    const void *packed      # conv: the weight packed for g.forward_method, or NULL
    const void *bias        # (K,) or (out_size,), or NULL

# A row per thread: of scratch values (values per row), and of pooled argmax (indices).
cdef struct Workspace:
    void *values
    Py_ssize_t values_row
    int64_t *indices
    Py_ssize_t indices_row


cdef inline int team(int n_threads, Py_ssize_t work_items) noexcept nogil:
    """Threads for a loop of work_items: no idle ones (a batch of one runs on one)."""
    return <int> max(1, min(n_threads, work_items))


cdef class Network:
    """The steps of a network, their operands bound by address, where the layers keep the
    arrays it reads and the bits of those it derived values from (``current``). Built by
    fastcnn/nn/_inference.py."""

    cdef Step *steps
    cdef int n_steps
    cdef const void **source_now
    cdef const void **source_kept
    cdef Py_ssize_t *source_bytes
    cdef int n_sources
    cdef list arrays  # every array an address above points into: kept alive here
    cdef list found  # (table, name, is a Parameter, the array found there) per array read

    def __cinit__(self, list steps, list sources, list found):
        """steps: dicts (kind, g, pool, pooled, relu, POH, POW, in_size, out_size, chunk)
        with arrays weight, packed, bias (None for none); sources: (array now, its kept
        copy) pairs; found: where each array a step reads is kept, as (a layer's table of
        parameters or buffers, the name, True for a Parameter (its .data), the array)."""
        self.arrays = []
        self.found = found
        self.steps = <Step *> malloc(max(len(steps), 1) * sizeof(Step))
        self.source_now = <const void **> malloc(max(len(sources), 1) * sizeof(void *))
        self.source_kept = <const void **> malloc(max(len(sources), 1) * sizeof(void *))
        self.source_bytes = <Py_ssize_t *> malloc(max(len(sources), 1) * sizeof(Py_ssize_t))
        if not (self.steps and self.source_now and self.source_kept and self.source_bytes):
            raise MemoryError()
        self.n_steps = len(steps)
        for i, spec in enumerate(steps):
            self._bind_step(&self.steps[i], spec)
        self.n_sources = len(sources)
        for i, (now, kept) in enumerate(sources):
            self.source_now[i] = self._address(now)
            self.source_kept[i] = self._address(kept)
            self.source_bytes[i] = now.nbytes

    def __dealloc__(self):
        free(self.steps)
        free(self.source_now)
        free(self.source_kept)
        free(self.source_bytes)

    cdef const void *_address(self, object array):
        if array is None:
            return NULL
        self.arrays.append(array)
        return <const void *> <size_t> array.ctypes.data

    cdef _bind_step(self, Step *step, dict spec):
        step.kind = spec["kind"]
        if step.kind == STEP_CONV:
            step.g = spec["g"]
            step.pool = spec["pool"]
        step.pooled, step.relu = spec["pooled"], spec["relu"]
        step.POH, step.POW = spec["POH"], spec["POW"]
        step.in_size, step.out_size = spec["in_size"], spec["out_size"]
        step.chunk = spec["chunk"]
        step.weight = self._address(spec["weight"])
        step.packed = self._address(spec["packed"])
        step.bias = self._address(spec["bias"])
        step.has_bias = step.bias != NULL

    def current(self):
        """True if the layers' tables still hold the arrays the steps read, and every
        source array the bits of its kept copy (in C: the same checks in Python took 2.5
        us of a LeNet-5 call at batch 1)."""
        cdef int i
        cdef object value
        for table, name, parameter, array in self.found:
            value = table.get(name)
            if parameter and value is not None:
                value = value.data
            if value is not array:
                return False
        for i in range(self.n_sources):
            if memcmp(self.source_now[i], self.source_kept[i], self.source_bytes[i]) != 0:
                return False
        return True


def any_training(tuple modules):
    """True if any of the modules is in training mode (a loop in Python took 1 us for a
    LeNet-5's twelve)."""
    for module in modules:
        if module.training:
            return True
    return False


def run_network(Network net, cnp.ndarray x, cnp.ndarray activations,
                cnp.ndarray workspace, cnp.ndarray argmax, cnp.ndarray out, int n_threads):
    """out := the network applied to x (N, the first step's in_size).

    activations: (2, N * the largest out_size of a step but the last): the steps write
    into its rows in turn. workspace and argmax: a row per thread, of the largest
    convolution scratch (with the conv output before it for a pooled step) and pooled
    argmax of a step (the argmax of a max-pool is not kept: inference needs no backward).
    Every array is C-contiguous and 2-d, of the network's dtype (float32 or float64; argmax
    int64), as the builder made them. Taken as ndarrays, not typed memoryviews: the fused
    type's dispatch and six buffer parses took 2.7 us of a LeNet-5 call at batch 1.
    """
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT:
        _run_network[float](net, <const float *> cnp.PyArray_DATA(x), x.shape[0],
                            <float *> cnp.PyArray_DATA(activations), activations.shape[1],
                            <float *> cnp.PyArray_DATA(workspace), workspace.shape[1],
                            <int64_t *> cnp.PyArray_DATA(argmax), argmax.shape[1],
                            <float *> cnp.PyArray_DATA(out), n_threads)
    else:
        _run_network[double](net, <const double *> cnp.PyArray_DATA(x), x.shape[0],
                             <double *> cnp.PyArray_DATA(activations), activations.shape[1],
                             <double *> cnp.PyArray_DATA(workspace), workspace.shape[1],
                             <int64_t *> cnp.PyArray_DATA(argmax), argmax.shape[1],
                             <double *> cnp.PyArray_DATA(out), n_threads)


cdef void _run_network(Network net, const floating *x, Py_ssize_t N, floating *activations,
                       Py_ssize_t activations_row, floating *workspace,
                       Py_ssize_t workspace_row, int64_t *argmax, Py_ssize_t argmax_row,
                       floating *out, int n_threads) noexcept:
    cdef int s
    cdef const floating *src = x
    cdef floating *dst
    cdef Workspace ws = Workspace(workspace, workspace_row, argmax, argmax_row)
    with nogil:
        for s in range(net.n_steps):
            dst = out if s == net.n_steps - 1 else activations + (s % 2) * activations_row
            if net.steps[s].kind == STEP_CONV:
                conv_step(&net.steps[s], src, dst, N, &ws, n_threads)
            else:
                linear_step(&net.steps[s], src, dst, N, n_threads)
            src = dst


cdef void conv_step(const Step *step, const floating *src, floating *dst, Py_ssize_t N,
                    const Workspace *ws, int n_threads) noexcept nogil:
    """dst[n] := [max-pool] [relu] (conv(src[n]) + bias), image by image (_fused.pyx)."""
    cdef const ConvGeometry *g = &step.g
    cdef const PoolWindow *pool = &step.pool
    cdef Py_ssize_t P = g.OH * g.OW, pooled_plane = step.POH * step.POW
    cdef const floating *weight = <const floating *> step.weight
    cdef const floating *packed = <const floating *> step.packed
    cdef const floating *bias = <const floating *> step.bias
    cdef Py_ssize_t n, k
    cdef floating *conv
    cdef floating *row
    cdef int64_t *indices
    cdef bint pool_2x2 = (step.pooled and pool.KH == 2 and pool.KW == 2 and pool.TH == 2
                          and pool.TW == 2 and pool.UH == 0 and pool.UW == 0)
    for n in prange(N, schedule="static", num_threads=team(n_threads, N)):
        row = <floating *> ws.values + threadid() * ws.values_row
        conv = row if step.pooled else dst + n * step.out_size
        image_forward(src + n * step.in_size, g, weight, packed, row + g.scratch_at, conv)
        if step.has_bias:
            add_bias(conv, bias, g.K, P)
        if pool_2x2:  # the ReLU after the pool, on the pooled values: the same bits
            for k in range(g.K):
                max_pool_values_2x2(conv + k * P, g.OW,
                                    dst + n * step.out_size + k * pooled_plane,
                                    step.POH, step.POW, step.relu)
            continue
        if step.relu:
            relu_block(conv, conv, g.K * P)
        if step.pooled:
            indices = ws.indices + threadid() * ws.indices_row
            for k in range(g.K):
                max_pool_plane(conv + k * P, g.OH, g.OW, pool.KH, pool.KW, pool.TH, pool.TW,
                               pool.UH, pool.UW, dst + n * step.out_size + k * pooled_plane,
                               indices + k * pooled_plane, step.POH, step.POW)


cdef void linear_step(const Step *step, const floating *src, floating *dst, Py_ssize_t N,
                      int n_threads) noexcept nogil:
    """dst[rows] := [relu] (bias + src[rows] . weight^T), chunk by chunk of rows
    (_dense.linear_forward's chunks and GEMMs)."""
    cdef Py_ssize_t IN = step.in_size, OUT = step.out_size, chunk = step.chunk
    cdef Py_ssize_t n_chunks = (N + chunk - 1) // chunk
    cdef const floating *weight = <const floating *> step.weight
    cdef const floating *bias = <const floating *> step.bias
    cdef Py_ssize_t ch, r, o, start, rows
    for ch in prange(n_chunks, schedule="static", num_threads=team(n_threads, n_chunks)):
        start = ch * chunk
        rows = chunk if start + chunk <= N else N - start
        for r in range(start, start + rows):
            for o in range(OUT):
                dst[r * OUT + o] = bias[o] if step.has_bias else 0
        matmul_nt_acc(<int> rows, <int> OUT, <int> IN, src + start * IN, <int> IN, weight,
                      <int> IN, dst + start * OUT, <int> OUT)
        if step.relu:
            relu_block(dst + start * OUT, dst + start * OUT, rows * OUT)
