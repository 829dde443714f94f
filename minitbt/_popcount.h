/*
 * minitbt/_popcount.h -- popcount GEMMs on bit-packed operands (W1A1, W1A2, W2A2, ternary x
 * ternary). Specification: minitbt/kernels/popcount.py (the NumPy references); design:
 * docs/kernels.md section 4.1.
 *
 * Layout: a row of K bits is W = ceil(K/64) uint64 words, bit k in word k/64 at position k%64
 * (LSB first); the padding bits past K are 0 in both operands, so they add nothing to a
 * popcount. Activations are (M, W) and weights (N, W): K is contiguous for both.
 *
 * Every kernel of the family is one formula with a small table of coefficients,
 *     out[m][n] = bias + row_bias[m] + sum_{p,q} coef[p][q] * popc(op(A[p][m], B[q][n]))
 * over activation planes p and weight planes q, op = AND or XOR (kernels/popcount.py, _coef):
 *     W1A1        a . w = K - 2 popc(a XOR w)                     (XOR, coef [[-2]], bias K)
 *     W2A2 etc.   a . w = sum_j 2^j (popc(a_j AND w+) - popc(a_j AND w-))
 *
 * This file: 1. the equations in scalar C, 2. the portable tile, 3. the SIMD tiles
 * (_popcount_avx2.h, _popcount_avx512.h), 4. the driver that blocks the loops and picks a path.
 */
#ifndef MINITBT_POPCOUNT_H
#define MINITBT_POPCOUNT_H

#include "_dispatch.h"

enum { TBT_AND = 0, TBT_XOR = 1 };

/* ---------------------------------------------------------------------------------------
 * 1. The equations, one output at a time
 * --------------------------------------------------------------------------------------- */

/* W1A1: a, w in {-1,+1}^K as sign bits (1 = -1), W words each.
 *     a . w = K - 2 popc(a XOR w)
 * (equal signs give +1, different signs -1, and XOR marks the different ones) */
static inline int32_t tbt_xnor_dot(const uint64_t *a, const uint64_t *w, int W, int K)
{
    int32_t differ = 0;
    for (int i = 0; i < W; i++) differ += tbt_popc64(a[i] ^ w[i]);
    return K - 2 * differ;
}

/* out[m] = sum_p weight[p] * popc(A[p][m]);  A: (pa, M, W). The ±1-weight kernels need
 * row_bias = sum_j 2^j popc(a_j) (two-set identity, kernels/popcount.py). */
static TBT_UNUSED void tbt_row_popc(const uint64_t *A, int pa, int M, int W,
                                    const int32_t *weight, int32_t *row_popc)
{
    for (int m = 0; m < M; m++) {
        int32_t s = 0;
        for (int p = 0; p < pa; p++) {
            const uint64_t *a = A + ((size_t)p * M + m) * W;
            int32_t c = 0;
            for (int i = 0; i < W; i++) c += tbt_popc64(a[i]);
            s += weight[p] * c;
        }
        row_popc[m] = s;
    }
}

/* ---------------------------------------------------------------------------------------
 * 2. The portable tile: 2 activation rows x 4 weight rows
 * ---------------------------------------------------------------------------------------
 * Inside a tile the K loop loads each weight word once and uses it for both activation rows,
 * each activation word for 4 weight rows, and the 8 counts stay in registers. Every path
 * (portable, AVX2, AVX-512) computes such tiles; they differ in how they count.
 */
#define TBT_MR 2          /* activation rows per tile */
#define TBT_NR 4          /* weight rows (output columns) per tile */
#define TBT_MBLOCK 128    /* activation rows per cache block */

/* Where a tile's results go: out row i of the tile is o_i[0..3]; the first plane pair
 * stores init_i + result, the later ones add (first = 0). */
typedef struct {
    int32_t *o0, *o1;
    int32_t init0, init1;
    int first;
} tbt_dst;

static inline void tbt_put(int32_t *o, int32_t init, int first, const int32_t r[TBT_NR])
{
    for (int j = 0; j < TBT_NR; j++) o[j] = (first ? init : o[j]) + r[j];
}

