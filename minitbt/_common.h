/*
 * minitbt/_common.h -- what every kernel header shares: the includes, scratch memory, the
 * scalar popcount, and the attributes that compile one function for one instruction set.
 *
 * One build runs on any x86-64: the file is compiled for the baseline CPU, and each SIMD
 * function carries its own target attribute (TBT_AVX2, TBT_AVX512 below), so the compiler may
 * use AVX2 / AVX-512 in that function only. Which one runs is decided at run time
 * (_dispatch.h). The SIMD functions are compiled only where they can be:
 *
 *   TBT_X86_SIMD = 1   GCC or clang on x86-64, unless TBT_PORTABLE is defined
 *                      (setup.py defines it for MINITBT_PORTABLE=1: the portable C alone)
 *   TBT_X86_SIMD = 0   anywhere else (an Arm laptop, MSVC): the portable C alone
 *
 * TBT_EMULATE_SIMD (a developer build, docs/kernels.md "AVX-512 without an AVX-512 CPU")
 * compiles the same SIMD functions against SIMDe, which implements every intrinsic in plain C:
 * the AVX-512 paths then run, slowly, on any CPU, so that their tests can run everywhere.
 */
#ifndef MINITBT_COMMON_H
#define MINITBT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(TBT_EMULATE_SIMD)
#define TBT_X86_SIMD 1
#define SIMDE_ENABLE_NATIVE_ALIASES     /* _mm512_add_epi64 etc. name SIMDe's C versions */
#include <simde/x86/avx512.h>
#define TBT_AVX2                        /* plain C: no target needed */
#define TBT_AVX512
#elif !defined(TBT_PORTABLE) && (defined(__x86_64__) || defined(__i386__)) && \
      (defined(__GNUC__) || defined(__clang__))
#define TBT_X86_SIMD 1
#include <immintrin.h>
/* AVX2 (Haswell, Zen 1 and later) */
#define TBT_AVX2 __attribute__((target("avx2,popcnt")))
/* AVX-512 with VPOPCNTDQ and VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later) */
#define TBT_AVX512 __attribute__((target("avx2,popcnt,avx512f,avx512bw,avx512vl," \
                                         "avx512vpopcntdq,avx512vnni")))
#else
#define TBT_X86_SIMD 0
#endif

#if defined(_OPENMP)
#include <omp.h>
#define TBT_HAVE_OPENMP 1
#else
#define TBT_HAVE_OPENMP 0
#endif

/* TBT_UNUSED marks the entry points: a file that includes these headers and calls only some of
 * them gets no "defined but not used" warning for the others. */
#if defined(_MSC_VER)
#include <intrin.h>
#define TBT_UNUSED
#define TBT_NOINLINE __declspec(noinline)
#define TBT_ALWAYS_INLINE __forceinline
static inline int tbt_popc64(uint64_t x) { return (int)__popcnt64(x); }
#else
#define TBT_UNUSED __attribute__((unused))
#define TBT_NOINLINE __attribute__((noinline))
#define TBT_ALWAYS_INLINE inline __attribute__((always_inline))
/* popcount of one word: the popcnt instruction where the caller's target has it (the AVX2 and
 * AVX-512 functions inline it), else the compiler's portable bit-counting sequence */
static inline int tbt_popc64(uint64_t x) { return __builtin_popcountll(x); }
#endif

#if TBT_X86_SIMD
/* y, kept in a register: the empty asm claims to change y, so the compiler cannot fold the load
 * of y into each instruction that uses it. Shared by the AVX2 tiles (_int8_avx2.h,
 * _popcount_avx2.h), which use each loaded vector two or four times: GCC 12 folded the load
 * into every use (int8 GEMM: 10 loads per 8 vpmaddubsw instead of 6), and the loads then
 * bounded the loop. No instruction is emitted. (SIMDe's emulated build has no vector register
 * to pin: nothing to do there.) */
TBT_AVX2 static TBT_ALWAYS_INLINE __m256i tbt_in_register_avx2(__m256i y)
{
#if !defined(TBT_EMULATE_SIMD)
    __asm__("" : "+x"(y));
#endif
    return y;
}
#endif

/* 64-byte aligned scratch memory: *raw is what free() gets. */
static void *tbt_alloc(size_t bytes, void **raw)
{
    *raw = malloc(bytes + 64);
    if (*raw == NULL) return NULL;
    return (void *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
}

#endif /* MINITBT_COMMON_H */
