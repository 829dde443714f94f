/*
 * minitbt/_bitops.h -- the C side of minitbt's multiplication-free kernels.
 *
 * minitbt/kernels/ holds the specification: a pure-NumPy reference for every
 * function below, the bit layouts, and the equations (docs/kernels.md explains the
 * design). This file is included by minitbt/_core.pyx, which only wraps it.
 *
 * Three families, each with a portable C path and an AVX2 path (#ifdef __AVX2__):
 *
 *   1. popcount GEMMs on bit-packed operands (xnor, and, bit planes, ternary x ternary)
 *        out[m][n] = bias + row_bias[m] + sum_{p,q} coef[p][q] * popc(op(A[p][m], B[q][n]))
 *   2. ternary weights x int8 activations: integer dot products (maddubs on AVX2)
 *   3. ternary weights x float32 activations by table look-up (sign-add, no multiplies)
 *
 * Layout shared by family 1: a row of K bits is ceil(K/64) uint64 words; bit k lives in
 * word k/64 at position k%64 (LSB first); the padding bits past K are 0 in both operands.
 * Activations are (M, W) and weights (N, W): K is contiguous for both.
 *
 * Every function returns 0 on success and -1 if a work buffer could not be allocated.
 * Hot loops index with ptrdiff_t: Python builds extensions with -fwrapv, and with an
 * int index the compiler must allow for wrap-around in the address arithmetic (it cost
 * the int8 GEMM a third of its speed).
 */
#ifndef MINITBT_BITOPS_H
#define MINITBT_BITOPS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>
#define TBT_HAVE_AVX2 1
#else
#define TBT_HAVE_AVX2 0
#endif

#if defined(_OPENMP)
#include <omp.h>
#define TBT_HAVE_OPENMP 1
#else
#define TBT_HAVE_OPENMP 0
#endif

#if defined(_MSC_VER)
#include <intrin.h>
#define TBT_NOINLINE __declspec(noinline)
static inline int tbt_popc64(uint64_t x) { return (int)__popcnt64(x); }
#else
#define TBT_NOINLINE __attribute__((noinline))
static inline int tbt_popc64(uint64_t x) { return __builtin_popcountll(x); }  /* popcnt */
#endif