/* out_i[j] (+)= coef * sum_{w0 <= w < W} popc(op(a_i[w], b_j[w])), i < 2, j < 4.
 * Always inlined, so that op is a constant in each copy (one for AND, one for XOR). */
static TBT_ALWAYS_INLINE void tbt_tile_scalar(int op, const uint64_t *a0, const uint64_t *a1,
                                              const uint64_t *const b[TBT_NR], int w0, int W,
                                              int32_t coef, tbt_dst d)
{
    int64_t c0[TBT_NR] = {0, 0, 0, 0}, c1[TBT_NR] = {0, 0, 0, 0};
    for (ptrdiff_t w = w0; w < W; w++) {
        const uint64_t x0 = a0[w], x1 = a1[w];
        for (int j = 0; j < TBT_NR; j++) {
            const uint64_t y = b[j][w];
            c0[j] += tbt_popc64(op == TBT_XOR ? x0 ^ y : x0 & y);
            c1[j] += tbt_popc64(op == TBT_XOR ? x1 ^ y : x1 & y);
        }
    }
    int32_t r0[TBT_NR], r1[TBT_NR];
    for (int j = 0; j < TBT_NR; j++) {
        r0[j] = coef * (int32_t)c0[j];
        r1[j] = coef * (int32_t)c1[j];
    }
    tbt_put(d.o0, d.init0, d.first, r0);
    tbt_put(d.o1, d.init1, d.first, r1);
}

/*
 * A panel: one M block (`rows` activation rows of plane p) against one tile of 4 weight rows
 * (plane q). Rows r, r+1 go to o + r * ld; the row past an odd count to `spare`.
 * Each path has its own panel function, kept out of line so that the compiler allocates
 * registers for that loop nest alone.
 */
typedef struct {
    const uint64_t *a;                  /* rows x W words (this plane, this block) */
    const uint64_t *zero;               /* a zero row (2 W words, 64-byte aligned) */
    const void *prep;                   /* the AVX2 path's nibbles of these rows, else NULL */
    int rows, W;
} tbt_panel_in;

/* the destinations of activation rows r, r+1 of a panel */
static inline tbt_dst tbt_panel_dst(int r, int rows, int first, int32_t *o, size_t ld,
                                    int32_t *spare, int32_t bias, const int32_t *row_bias)
{
    const int two = r + 1 < rows;
    tbt_dst d;
    d.o0 = o + (size_t)r * ld;
    d.o1 = two ? d.o0 + ld : spare;
    d.init0 = bias + (row_bias ? row_bias[r] : 0);
    d.init1 = two ? bias + (row_bias ? row_bias[r + 1] : 0) : 0;
    d.first = first;
    return d;
}

static TBT_NOINLINE void tbt_panel_scalar(int op, tbt_panel_in in,
                                          const uint64_t *const b[TBT_NR], int32_t coef,
                                          int first, int32_t *o, size_t ld, int32_t *spare,
                                          int32_t bias, const int32_t *row_bias)
{
    for (int r = 0; r < in.rows; r += TBT_MR) {
        const tbt_dst d = tbt_panel_dst(r, in.rows, first, o, ld, spare, bias, row_bias);
        const uint64_t *a0 = in.a + (size_t)r * in.W;
        const uint64_t *a1 = r + 1 < in.rows ? a0 + in.W : in.zero;
        if (op == TBT_XOR) tbt_tile_scalar(TBT_XOR, a0, a1, b, 0, in.W, coef, d);
        else               tbt_tile_scalar(TBT_AND, a0, a1, b, 0, in.W, coef, d);
    }
}

/* ---------------------------------------------------------------------------------------
 * 3. The SIMD tiles and panels (same tiles, counted 256 or 512 bits at a time)
 * --------------------------------------------------------------------------------------- */
#include "_popcount_avx2.h"
#include "_popcount_avx512.h"

/* ---------------------------------------------------------------------------------------
 * 4. The driver
 * --------------------------------------------------------------------------------------- */
