/* Which instruction sets the C kernels (direct_conv.h) are built for, which one this CPU
 * can run, and the compiler pragmas that build a block of code for one of them.
 *
 * Wheels cannot use -march=native, so the kernels are compiled once per instruction set
 * ("ISA copy"), each with a vector width and register tiles of its own (XNNPACK's and
 * MLAS's way: one micro-kernel per architecture), and the copy to run is picked at load
 * time: the best this CPU has, capped by FASTCNN_MAX_CPU_ISA (oneDNN's ONEDNN_MAX_CPU_ISA
 * is the model; fastcnn/_isa.py reads it).
 *
 *   level  name       built where                      vector registers the tiles are sized for
 *   3      avx512     x86-64, GCC or clang             32 x 512 bit (AVX512F/BW/DQ/VL + FMA)
 *   2      avx2       x86-64, GCC or clang             16 x 256 bit (AVX2 + FMA)
 *   1      baseline   any GCC or clang target          x86-64: 16 x 128 bit (SSE2);
 *                                                      aarch64: 32 x 128 bit (NEON, always there)
 *   0      portable   every C99 compiler (MSVC, tcc)   plain C loops, no vector extensions
 *
 * The copies above "portable" are written with GCC's vector extensions (GCC and clang only);
 * the portable copy is the same source with the vectors as small structs of arrays.
 * FASTCNN_PORTABLE_ONLY (set by a test build) leaves only the portable copy even on GCC.
 */
#ifndef FASTCNN_CPU_DISPATCH_H
#define FASTCNN_CPU_DISPATCH_H

#define FASTCNN_ISA_PORTABLE 0
#define FASTCNN_ISA_BASELINE 1
#define FASTCNN_ISA_AVX2 2
#define FASTCNN_ISA_AVX512 3

#if (defined(__GNUC__) || defined(__clang__)) && !defined(__TINYC__) && \
    !defined(FASTCNN_PORTABLE_ONLY)
#define FASTCNN_HAS_VECTOR_EXTENSIONS 1
#else
#define FASTCNN_HAS_VECTOR_EXTENSIONS 0
#endif

/* the AVX2 and AVX-512 copies: x86-64 with a compiler that can target them per function */
#if FASTCNN_HAS_VECTOR_EXTENSIONS && defined(__x86_64__) && \
    ((defined(__clang__) && __clang_major__ >= 8) || (!defined(__clang__) && __GNUC__ >= 8))
#define FASTCNN_HAS_X86_COPIES 1
#else
#define FASTCNN_HAS_X86_COPIES 0
#endif

/* FASTCNN_TARGET_BEGIN("avx2,fma") ... FASTCNN_TARGET_END: the functions between are
 * compiled for those features (whatever -march the build has), so one translation unit
 * holds every copy. Only called when the CPU has the features (fastcnn_cpu_isa). */
#if defined(__clang__)
#define FASTCNN_PRAGMA(text) _Pragma(#text)
#define FASTCNN_TARGET_BEGIN(features) \
    FASTCNN_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define FASTCNN_TARGET_END _Pragma("clang attribute pop")
#elif defined(__GNUC__)
#define FASTCNN_PRAGMA(text) _Pragma(#text)
#define FASTCNN_TARGET_BEGIN(features) \
    _Pragma("GCC push_options") FASTCNN_PRAGMA(GCC target(features))
#define FASTCNN_TARGET_END _Pragma("GCC pop_options")
#endif

/* Loop unrolling and forced inlining where the compiler has them: the tiles' loops over
 * accumulators must be unrolled (and the tiles inlined) for the accumulators to live in
 * registers. Other compilers get plain C. */
#if defined(__GNUC__) && !defined(__TINYC__)
#define FASTCNN_UNROLL _Pragma("GCC unroll 8")
#define FASTCNN_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define FASTCNN_UNROLL
#define FASTCNN_ALWAYS_INLINE __forceinline
#else
#define FASTCNN_UNROLL
#define FASTCNN_ALWAYS_INLINE inline
#endif

#define FASTCNN_AVX512_FEATURES "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"
#define FASTCNN_AVX2_FEATURES "avx2,fma"

/* The best copy this CPU can run (the OS's support for the wide registers included:
 * __builtin_cpu_supports asks XGETBV as well as CPUID). */
static inline int fastcnn_cpu_isa(void)
{
#if FASTCNN_HAS_X86_COPIES
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
            return FASTCNN_ISA_AVX512;
        return FASTCNN_ISA_AVX2;
    }
    return FASTCNN_ISA_BASELINE;
#elif FASTCNN_HAS_VECTOR_EXTENSIONS
    return FASTCNN_ISA_BASELINE;
#else
    return FASTCNN_ISA_PORTABLE;
#endif
}

/* What the baseline copy is on this target, for show_config. */
#if defined(__aarch64__)
#define FASTCNN_BASELINE_NAME "baseline (NEON)"
#elif defined(__x86_64__)
#define FASTCNN_BASELINE_NAME "baseline (SSE2)"
#else
#define FASTCNN_BASELINE_NAME "baseline (16-byte vectors)"
#endif

#endif /* FASTCNN_CPU_DISPATCH_H */