/* 64-byte aligned scratch memory: *raw is what free() gets. */
static void *tbt_alloc(size_t bytes, void **raw)
{
    *raw = malloc(bytes + 64);
    if (*raw == NULL) return NULL;
    return (void *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
}

/* ===================================================================================
 * 1. popcount GEMMs
 * ===================================================================================
 * The work is cut into tiles of 2 activation rows x 4 weight rows. Inside a tile the
 * K loop loads each weight word once and uses it for both activation rows, each
 * activation word for 4 weight rows, and the 8 counters stay in registers. Tiles of
 * weight rows are the outer loop (4 rows stay in L1), activation rows the inner loop
 * (blocks of 128 rows stay in L2). xnor, and, bit planes and ternary x ternary are the
 * same loop with different ops, planes and coefficients (see tbt_popc_gemm).
 */
enum { TBT_AND = 0, TBT_XOR = 1 };
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

/* Portable tile: out_i[j] (+)= coef * sum_{w0 <= w < W} popc(op(a_i[w], b_j[w])). */
static void tbt_tile_scalar(int op, const uint64_t *a0, const uint64_t *a1,
                            const uint64_t *const b[TBT_NR], int w0, int W, int32_t coef,
                            tbt_dst d)
{
    const uint64_t *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
    int64_t c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
#define TBT_SCALAR_LOOP(OP)                                                            \
    for (ptrdiff_t w = w0; w < W; w++) {                                               \
        uint64_t x0 = a0[w], x1 = a1[w];                                               \
        uint64_t y0 = b0[w], y1 = b1[w], y2 = b2[w], y3 = b3[w];                       \
        c00 += tbt_popc64(x0 OP y0); c01 += tbt_popc64(x0 OP y1);                      \
        c02 += tbt_popc64(x0 OP y2); c03 += tbt_popc64(x0 OP y3);                      \
        c10 += tbt_popc64(x1 OP y0); c11 += tbt_popc64(x1 OP y1);                      \
        c12 += tbt_popc64(x1 OP y2); c13 += tbt_popc64(x1 OP y3);                      \
    }
    if (op == TBT_XOR) { TBT_SCALAR_LOOP(^) } else { TBT_SCALAR_LOOP(&) }
#undef TBT_SCALAR_LOOP
    const int32_t r0[TBT_NR] = {coef * (int32_t)c00, coef * (int32_t)c01,
                                coef * (int32_t)c02, coef * (int32_t)c03};
    const int32_t r1[TBT_NR] = {coef * (int32_t)c10, coef * (int32_t)c11,
                                coef * (int32_t)c12, coef * (int32_t)c13};
    tbt_put(d.o0, d.init0, d.first, r0);
    tbt_put(d.o1, d.init1, d.first, r1);
}

#if TBT_HAVE_AVX2
/*
 * AVX2 popcount of 256 bits by nibble look-up (Mula's method): split every byte into
 * its low and high nibble, look both up in a 16-entry table of popcounts with
 * vpshufb, and add the two byte counts. Byte counters hold at most 8 per vector, so
 * they are folded into int32 every 31 vectors (31 * 8 = 248 < 256).
 *
 * The activation rows are split into nibbles once per call ("as": per 32-byte vector
 * a lo vector then a hi vector), so inside the tile only the weight vector is split:
 * (a op b) & 0x0f == (a & 0x0f) op (b & 0x0f) for op in {and, xor}.
 */
#define TBT_CHUNK 31

static inline __m256i tbt_lut_popc4(void)
{
    return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
}

/* four byte-counter vectors -> their four totals as int32, in one __m128i */
static inline __m128i tbt_reduce4(__m256i c0, __m256i c1, __m256i c2, __m256i c3)
{
    const __m256i z = _mm256_setzero_si256();
    __m256i s0 = _mm256_sad_epu8(c0, z), s1 = _mm256_sad_epu8(c1, z);   /* 4 x u64 each */
    __m256i s2 = _mm256_sad_epu8(c2, z), s3 = _mm256_sad_epu8(c3, z);
    __m256i x = _mm256_or_si256(s0, _mm256_slli_epi64(s1, 32));          /* (s0, s1) pairs */
    __m256i y = _mm256_or_si256(s2, _mm256_slli_epi64(s3, 32));          /* (s2, s3) pairs */
    __m256i t = _mm256_add_epi32(_mm256_unpacklo_epi64(x, y), _mm256_unpackhi_epi64(x, y));
    return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

static inline void tbt_put4(int32_t *o, int32_t init, int first, __m128i r)
{
    const __m128i prev = first ? _mm_set1_epi32(init) : _mm_loadu_si128((const __m128i *)o);
    _mm_storeu_si128((__m128i *)o, _mm_add_epi32(prev, r));
}

/* Split n vectors of 32 bytes into nibbles: dst[2v] = lo nibbles, dst[2v+1] = hi. */
static void tbt_split_nibbles(const uint64_t *src, __m256i *dst, int n)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int v = 0; v < n; v++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(src + 4 * v));
        dst[2 * v] = _mm256_and_si256(x, m4);
        dst[2 * v + 1] = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
    }
}

/* one weight column j: split its vector, then count against both activation rows */
#define TBT_AVX2_COL(VOP, j, cA, cB)                                                   \
    y = _mm256_loadu_si256((const __m256i *)(b[j] + 4 * v));                           \
    yl = _mm256_and_si256(y, m4);                                                      \
    yh = _mm256_and_si256(_mm256_srli_epi16(y, 4), m4);                                \
    cA = _mm256_add_epi8(cA, _mm256_add_epi8(                                          \
        _mm256_shuffle_epi8(lut, VOP(as0[2 * v], yl)),                                 \
        _mm256_shuffle_epi8(lut, VOP(as0[2 * v + 1], yh))));                           \
    cB = _mm256_add_epi8(cB, _mm256_add_epi8(                                          \
        _mm256_shuffle_epi8(lut, VOP(as1[2 * v], yl)),                                 \
        _mm256_shuffle_epi8(lut, VOP(as1[2 * v + 1], yh))));

