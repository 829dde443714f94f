/*
 * minitbt/_int8.h -- ternary (or binary) weights x int8 activations, exact int32 results
 * (W2A8, W1A8; BitNet b1.58). Specification: minitbt/kernels/int8.py
 * (gemm_ternary_int8_ref); design: docs/kernels.md section 4.2.
 *
 * Two prepared weight layouts (built in NumPy by kernels.prepare_ternary_int8):
 *
 *  w_i8 (Np, Kp8)  int8 codes in {-1, 0, 1}, Kp8 = K rounded up to 32, Np = N rounded
 *                  up to 8; padding is 0. Used when several activation rows share the
 *                  weights (GEMM: compute-bound, no unpacking wanted).
 *  w_i2 (Np, Kp2/4) uint8, 2 bits per weight (code = w + 1 in {0,1,2}, padding code 1),
 *                  Kp2 = K rounded up to 128. In each 32-byte block b of a row, byte i
 *                  holds the codes of k = 128b + 32j + i at bits 2j..2j+1 (j = 0..3), so
 *                  one shift and one AND give 32 consecutive codes. Used for one row
 *                  (GEMV: memory-bound, 16x fewer bytes than float32).
 *
 * This file: 1. the equations in scalar C (the portable path), 2. the SIMD tiles
 * (_int8_avx2.h: vpmaddubsw, _int8_avx512.h: VNNI vpdpbusd), 3. the drivers.
 * Every function returns 0, or -1 if a work buffer could not be allocated.
 * Hot loops index with ptrdiff_t: Python builds extensions with -fwrapv, and with an int
 * index the compiler must allow for wrap-around in the address arithmetic (it cost the int8
 * GEMM a third of its speed).
 */
#ifndef MINITBT_INT8_H
#define MINITBT_INT8_H

#include "_dispatch.h"

/* ---------------------------------------------------------------------------------------
 * 1. The equations, one output at a time
 * --------------------------------------------------------------------------------------- */

/* One term: x where plus = 1, -x where minus = 1, else 0. As masks (-1 = all bits set), so that
 * there is no branch to mispredict and compilers can vectorize the loops below:
 *     (x AND -plus) - (x AND -minus) */
static inline int32_t tbt_select(int32_t x, int plus, int minus)
{
    return (x & -plus) - (x & -minus);
}

/* y = sum_k x[k] w[k] with w[k] in {-1, 0, +1}: each term is +x, 0 or -x, so
 *     y = sum_{k: w[k] = +1} x[k]  -  sum_{k: w[k] = -1} x[k]          (no multiplication)
 */
static inline int32_t tbt_ternary_dot_i8(const int8_t *x, const int8_t *w, int K)
{
    int32_t y = 0;
    for (int k = 0; k < K; k++) y += tbt_select(x[k], w[k] == 1, w[k] == -1);
    return y;
}

/* The 2-bit layout: the code (w + 1 in {0, 1, 2}) of weight k = 128 b + 32 j + i of a row is
 * bits 2j, 2j+1 of byte 32 b + i. The same sum, the weights of each block of 128 decoded
 * first: w = code - 1. */
static inline int32_t tbt_ternary_dot_i2(const int8_t *x, const uint8_t *row, int K)
{
    int32_t y = 0;
    for (int k0 = 0; k0 < K; k0 += 128) {             /* k0 = 128 b */
        const uint8_t *bytes = row + k0 / 4;
        int8_t w[128];
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < 32; i++) w[32 * j + i] = (int8_t)(((bytes[i] >> (2 * j)) & 3) - 1);
        y += tbt_ternary_dot_i8(x + k0, w, K - k0 < 128 ? K - k0 : 128);
    }
    return y;
}

/* ---------------------------------------------------------------------------------------
 * 2. The SIMD tiles
 * --------------------------------------------------------------------------------------- */
#include "_int8_avx2.h"
#include "_int8_avx512.h"

/* ---------------------------------------------------------------------------------------
 * 3. The drivers
 * --------------------------------------------------------------------------------------- */

/* x: (M, K) int8; w_i8: (Np, Kp8); w_sum: (Np,) sum of each row's codes; out: (M, N).
 * The SIMD paths take x + 128 as unsigned bytes (their instructions multiply unsigned by
 * signed bytes) and remove the offset at the end: (x + 128) . w = x . w + 128 sum(w). */
