# A NumPy data allocator that keeps freed array blocks for reuse (NumPy's PyDataMem_Handler).
#
# A training step allocates every layer's output and gradient afresh, 1-16 MiB each at CIFAR
# sizes, and frees them by the end of the step. Under glibc's default thresholds the largest
# are mapped on their own and unmapped when freed, and the heap top is trimmed, so each step
# faults its pages in again, zero-filled by the kernel one page at a time: about 3,400 faults
# a ResNet-20 step and 6,900 a MobileNetCIFAR step at batch 64. This handler keeps the freed
# blocks (up to CACHE_MAX_BYTES, oldest given back first) and hands the next request of about
# the same size the same block. It is NumPy's allocator only, so other libraries in the
# process (PyTorch among them) keep their own allocator settings; fastcnn/_memory.py
# installs it at import.
#
# Every block carries a header just below the 64-byte-aligned pointer NumPy gets: the
# malloc'd address and the block's capacity. So free and realloc need not trust the size
# NumPy passes back, and the kernels' vector loads start on a cache line.

from cpython.pycapsule cimport PyCapsule_New

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #include "pythread.h"
    /* PyDataMem_SetHandler and its handler struct are NumPy 1.22's; fastcnn needs 1.25. */
    #define NPY_TARGET_VERSION NPY_1_25_API_VERSION
    #include "numpy/arrayobject.h"

    #define CACHE_ALIGN 64
    #define CACHE_PAGE 4096
    /* Below this, glibc serves requests from its bins without faults; a cache would only add a
       lock. At and above it, capacities are whole pages, so a step's same-shaped arrays match. */
    #define CACHE_MIN_BYTES ((size_t)64 << 10)
    #define CACHE_MAX_BLOCKS 512
    #define CACHE_MAX_BYTES ((size_t)256 << 20)

    typedef struct { void *raw; size_t capacity; } BlockHeader;

    static void *cached_blocks[CACHE_MAX_BLOCKS];  /* oldest first */
    static int cached_count = 0;
    static size_t cached_bytes = 0;
    static PyThread_type_lock cache_lock = NULL;

    static BlockHeader *header_of(void *ptr) { return (BlockHeader *)ptr - 1; }

    /* A fresh block of this capacity, zeroed if asked (calloc keeps fresh pages lazy). */
    static void *new_block(size_t capacity, int zeroed) {
        size_t total = capacity + sizeof(BlockHeader) + CACHE_ALIGN - 1;
        if (total < capacity) return NULL;  /* overflow */
        void *raw = zeroed ? calloc(1, total) : malloc(total);
        if (raw == NULL) return NULL;
        uintptr_t start = ((uintptr_t)raw + sizeof(BlockHeader) + CACHE_ALIGN - 1)
                          & ~(uintptr_t)(CACHE_ALIGN - 1);
        void *ptr = (void *)start;
        header_of(ptr)->raw = raw;
        header_of(ptr)->capacity = capacity;
        return ptr;
    }

    static void release_block(void *ptr) { free(header_of(ptr)->raw); }

    static void forget_cached(int i) {
        cached_bytes -= header_of(cached_blocks[i])->capacity;
        memmove(&cached_blocks[i], &cached_blocks[i + 1],
                (size_t)(cached_count - i - 1) * sizeof(void *));
        cached_count--;
    }

    /* The smallest kept block that holds size bytes and wastes at most an eighth, or NULL. */
    static void *take_cached(size_t size) {
        size_t most = size + size / 8;
        int best = -1;
        PyThread_acquire_lock(cache_lock, WAIT_LOCK);
        for (int i = 0; i < cached_count; i++) {
            size_t capacity = header_of(cached_blocks[i])->capacity;
            if (capacity >= size && capacity <= most
                && (best < 0 || capacity < header_of(cached_blocks[best])->capacity)) {
                best = i;
                if (capacity == size) break;
            }
        }
        void *ptr = NULL;
        if (best >= 0) {
            ptr = cached_blocks[best];
            forget_cached(best);
        }
        PyThread_release_lock(cache_lock);
        return ptr;
    }

    static size_t page_rounded(size_t size) {
        size_t rounded = (size + CACHE_PAGE - 1) & ~(size_t)(CACHE_PAGE - 1);
        return rounded < size ? size : rounded;
    }

    static void *cache_malloc_impl(size_t size, int zeroed) {
        if (size < CACHE_MIN_BYTES) return new_block(size, zeroed);
        void *ptr = take_cached(size);
        if (ptr == NULL) return new_block(page_rounded(size), zeroed);
        if (zeroed) memset(ptr, 0, size);
        return ptr;
    }

    static void *cache_malloc(void *ctx, size_t size) {
        (void)ctx;
        return cache_malloc_impl(size, 0);
    }

    static void *cache_calloc(void *ctx, size_t count, size_t item_size) {
        (void)ctx;
        if (item_size != 0 && count > SIZE_MAX / item_size) return NULL;
        return cache_malloc_impl(count * item_size, 1);
    }

    static void cache_free(void *ctx, void *ptr, size_t size) {
        (void)ctx; (void)size;  /* the header knows the capacity */
        if (ptr == NULL) return;
        size_t capacity = header_of(ptr)->capacity;
        if (capacity < CACHE_MIN_BYTES || capacity > CACHE_MAX_BYTES / 4) {
            release_block(ptr);
            return;
        }
        void *evicted[CACHE_MAX_BLOCKS];
        int n_evicted = 0;
        PyThread_acquire_lock(cache_lock, WAIT_LOCK);
        while (cached_count == CACHE_MAX_BLOCKS || cached_bytes + capacity > CACHE_MAX_BYTES) {
            evicted[n_evicted++] = cached_blocks[0];
            forget_cached(0);
        }
        cached_blocks[cached_count++] = ptr;
        cached_bytes += capacity;
        PyThread_release_lock(cache_lock);
        for (int i = 0; i < n_evicted; i++) release_block(evicted[i]);
    }

    static void *cache_realloc(void *ctx, void *ptr, size_t new_size) {
        if (ptr == NULL) return cache_malloc(ctx, new_size);
        size_t capacity = header_of(ptr)->capacity;
        /* Keep the block unless it is too small or would waste more than half. */
        if (new_size <= capacity && new_size >= capacity / 2) return ptr;
        void *moved = cache_malloc(ctx, new_size);
        if (moved == NULL) return NULL;  /* the old block stays valid, as realloc's does */
        memcpy(moved, ptr, new_size < capacity ? new_size : capacity);
        cache_free(ctx, ptr, capacity);
        return moved;
    }

    /* Give every kept block back to the C library. */
    static void cache_clear(void) {
        PyThread_acquire_lock(cache_lock, WAIT_LOCK);
        while (cached_count > 0) {
            void *ptr = cached_blocks[cached_count - 1];
            forget_cached(cached_count - 1);
            release_block(ptr);
        }
        PyThread_release_lock(cache_lock);
    }

    static int cache_init(void) {
        if (cache_lock == NULL) cache_lock = PyThread_allocate_lock();
        return cache_lock != NULL;
    }

    static PyDataMem_Handler array_cache_handler = {
        "fastcnn_array_cache", 1,
        {NULL, cache_malloc, cache_calloc, cache_realloc, cache_free}
    };

    static int load_numpy_api(void) { return _import_array(); }  /* -1 and an exception */
    """
    int cache_init()
    void cache_clear() nogil
    int cached_count
    size_t cached_bytes
    size_t CACHE_MIN_BYTES
    size_t CACHE_MAX_BYTES
    ctypedef struct PyDataMem_Handler:
        pass
    PyDataMem_Handler array_cache_handler
    int load_numpy_api() except -1
    object PyDataMem_SetHandler(object handler)

if not cache_init():
    raise MemoryError("fastcnn._array_cache: could not allocate its lock")

load_numpy_api()

# NumPy's PyDataMem_SetHandler takes a capsule named "mem_handler" around the handler.
handler = PyCapsule_New(&array_cache_handler, b"mem_handler", NULL)
min_bytes = CACHE_MIN_BYTES
max_bytes = CACHE_MAX_BYTES


def install():
    """Make this NumPy's allocator for arrays created in the calling context; returns the
    handler it replaces (a capsule), for restore()."""
    return PyDataMem_SetHandler(handler)


def restore(previous):
    """Put back the handler install() returned (None: NumPy's default)."""
    PyDataMem_SetHandler(previous)


def clear():
    """Give every kept block back to the C library (tests; after a model is done with)."""
    cache_clear()


def kept():
    """(blocks, bytes) kept for reuse now."""
    return cached_count, cached_bytes