/* 2 x 4 tile over vectors [v0, v1): 8 byte counters in registers */
#define TBT_AVX2_TILE(NAME, VOP)                                                       \
static inline void NAME(const __m256i *as0, const __m256i *as1,                       \
                        const uint64_t *const b[TBT_NR], int v0, int v1, int32_t coef, \
                        tbt_dst d)                                                     \
{                                                                                      \
    const __m256i lut = tbt_lut_popc4(), m4 = _mm256_set1_epi8(0x0f);                  \
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00;             \
    __m256i c10 = c00, c11 = c00, c12 = c00, c13 = c00;                                \
    for (ptrdiff_t v = v0; v < v1; v++) {                                              \
        __m256i y, yl, yh;                                                             \
        TBT_AVX2_COL(VOP, 0, c00, c10) TBT_AVX2_COL(VOP, 1, c01, c11)                  \
        TBT_AVX2_COL(VOP, 2, c02, c12) TBT_AVX2_COL(VOP, 3, c03, c13)                  \
    }                                                                                  \
    const __m128i k = _mm_set1_epi32(coef);                                            \
    tbt_put4(d.o0, d.init0, d.first, _mm_mullo_epi32(tbt_reduce4(c00, c01, c02, c03), k)); \
    tbt_put4(d.o1, d.init1, d.first, _mm_mullo_epi32(tbt_reduce4(c10, c11, c12, c13), k)); \
}
TBT_AVX2_TILE(tbt_tile_avx2_xor, _mm256_xor_si256)
TBT_AVX2_TILE(tbt_tile_avx2_and, _mm256_and_si256)
#undef TBT_AVX2_COL
#undef TBT_AVX2_TILE
#endif /* TBT_HAVE_AVX2 */

/*
 * A panel: one M block (`rows` activation rows of plane p) against one tile of 4 weight
 * rows (plane q). Rows r, r+1 go to o + r * ld; the row past an odd count to `spare`.
 * Kept out of line so that the compiler allocates registers for this loop nest alone.
 */
typedef struct {
    const uint64_t *a;                  /* rows x W words (this plane, this block) */
    const uint64_t *zero;               /* a zero row */
#if TBT_HAVE_AVX2
    const __m256i *as, *zero_split;     /* the same rows split into nibbles (2V vectors) */
#endif
    int rows, V, W;
} tbt_panel_in;

static TBT_NOINLINE void tbt_panel(int op, tbt_panel_in in, const uint64_t *const b[TBT_NR],
                                   int32_t coef, int first, int32_t *o, size_t ld,
                                   int32_t *spare, int32_t bias, const int32_t *row_bias)
{
    for (int r = 0; r < in.rows; r += TBT_MR) {
        const int two = r + 1 < in.rows;
        tbt_dst d;
        d.o0 = o + (size_t)r * ld;
        d.o1 = two ? d.o0 + ld : spare;
        d.init0 = bias + (row_bias ? row_bias[r] : 0);
        d.init1 = two ? bias + (row_bias ? row_bias[r + 1] : 0) : 0;
        d.first = first;
#if TBT_HAVE_AVX2
        const __m256i *s0 = in.as + (size_t)r * 2 * in.V;
        const __m256i *s1 = two ? s0 + 2 * in.V : in.zero_split;
        for (int v0 = 0; v0 < in.V; v0 += TBT_CHUNK) {   /* byte counters: <= 31 vectors */
            const int v1 = v0 + TBT_CHUNK < in.V ? v0 + TBT_CHUNK : in.V;
            if (op == TBT_XOR) tbt_tile_avx2_xor(s0, s1, b, v0, v1, coef, d);
            else               tbt_tile_avx2_and(s0, s1, b, v0, v1, coef, d);
            d.first = 0;
        }
#endif
        const int tail = 4 * in.V;             /* the words past the last whole vector */
        if (tail < in.W) {
            const uint64_t *a0 = in.a + (size_t)r * in.W;
            tbt_tile_scalar(op, a0, two ? a0 + in.W : in.zero, b, tail, in.W, coef, d);
        }
    }
}

