/* How the C kernels (direct_conv.h) get vector instructions without -march=native, which a
 * wheel cannot use: FASTCNN_CLONES makes GCC compile a function three times (x86-64-v4 =
 * AVX-512, x86-64-v3 = AVX2 + FMA, and the baseline) and the loader pick, once, the best
 * copy the CPU supports (target_clones, through an ifunc). Elsewhere (other compilers, other
 * CPUs) the one copy is built for whatever -march the build has.
 */
#ifndef FASTCNN_CPU_DISPATCH_H
#define FASTCNN_CPU_DISPATCH_H

#include <stdint.h> /* defines __GLIBC__ where the C library is glibc */

/* FASTCNN_NO_CLONES (setup.py's FASTCNN_KERNEL_ARCH): one copy, for the -march the build
 * was given; CI builds that way to test the AVX2 and baseline code on an AVX-512 machine.
 * Clones need GCC >= 12 (for the x86-64-vN names) and glibc (the loader's ifuncs: musl has
 * none). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__) && !defined(FASTCNN_NO_CLONES)
#define FASTCNN_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define FASTCNN_HAS_CLONES 1
#else
#define FASTCNN_CLONES
#define FASTCNN_HAS_CLONES 0
#endif

/* Which copy of the kernels runs in this process: what the loader's choice among the
 * clones was (the same test GCC's resolver makes), or the one copy that was built. */
static inline const char *fastcnn_kernel_isa(void)
{
#if FASTCNN_HAS_CLONES
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512), chosen at load";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2, FMA), chosen at load";
    return "x86-64 baseline, chosen at load";
#elif defined(__AVX512F__)
    return "AVX-512 (one copy, built for it)";
#elif defined(__AVX2__)
    return "AVX2 (one copy, built for it)";
#else
    return "baseline (one copy)";
#endif
}

#endif /* FASTCNN_CPU_DISPATCH_H */
