/*
 * dwf_simd.h - DWF_VEC marks an elementwise hot loop function to be
 * compiled for AVX-512, AVX2 and the baseline ISA, with the right one
 * chosen at load time (GCC target_clones), so that the build stays portable
 * while the loops use the widest vectors the CPU has. Off under ASan and
 * TSan, whose runtimes are not ready when the ifunc resolvers run. No state.
 */
#ifndef DWF_SIMD_H
#define DWF_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define DWF_VEC __attribute__((target_clones("avx512f", "avx2", "default")))
#define DWF_VEC_WIDE 1 /* the loops run on vectors wider than SSE2's */
#else
#define DWF_VEC
#define DWF_VEC_WIDE 0
#endif

#endif