/*
 * A: (pa, M, W) activation planes, B: (pb, N, W) weight planes, coef: (pa, pb),
 * row_bias: (M,) or NULL, out: (M, N).
 *   out[m][n] = bias + row_bias[m] + sum_{p,q} coef[p][q] * popc(op(A[p][m], B[q][n]))
 * Loop order: M blocks of 128 rows; tiles of 4 weight rows (parallel); plane pairs;
 * activation row pairs. A tile's weight rows stay in L1 while the block's rows stream.
 */
static int tbt_popc_gemm(const uint64_t *A, const uint64_t *B, int M, int N, int W,
                         int op, int pa, int pb, const int32_t *coef,
                         const int32_t *row_bias, int32_t bias, int32_t *out, int threads)
{
    void *raw_zero = NULL, *raw_split = NULL;
    const int V = TBT_HAVE_AVX2 ? W / 4 : 0;   /* whole 256-bit vectors per row */
    /* a zero row stands in for the rows past M or N of a partial tile */
    uint64_t *zero = (uint64_t *)tbt_alloc((size_t)(W > 0 ? W : 1) * 16, &raw_zero);
    if (zero == NULL) return -1;
    memset(zero, 0, (size_t)(W > 0 ? W : 1) * 16);
#if TBT_HAVE_AVX2
    __m256i *split = NULL;
    if (V > 0) {
        split = (__m256i *)tbt_alloc((size_t)pa * M * 2 * V * sizeof(__m256i), &raw_split);
        if (split == NULL) { free(raw_zero); return -1; }
        for (int r = 0; r < pa * M; r++)
            tbt_split_nibbles(A + (size_t)r * W, split + (size_t)r * 2 * V, V);
    }
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
#if TBT_HAVE_AVX2
                    in.as = split + ((size_t)p * M + mb) * 2 * V;
                    in.zero_split = (const __m256i *)zero;   /* 2V zero vectors = 16W bytes */
#endif
                    in.rows = rows; in.V = V; in.W = W;
                    tbt_panel(op, in, b, coef[p * pb + q], p == 0 && q == 0, o, ld, spare,
                              bias, row_bias ? row_bias + mb : NULL);
                }
            }
            if (!full)
                for (int r = 0; r < rows; r++)
                    for (int j = 0; n0 + j < N; j++)
                        out[(size_t)(mb + r) * N + n0 + j] = part[r][j];
        }
    }
    free(raw_split);
    free(raw_zero);
    return 0;
}

/* row_popc[m] = sum_p weight[p] * popc(A[p][m])   (A: (pa, M, W)) */
static void tbt_row_popc(const uint64_t *A, int pa, int M, int W, const int32_t *weight,
                         int32_t *row_popc)
{
    for (int m = 0; m < M; m++) {
        int32_t s = 0;
        for (int p = 0; p < pa; p++) {
            const uint64_t *a = A + ((size_t)p * M + m) * W;
            int32_t c = 0;
            for (int w = 0; w < W; w++) c += tbt_popc64(a[w]);
            s += weight[p] * c;
        }
        row_popc[m] = s;
    }
}

/* ===================================================================================
 * 2. ternary (or binary) weights x int8 activations, exact int32 results
 * ===================================================================================
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
 * AVX2 uses vpmaddubsw, which multiplies unsigned bytes by signed bytes and adds pairs
 * into int16. The unsigned operand carries an offset that is removed at the end:
 *   GEMM: (x + 128) . w = x . w + 128 * sum(w)     -> subtract 128 * w_sum[n]
 *   GEMV: (w + 1) . x   = x . w + sum(x)           -> subtract sum(x)
 * int16 accumulators are folded into int32 (vpmaddwd by 1) before they can overflow.
 */