/*
 * A: (pa, M, W) activation planes, B: (pb, N, W) weight planes, coef: (pa, pb),
 * row_bias: (M,) or NULL, out: (M, N).
 *   out[m][n] = bias + row_bias[m] + sum_{p,q} coef[p][q] * popc(op(A[p][m], B[q][n]))
 * Loop order: M blocks of 128 rows; tiles of 4 weight rows (parallel); plane pairs;
 * activation row pairs. A tile's weight rows stay in L1 while the block's rows stream.
 * Returns 0, or -1 if a work buffer could not be allocated.
 */
static TBT_UNUSED int tbt_popc_gemm(const uint64_t *A, const uint64_t *B, int M, int N, int W,
                         int op, int pa, int pb, const int32_t *coef,
                         const int32_t *row_bias, int32_t bias, int32_t *out, int threads)
{
    const int path = tbt_kernel_path();
    void *raw_zero = NULL, *raw_prep = NULL;
    const char *prep = NULL;                  /* per activation row: prep_bytes bytes */
    size_t prep_bytes = 0;
    /* a zero row stands in for the rows past M or N of a partial tile; 16 W bytes, so that
     * it also serves as the AVX2 path's nibbles of a zero row */
    uint64_t *zero = (uint64_t *)tbt_alloc((size_t)(W > 0 ? W : 1) * 16, &raw_zero);
    if (zero == NULL) return -1;
    memset(zero, 0, (size_t)(W > 0 ? W : 1) * 16);
#if TBT_X86_SIMD
    if (path == TBT_PATH_AVX2) {
        prep_bytes = tbt_avx2_prep_bytes(W);
        if (prep_bytes > 0) {
            prep = (const char *)tbt_alloc((size_t)pa * M * prep_bytes, &raw_prep);
            if (prep == NULL) { free(raw_zero); return -1; }
            tbt_avx2_prepare(A, (size_t)pa * M, W, (void *)prep);
        }
    }
#else
    (void)path;
#endif
    const int ntiles = (N + TBT_NR - 1) / TBT_NR;

    for (int mb = 0; mb < M; mb += TBT_MBLOCK) {
        const int rows = M - mb < TBT_MBLOCK ? M - mb : TBT_MBLOCK;
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
        for (int t = 0; t < ntiles; t++) {
            const int n0 = t * TBT_NR;
            const int full = n0 + TBT_NR <= N;
            int32_t spare[TBT_NR];
            int32_t part[TBT_MBLOCK][TBT_NR];    /* results of a partial tile (N % 4 != 0) */
            int32_t *o = full ? out + (size_t)mb * N + n0 : &part[0][0];
            const size_t ld = full ? (size_t)N : TBT_NR;
            for (int q = 0; q < pb; q++) {
                const uint64_t *b[TBT_NR];       /* this tile's weight rows in plane q */
                for (int j = 0; j < TBT_NR; j++)
                    b[j] = n0 + j < N ? B + ((size_t)q * N + n0 + j) * W : zero;
                for (int p = 0; p < pa; p++) {
                    tbt_panel_in in;
                    in.a = A + ((size_t)p * M + mb) * W;
                    in.zero = zero;
                    in.prep = prep ? prep + ((size_t)p * M + mb) * prep_bytes : NULL;
                    in.rows = rows;
                    in.W = W;
                    const int32_t c = coef[p * pb + q], first = p == 0 && q == 0;
                    const int32_t *rb = row_bias ? row_bias + mb : NULL;
                    /* direct calls (not a function pointer): each panel is specialised to
                     * its call, which matters when a panel is one tile (M = 1) */
#if TBT_X86_SIMD
                    if (path == TBT_PATH_AVX512)
                        tbt_panel_avx512(op, in, b, c, first, o, ld, spare, bias, rb);
                    else if (path == TBT_PATH_AVX2)
                        tbt_panel_avx2(op, in, b, c, first, o, ld, spare, bias, rb);
                    else
#endif
                        tbt_panel_scalar(op, in, b, c, first, o, ld, spare, bias, rb);
                }
            }
            if (!full)
                for (int r = 0; r < rows; r++)
                    for (int j = 0; n0 + j < N; j++)
                        out[(size_t)(mb + r) * N + n0 + j] = part[r][j];
        }
    }
    free(raw_zero);
    free(raw_prep);
    (void)threads;
    return 0;
}

#endif /* MINITBT_POPCOUNT_H */