static TBT_UNUSED int tbt_gemm_ternary_i8(const int8_t *x, int M, int K, const int8_t *w_i8,
                                          int Kp8, const int32_t *w_sum, int N, int32_t *out,
                                          int threads)
{
    const int path = tbt_kernel_path();
    if (!TBT_X86_SIMD || path == TBT_PATH_PORTABLE) {
        (void)w_sum;
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
        for (int n = 0; n < N; n++)
            for (int m = 0; m < M; m++)
                out[(size_t)m * N + n] = tbt_ternary_dot_i8(x + (size_t)m * K,
                                                            w_i8 + (size_t)n * Kp8, K);
        return 0;
    }
#if TBT_X86_SIMD
    void *raw = NULL;
    const int Mp = (M + 1) & ~1;
    /* activations as unsigned bytes x + 128, K padded with x = 0 (i.e. 128) */
    uint8_t *xu = (uint8_t *)tbt_alloc((size_t)Mp * Kp8, &raw);
    if (xu == NULL) return -1;
    memset(xu, 128, (size_t)Mp * Kp8);
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++)
            xu[(size_t)m * Kp8 + k] = (uint8_t)(x[(size_t)m * K + k] ^ 0x80);
    const int ntiles = (N + 3) / 4;
    for (int mb = 0; mb < Mp; mb += 64) {       /* 64 rows of x stay in L2 */
        const int me = mb + 64 < Mp ? mb + 64 : Mp;
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
        for (int t = 0; t < ntiles; t++) {
            const int n0 = 4 * t;
            int32_t acc[2][4];                  /* (x_i + 128) . w_j, i < 2, j < 4 */
            for (int m0 = mb; m0 < me; m0 += 2) {
                const uint8_t *x0 = xu + (size_t)m0 * Kp8, *x1 = x0 + Kp8;
                const int8_t *w = w_i8 + (size_t)n0 * Kp8;
                if (path == TBT_PATH_AVX512) tbt_i8_tile_avx512(x0, x1, w, (size_t)Kp8, Kp8, acc);
                else                         tbt_i8_tile_avx2(x0, x1, w, (size_t)Kp8, Kp8, acc);
                for (int i = 0; i < 2 && m0 + i < M; i++)
                    for (int j = 0; j < 4 && n0 + j < N; j++)
                        out[(size_t)(m0 + i) * N + n0 + j] = acc[i][j] - 128 * w_sum[n0 + j];
            }
        }
    }
    free(raw);
#endif
    (void)threads;
    return 0;
}

/* One activation row x: (K,) int8 against the 2-bit layout; out: (N,).
 * The SIMD paths multiply the unsigned codes by x and remove the offset at the end:
 * (w + 1) . x = x . w + sum(x). */
static TBT_UNUSED int tbt_gemv_ternary_i2(const int8_t *x, int K, const uint8_t *w_i2, int Kp2,
                                          int N, int32_t *out, int threads)
{
    const int path = tbt_kernel_path();
    const size_t ldw = (size_t)Kp2 / 4;
    if (!TBT_X86_SIMD || path == TBT_PATH_PORTABLE) {
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
        for (int n = 0; n < N; n++) out[n] = tbt_ternary_dot_i2(x, w_i2 + (size_t)n * ldw, K);
        return 0;
    }
#if TBT_X86_SIMD
    int32_t xsum = 0;
    for (int k = 0; k < K; k++) xsum += x[k];
    void *raw = NULL;
    /* x padded to Kp2 with zeros (xp), then, for AVX-512, the same bytes in the order of a
     * pair of weight blocks (xr, tbt_i2_pair_order) */
    int8_t *xp = (int8_t *)tbt_alloc((size_t)2 * Kp2, &raw);
    if (xp == NULL) return -1;
    int8_t *xr = xp + Kp2;
    memset(xp, 0, (size_t)Kp2);
    memcpy(xp, x, (size_t)K);
    if (path == TBT_PATH_AVX512) tbt_i2_pair_order(xp, Kp2, xr);
    const int ngroups = (N + 7) / 8, nblk = Kp2 / 128;
#if TBT_HAVE_OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        int g0 = 0, g1 = ngroups;              /* this thread's groups of 8 weight rows */
#if TBT_HAVE_OPENMP
        const int nt = omp_get_num_threads(), id = omp_get_thread_num();
        g0 = (int)((long)ngroups * id / nt);
        g1 = (int)((long)ngroups * (id + 1) / nt);
#endif
        if (path == TBT_PATH_AVX512)
            tbt_i2_rows_avx512(xp, xr, w_i2, ldw, nblk, g0, g1, N, xsum, out);
        else
            tbt_i2_rows_avx2(xp, w_i2, ldw, nblk, g0, g1, N, xsum, out);
    }
    free(raw);
#endif
    (void)threads;
    return 0;
}

#endif /* MINITBT_INT8_H */