#if TBT_HAVE_AVX2
static inline int32_t tbt_hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* 2 rows of x (u8, offset by 128) times 4 rows of int8 codes: acc[i][j] = x_i . w_j */
static TBT_NOINLINE void tbt_i8_tile(const uint8_t *x0, const uint8_t *x1, const int8_t *w,
                                     size_t ldw, int nvec, int32_t acc[2][4])
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int i = 0; i < 2; i++) for (int j = 0; j < 4; j++) acc[i][j] = 0;
    /* |pair sum| <= 2 * 255 = 510, so 32 vectors per int16 accumulator are safe */
    for (int v0 = 0; v0 < nvec; v0 += 32) {
        const int v1 = v0 + 32 < nvec ? v0 + 32 : nvec;
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;
        __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        for (ptrdiff_t v = v0; v < v1; v++) {
            const __m256i xa = _mm256_loadu_si256((const __m256i *)(x0 + 32 * v));
            const __m256i xb = _mm256_loadu_si256((const __m256i *)(x1 + 32 * v));
            const int8_t *wv = w + 32 * v;
            __m256i y;
#define TBT_I8_COL(j, aA, aB)                                                          \
            y = _mm256_loadu_si256((const __m256i *)(wv + (j) * ldw));                 \
            aA = _mm256_add_epi16(aA, _mm256_maddubs_epi16(xa, y));                    \
            aB = _mm256_add_epi16(aB, _mm256_maddubs_epi16(xb, y));
            TBT_I8_COL(0, a00, a10) TBT_I8_COL(1, a01, a11)
            TBT_I8_COL(2, a02, a12) TBT_I8_COL(3, a03, a13)
#undef TBT_I8_COL
        }
        acc[0][0] += tbt_hsum_epi32(_mm256_madd_epi16(a00, ones));
        acc[0][1] += tbt_hsum_epi32(_mm256_madd_epi16(a01, ones));
        acc[0][2] += tbt_hsum_epi32(_mm256_madd_epi16(a02, ones));
        acc[0][3] += tbt_hsum_epi32(_mm256_madd_epi16(a03, ones));
        acc[1][0] += tbt_hsum_epi32(_mm256_madd_epi16(a10, ones));
        acc[1][1] += tbt_hsum_epi32(_mm256_madd_epi16(a11, ones));
        acc[1][2] += tbt_hsum_epi32(_mm256_madd_epi16(a12, ones));
        acc[1][3] += tbt_hsum_epi32(_mm256_madd_epi16(a13, ones));
    }
}
#endif

/* x: (M, K) int8; w_i8: (Np, Kp8); w_sum: (Np,) ; out: (M, N) */
static int tbt_gemm_ternary_i8(const int8_t *x, int M, int K, const int8_t *w_i8, int Kp8,
                               const int32_t *w_sum, int N, int32_t *out, int threads)
{
#if TBT_HAVE_AVX2
    void *raw = NULL;
    const int Mp = (M + 1) & ~1;
    /* activations as unsigned bytes x + 128, K padded with x = 0 (i.e. 128) */
    uint8_t *xu = (uint8_t *)tbt_alloc((size_t)Mp * Kp8, &raw);
    if (xu == NULL) return -1;
    memset(xu, 128, (size_t)Mp * Kp8);
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++)
            xu[(size_t)m * Kp8 + k] = (uint8_t)(x[(size_t)m * K + k] ^ 0x80);
    const int ntiles = (N + 3) / 4, nvec = Kp8 / 32;
    for (int mb = 0; mb < Mp; mb += 64) {       /* 64 rows of x stay in L2 */
        const int me = mb + 64 < Mp ? mb + 64 : Mp;
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
        for (int t = 0; t < ntiles; t++) {
            const int n0 = 4 * t;
            int32_t acc[2][4];
            for (int m0 = mb; m0 < me; m0 += 2) {
                tbt_i8_tile(xu + (size_t)m0 * Kp8, xu + (size_t)(m0 + 1) * Kp8,
                            w_i8 + (size_t)n0 * Kp8, (size_t)Kp8, nvec, acc);
                for (int i = 0; i < 2 && m0 + i < M; i++)
                    for (int j = 0; j < 4 && n0 + j < N; j++)
                        out[(size_t)(m0 + i) * N + n0 + j] = acc[i][j] - 128 * w_sum[n0 + j];
            }
        }
    }
    free(raw);
#else
    (void)w_sum;
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (int n = 0; n < N; n++) {
        const int8_t *w = w_i8 + (size_t)n * Kp8;
        for (int m = 0; m < M; m++) {
            const int8_t *xm = x + (size_t)m * K;
            int32_t acc = 0;
            for (int k = 0; k < K; k++) acc += (int32_t)xm[k] * w[k];
            out[(size_t)m * N + n] = acc;
        }
    }
#endif
    return 0;
}

