/*
 * minitbt/_dispatch.h -- which path the kernels run: portable C, AVX2 or AVX-512.
 *
 *   path = min(the best path this CPU and this build have, MINITBT_KERNEL_PATH if set)
 *
 * TBT_PATH_AVX512 needs AVX-512 F, BW, VL, VPOPCNTDQ and VNNI (a CPU with AVX-512 F alone,
 * e.g. Skylake-X, runs the AVX2 path). MINITBT_KERNEL_PATH=portable|avx2|avx512 can only
 * lower the path: asking for one the CPU lacks gives the best one it has.
 *
 * The path is worked out once per translation unit: by tbt_kernel_init(), which minitbt._core
 * calls at import (and any other extension may call), or lazily by the first kernel call
 * (tbt_kernel_path). The environment variable is read at that moment; tbt_set_kernel_path
 * changes the path later (the tests run every path this way). Each kernel family asks for
 * the path on every call, and its driver picks the matching functions.
 */
#ifndef MINITBT_DISPATCH_H
#define MINITBT_DISPATCH_H

#include "_common.h"

enum { TBT_PATH_PORTABLE = 0, TBT_PATH_AVX2 = 1, TBT_PATH_AVX512 = 2 };

static const char *const tbt_path_names[3] = {"portable", "avx2", "avx512"};

/* The best path this CPU can run, among those compiled into this build. */
static TBT_UNUSED int tbt_cpu_path(void)
{
#if defined(TBT_EMULATE_SIMD)
    return TBT_PATH_AVX512;                        /* SIMDe runs every intrinsic in C */
#elif TBT_X86_SIMD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq") &&
        __builtin_cpu_supports("avx512vnni"))
        return TBT_PATH_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"))
        return TBT_PATH_AVX2;
    return TBT_PATH_PORTABLE;
#else
    return TBT_PATH_PORTABLE;
#endif
}

/* "portable" / "avx2" / "avx512" -> its number; -1 for anything else (NULL included). */
static TBT_UNUSED int tbt_path_from_name(const char *name)
{
    for (int p = 0; name != NULL && p < 3; p++)
        if (strcmp(name, tbt_path_names[p]) == 0) return p;
    return -1;
}

static int tbt_path_now = -1;                      /* -1: not worked out yet */

/* Set the path to min(want, tbt_cpu_path()) and return it; want < 0 means "the best". */
static TBT_UNUSED int tbt_set_kernel_path(int want)
{
    const int best = tbt_cpu_path();
    tbt_path_now = (want < 0 || want > best) ? best : want;
    return tbt_path_now;
}

/* Work the path out from the CPU and MINITBT_KERNEL_PATH (an unknown value is ignored). */
static TBT_UNUSED int tbt_kernel_init(void)
{
    return tbt_set_kernel_path(tbt_path_from_name(getenv("MINITBT_KERNEL_PATH")));
}

/* The path the kernels run now (worked out on the first call). */
static inline int tbt_kernel_path(void)
{
    return tbt_path_now >= 0 ? tbt_path_now : tbt_kernel_init();
}

#endif /* MINITBT_DISPATCH_H */
