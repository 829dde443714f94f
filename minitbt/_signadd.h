/*
 * minitbt/_signadd.h -- ternary weights x float32 activations by table look-up: additions
 * only, no multiplication (BiQGEMM, Jeon et al. 2020). Specification:
 * minitbt/kernels/signadd.py (gemm_signadd_f32_ref); design: docs/kernels.md section 4.3.
 *
 * w = w+ - w-, two {0,1} planes. Inputs are taken in groups of 3; for each group g the
 * 8 subset sums of (x[3g], x[3g+1], x[3g+2]) form a table T_g (7 additions, once per
 * call). A weight row then needs, per group, one look-up per plane:
 *     y[n] = sum_g T_g[i+(n, g)] - T_g[i-(n, g)],   i = 3-bit mask of the plane's bits.
 *
 * Layout "idx" (built by kernels.prepare_signadd): 8 output rows form a row block, 6
 * groups (18 inputs) a chunk. For chunk c and row block r there are 3 blocks of 32
 * bytes; block b holds groups 2b and 2b+1:
 *     byte 4*row + 0: i+ of group 2b     byte 4*row + 1: i- of group 2b
 *     byte 4*row + 2: i+ of group 2b+1   byte 4*row + 3: i- of group 2b+1
 * so a 32-bit lane is one row, and shifting it by 0, 8, 16, 24 bits brings each index
 * to the low bits that vpermps reads (it ignores the bits above the lowest 3, or 4 for
 * the 16-entry AVX-512 form; an index is at most 7).
 * Order in memory: [chunk][row block][3 blocks][32 bytes]; padding indices are 0.
 *
 * Every path adds in the same order (tbt_signadd_chunk below), so all paths give the same
 * float32 bits; the NumPy reference sums in float64, so it agrees up to float32 rounding.
 *
 * This file: 1. the equations in scalar C (the portable path), 2. the SIMD forms
 * (_signadd_avx2.h: vpermps on 8 rows, _signadd_avx512.h: on 16 rows), 3. the driver.
 */
#ifndef MINITBT_SIGNADD_H
#define MINITBT_SIGNADD_H

#include "_dispatch.h"

#define TBT_SA_G 6                       /* groups per chunk */
#define TBT_SA_CHUNK (3 * TBT_SA_G)      /* inputs per chunk */
#define TBT_SA_BYTES (TBT_SA_G / 2 * 32) /* bytes per (chunk, row block) */

/* ---------------------------------------------------------------------------------------
 * 1. The equations
 * --------------------------------------------------------------------------------------- */

/* The table of one group: T[i] = sum of x[t] over the set bits t of i (7 additions). */
static inline void tbt_signadd_table(float x0, float x1, float x2, float T[8])
{
    T[0] = 0.0f;     T[1] = x0;       T[2] = x1;       T[3] = x0 + x1;
    T[4] = x2;       T[5] = x0 + x2;  T[6] = x1 + x2;  T[7] = T[3] + x2;
}

/* the tables of one row of x: T[8g + i] for ngroups groups (inputs past K read as 0) */
static void tbt_signadd_tables(const float *x, int K, int ngroups, float *T)
{
    for (int g = 0; g < ngroups; g++) {
        const int k = 3 * g;
        tbt_signadd_table(k < K ? x[k] : 0.0f, k + 1 < K ? x[k + 1] : 0.0f,
                          k + 2 < K ? x[k + 2] : 0.0f, T + 8 * g);
    }
}

/* One row and one chunk (6 groups, tables Tc):
 *     y + sum_g T_g[i+] - T_g[i-]
 * added in the order every path uses, even and odd groups and the two planes apart
 * (4 independent sums, as the SIMD forms need to hide the latency of an addition):
 *     ((y + P_even) + P_odd) - (M_even + M_odd),   P_even = (T_0[i+] + T_2[i+]) + T_4[i+], ...
 * q: the row's 4 bytes in block 0 of its (chunk, row block); block b is 32 bytes on. */