/* one activation row x: (K,) int8 against the 2-bit layout; out: (N,) */
static int tbt_gemv_ternary_i2(const int8_t *x, int K, const uint8_t *w_i2, int Kp2, int N,
                               int32_t *out, int threads)
{
    const size_t ldw = (size_t)Kp2 / 4;
    int32_t xsum = 0;
    for (int k = 0; k < K; k++) xsum += x[k];
#if TBT_HAVE_AVX2
    void *raw = NULL;
    int8_t *xp = (int8_t *)tbt_alloc((size_t)Kp2, &raw);
    if (xp == NULL) return -1;
    memset(xp, 0, (size_t)Kp2);
    memcpy(xp, x, (size_t)K);
    const int ngroups = (N + 7) / 8, nblk = Kp2 / 128;
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (int g = 0; g < ngroups; g++) {       /* 8 weight rows share each x vector */
        const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
        const uint8_t *w0 = w_i2 + (size_t)8 * g * ldw;
        __m256i s[8];                         /* int32 sums of the 8 rows */
        for (int r = 0; r < 8; r++) s[r] = _mm256_setzero_si256();
        /* |pair sum| <= 2 * 2 * 128 = 512, 4 per block: fold every 8 blocks */
        for (int b0 = 0; b0 < nblk; b0 += 8) {
            const int b1 = b0 + 8 < nblk ? b0 + 8 : nblk;
            __m256i a[8];                     /* int16 sums */
            for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_si256();
            for (ptrdiff_t b = b0; b < b1; b++) {
                const int8_t *xb = xp + 128 * b;
                const __m256i x0 = _mm256_loadu_si256((const __m256i *)xb);
                const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb + 32));
                const __m256i x2 = _mm256_loadu_si256((const __m256i *)(xb + 64));
                const __m256i x3 = _mm256_loadu_si256((const __m256i *)(xb + 96));
                for (int r = 0; r < 8; r++) {
                    /* 32 bytes = 128 codes: shift by 2j and mask 3 -> codes of k = 32j + i */
                    const __m256i p = _mm256_loadu_si256((const __m256i *)(w0 + r * ldw + 32 * b));
                    const __m256i c0 = _mm256_and_si256(p, m3);
                    const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(p, 2), m3);
                    const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(p, 4), m3);
                    const __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(p, 6), m3);
                    const __m256i s01 = _mm256_add_epi16(_mm256_maddubs_epi16(c0, x0),
                                                         _mm256_maddubs_epi16(c1, x1));
                    const __m256i s23 = _mm256_add_epi16(_mm256_maddubs_epi16(c2, x2),
                                                         _mm256_maddubs_epi16(c3, x3));
                    a[r] = _mm256_add_epi16(a[r], _mm256_add_epi16(s01, s23));
                }
            }
            for (int r = 0; r < 8; r++)
                s[r] = _mm256_add_epi32(s[r], _mm256_madd_epi16(a[r], ones));
        }
        for (int r = 0; r < 8 && 8 * g + r < N; r++) out[8 * g + r] = tbt_hsum_epi32(s[r]) - xsum;
    }
    free(raw);
#else
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (int n = 0; n < N; n++) {
        const uint8_t *w = w_i2 + (size_t)n * ldw;
        int32_t acc = 0;
        for (int k = 0; k < K; k++) {
            const int code = (w[(k / 128) * 32 + k % 32] >> (2 * ((k % 128) / 32))) & 3;
            acc += code * (int32_t)x[k];
        }
        out[n] = acc - xsum;
    }
#endif
    return 0;
}

/* ===================================================================================
 * 3. ternary weights x float32 activations by table look-up (additions only)
 * ===================================================================================
 * w = w+ - w-, two {0,1} planes. Inputs are taken in groups of 3; for each group g the
 * 8 subset sums of (x[3g], x[3g+1], x[3g+2]) form a table T_g (7 additions, once per
 * call). A weight row then needs, per group, one look-up per plane:
 *     y[n] = sum_g T_g[i+(n, g)] - T_g[i-(n, g)],   i = 3-bit mask of the plane's bits.
 * (BiQGEMM, Jeon et al. 2020; with AVX2 one vpermps looks up 8 rows at once.)
 *
 * Layout "idx" (built by kernels.prepare_signadd): 8 output rows form a row block, 6
 * groups (18 inputs) a chunk. For chunk c and row block r there are 3 blocks of 32
 * bytes; block b holds groups 2b and 2b+1:
 *     byte 4*row + 0: i+ of group 2b     byte 4*row + 1: i- of group 2b
 *     byte 4*row + 2: i+ of group 2b+1   byte 4*row + 3: i- of group 2b+1
 * so a 32-bit lane is one row, and shifting it by 0, 8, 16, 24 bits brings each index
 * to the low bits that vpermps reads (it ignores the bits above the lowest 3).
 * Order in memory: [chunk][row block][3 blocks][32 bytes]; padding indices are 0.
 */
#define TBT_SA_G 6                       /* groups per chunk */
#define TBT_SA_CHUNK (3 * TBT_SA_G)      /* inputs per chunk */
#define TBT_SA_BYTES (TBT_SA_G / 2 * 32) /* bytes per (chunk, row block) */

/* tables for one row of x: T[8g + i] = sum of x[3g + t] over the bits t of i */
static void tbt_signadd_tables(const float *x, int K, int ngroups, float *T)
{
    for (int g = 0; g < ngroups; g++) {
        const int k = 3 * g;
        const float x0 = k < K ? x[k] : 0.0f;
        const float x1 = k + 1 < K ? x[k + 1] : 0.0f;
        const float x2 = k + 2 < K ? x[k + 2] : 0.0f;
        float *t = T + 8 * g;
        t[0] = 0.0f;     t[1] = x0;       t[2] = x1;       t[3] = x0 + x1;
        t[4] = x2;       t[5] = x0 + x2;  t[6] = x1 + x2;  t[7] = t[3] + x2;
    }
}

/* x: (M, K) float32; idx: see above; out: (M, N) float32 */
static int tbt_signadd_f32(const float *x, int M, int K, const uint8_t *idx, int N,
                           float *out, int threads)
{
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
#if TBT_HAVE_AVX2
                __m256 t[TBT_SA_G];
                for (int g = 0; g < TBT_SA_G; g++) t[g] = _mm256_loadu_ps(Tc + 8 * g);
                for (int r = r0; r < r1; r++, blk += TBT_SA_BYTES) {
                    __m256 ap = _mm256_loadu_ps(y + 8 * r), am = _mm256_setzero_ps();
                    __m256 bp = _mm256_setzero_ps(), bm = _mm256_setzero_ps();
                    for (int b = 0; b < TBT_SA_G / 2; b++) {
                        const __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 32 * b));
                        ap = _mm256_add_ps(ap, _mm256_permutevar8x32_ps(t[2 * b], v));
                        am = _mm256_add_ps(am, _mm256_permutevar8x32_ps(
                                                   t[2 * b], _mm256_srli_epi32(v, 8)));
                        bp = _mm256_add_ps(bp, _mm256_permutevar8x32_ps(
                                                   t[2 * b + 1], _mm256_srli_epi32(v, 16)));
                        bm = _mm256_add_ps(bm, _mm256_permutevar8x32_ps(
                                                   t[2 * b + 1], _mm256_srli_epi32(v, 24)));
                    }
                    _mm256_storeu_ps(y + 8 * r, _mm256_sub_ps(_mm256_add_ps(ap, bp),
                                                              _mm256_add_ps(am, bm)));
                }
#else
                for (int r = r0; r < r1; r++, blk += TBT_SA_BYTES) {
                    for (int row = 0; row < 8; row++) {
                        float acc = 0.0f;
                        for (int g = 0; g < TBT_SA_G; g++) {
                            const uint8_t *q = blk + 32 * (g / 2) + 4 * row + 2 * (g % 2);
                            acc += Tc[8 * g + (q[0] & 7)] - Tc[8 * g + (q[1] & 7)];
                        }
                        y[8 * r + row] += acc;
                    }
                }
#endif
            }
        }
        memcpy(out + (size_t)m * N, y, (size_t)N * sizeof(float));
    }
    free(raw_t);
    free(raw_y);
    return 0;
}

#endif /* MINITBT_BITOPS_H */