static inline float tbt_signadd_chunk(const float *Tc, const uint8_t *q, float y)
{
    float ap = y, am = 0.0f, bp = 0.0f, bm = 0.0f;
    for (int b = 0; b < TBT_SA_G / 2; b++, q += 32) {
        ap += Tc[8 * (2 * b) + (q[0] & 7)];            /* T_{2b}[i+]   */
        am += Tc[8 * (2 * b) + (q[1] & 7)];            /* T_{2b}[i-]   */
        bp += Tc[8 * (2 * b + 1) + (q[2] & 7)];        /* T_{2b+1}[i+] */
        bm += Tc[8 * (2 * b + 1) + (q[3] & 7)];        /* T_{2b+1}[i-] */
    }
    return (ap + bp) - (am + bm);
}

/* The portable form: row blocks r0..r1-1 of chunk c (tables Tc, indices blk) into y */
static void tbt_signadd_rows_scalar(const float *Tc, const uint8_t *blk, float *y, int r0,
                                    int r1)
{
    for (int r = r0; r < r1; r++, blk += TBT_SA_BYTES)
        for (int row = 0; row < 8; row++)
            y[8 * r + row] = tbt_signadd_chunk(Tc, blk + 4 * row, y[8 * r + row]);
}

/* ---------------------------------------------------------------------------------------
 * 2. The SIMD forms
 * --------------------------------------------------------------------------------------- */
#include "_signadd_avx2.h"
#include "_signadd_avx512.h"

/* ---------------------------------------------------------------------------------------
 * 3. The driver
 * --------------------------------------------------------------------------------------- */

/* x: (M, K) float32; idx: see above; out: (M, N) float32. Returns 0, or -1 if a work buffer
 * could not be allocated. The chunk's 6 tables stay in registers while all row blocks
 * stream by; threads split the row blocks. */
static TBT_UNUSED int tbt_signadd_f32(const float *x, int M, int K, const uint8_t *idx, int N,
                           float *out, int threads)
{
    const int path = tbt_kernel_path();
    const int nchunks = (K + TBT_SA_CHUNK - 1) / TBT_SA_CHUNK;
    const int nrb = (N + 7) / 8;
    void *raw_t = NULL, *raw_y = NULL;
    float *T = (float *)tbt_alloc((size_t)nchunks * TBT_SA_G * 8 * sizeof(float), &raw_t);
    float *y = (float *)tbt_alloc((size_t)nrb * 8 * sizeof(float), &raw_y);
    if (T == NULL || y == NULL) { free(raw_t); free(raw_y); return -1; }

    for (int m = 0; m < M; m++) {
        tbt_signadd_tables(x + (size_t)m * K, K, nchunks * TBT_SA_G, T);
        memset(y, 0, (size_t)nrb * 8 * sizeof(float));
#if TBT_HAVE_OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
        {
            int r0 = 0, r1 = nrb;           /* this thread's row blocks */
#if TBT_HAVE_OPENMP
            const int nt = omp_get_num_threads(), id = omp_get_thread_num();
            r0 = (int)((long)nrb * id / nt);
            r1 = (int)((long)nrb * (id + 1) / nt);
#endif
            for (int c = 0; c < nchunks; c++) {
                const float *Tc = T + (size_t)c * TBT_SA_G * 8;
                const uint8_t *blk = idx + ((size_t)c * nrb + r0) * TBT_SA_BYTES;
#if TBT_X86_SIMD
                if (path == TBT_PATH_AVX512) tbt_signadd_rows_avx512(Tc, blk, y, r0, r1);
                else if (path == TBT_PATH_AVX2) tbt_signadd_rows_avx2(Tc, blk, y, r0, r1);
                else
#endif
                tbt_signadd_rows_scalar(Tc, blk, y, r0, r1);
            }
        }
        memcpy(out + (size_t)m * N, y, (size_t)N * sizeof(float));
    }
    free(raw_t);
    free(raw_y);
    (void)path;
    (void)threads;
    return 0;
}

#endif /* MINITBT_SIGNADD_H */
