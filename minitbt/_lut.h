/*
 * minitbt/_lut.h -- k-bit binary-coding weights x float32 activations by table look-up.
 *
 * The specification is the NumPy reference minitbt.kernels.lut.gemm_bcq_lut_ref; the layout
 * is built by minitbt.kernels.lut.prepare_bcq_lut; docs/kernels.md section 10 explains both.
 * Included by minitbt/_core.pyx (after _bitops.h, whose tbt_alloc, TBT_AVX2 and dispatch it uses).
 * Paths: the scalar form (portable), the AVX2 form (run on the AVX2 and the AVX-512 paths).
 *
 * Binary-coding quantization (Chung et al. 2020) writes a weight row as k scaled sign vectors,
 *     W_n = sum_{i<k} a_{i,n} b_{i,n},   b_{i,n} in {-1,+1}^K,
 * so  y_{m,n} = sum_i a_{i,n} (b_{i,n} . x_m).  The sign dot products b . x are sums of +-x:
 * BiQGEMM (Jeon et al. 2020) and T-MAC (Wei et al., EuroSys 2025) cut K into groups of g = 4
 * inputs and tabulate, once per activation row, the 2^4 = 16 signed sums of each group,
 *     T_j[p] = sum_{t<4} (-1)^{bit t of p} x_{4j+t},
 * so that b . x = sum_j T_j[p_j(b)]: one look-up and one addition per 4 weights, no multiply.
 * Only half of each table is stored (T-MAC's mirror): flipping every sign negates the sum,
 * T_j[p] = -T_j[15 - p], so the 8 entries with bit 3 clear are enough,
 *     H_j[q] = ((s0 x_{4j} + s1 x_{4j+1}) + s2 x_{4j+2}) + x_{4j+3},  s_t = -1 if bit t of q,
 * and a pattern p is stored as its code c = p ^ (7 * (p >> 3)):  T_j[p] = (c & 8 ? -1 : +1) H_j[c & 7].
 * 8 floats are one AVX2 register, and one vpermps looks the table up for 8 output rows.
 *
 * Exactness. The sums are float32, so "bit-exact" means: the same additions in the same order
 * as the reference, every one rounded to float32 (built with -ffp-contract=off: a fused
 * multiply-add would round a_i * s once instead of twice):
 *     s_{m,i,n} = ((0 + T_0[p_0]) + T_1[p_1]) + ... + T_{J-1}[p_{J-1}]       j in order
 *     y_{m,n}   = ((0 + a_{0,n} s_{m,0,n}) + a_{1,n} s_{m,1,n}) + ...          i in order
 * The AVX2 path keeps that order: its 8 lanes are 8 output rows, each lane runs the scalar
 * sequence of one row. (Negation is exact, so the mirror changes no value; at most the sign of
 * a zero entry, which cannot show: s starts at +0, and +0 + -0 = +0.) Its tables are "keyed"
 * (see tbt_lut_key_tables_avx2), which moves bits, never a value.
 *
 * Layout "lut" (uint32): 8 output rows form a row block, 8 groups (32 inputs) a word; in the
 * 32-bit word of (row block rb, plane i, word w, lane l), bits 4b..4b+3 hold the code c of
 * group j = 8w + b for row n = 8rb + l. Order in memory: [rb][i][w][l], so a row block's words
 * are contiguous and one 32-byte load gives 8 rows x 8 groups. Padding: rows past N and groups
 * past K are code 0 (all +1) and padding inputs are 0; the scales are (k, 8 ceil(N/8)) float32,
 * 0 past N. 4 bits per 4 weights and plane: k bits per weight, as the codes themselves.
 */
#ifndef MINITBT_LUT_H
#define MINITBT_LUT_H

#include "_bitops.h"

#define TBT_LUT_G 4          /* inputs per group: tables of 2^4 sums, 8 stored */
#define TBT_LUT_MBLOCK 16    /* activation rows whose tables are built at once (kept in L2) */

/* The sizes, worked out once by the driver (tbt_bcq_lut_f32). */
typedef struct {
    int K, J, Wd;          /* inputs, groups ceil(K/4), words per (row block, plane) ceil(J/8) */
    int k, N, Nb, Np;      /* planes, output rows, row blocks ceil(N/8), padded rows 8 Nb */
    size_t block_words;    /* uint32 per row block: k Wd 8 */
    size_t table_floats;   /* floats of one activation row's tables: 8 Wd groups x 8 */
} tbt_lut_dims;

/* ---------------------------------------------------------------------------------------
 * The scalar form: the equations, one value at a time
 * --------------------------------------------------------------------------------------- */

/* The half table of one group x[0..3]:  H[q] = ((s0 x0 + s1 x1) + s2 x2) + x3,
 * s_t = -1 where bit t of q is set, else +1. */
static void tbt_lut_half_table(const float x[TBT_LUT_G], float H[8])
{
    for (int q = 0; q < 8; q++) {
        const float t0 = (q & 1) ? -x[0] : x[0];
        const float t1 = (q & 2) ? -x[1] : x[1];
        const float t2 = (q & 4) ? -x[2] : x[2];
        H[q] = ((t0 + t1) + t2) + x[3];
    }
}

/* The tables of one activation row x (K,): H_j for j < J (J >= ceil(K/4); inputs past K read
 * as 0). H: (J, 8) floats. */
static void tbt_lut_tables(const float *x, int K, int J, float *H)
{
    for (int j = 0; j < J; j++) {
        float xg[TBT_LUT_G];
        for (int t = 0; t < TBT_LUT_G; t++) {
            const int kk = TBT_LUT_G * j + t;
            xg[t] = kk < K ? x[kk] : 0.0f;
        }
        tbt_lut_half_table(xg, H + 8 * (size_t)j);
    }
}

/* T_j[p] from its half table H_j and the code c = p ^ (7 * (p >> 3)) */
static inline float tbt_lut_lookup(const float *Hj, unsigned c)
{
    const float v = Hj[c & 7];
    return (c & 8) ? -v : v;
}

/* y = sum_i a_i (sum_j T_j[p_{i,j}]) for one activation row (tables H) and one output row:
 * L points at the row's lane in its row block's words (plane 0, word 0), a at its scale in
 * plane 0 (the next plane is Np floats on). */
static inline float tbt_lut_dot(const float *H, const uint32_t *L, const float *a, int k, int Np,
                                int J, int Wd)
{
    float y = 0.0f;
    for (int i = 0; i < k; i++) {
        const uint32_t *Li = L + (size_t)i * Wd * 8;                /* words of plane i */
        float s = 0.0f;
        for (int j = 0; j < J; j++) {
            const unsigned c = (Li[8 * (j / 8)] >> (4 * (j % 8))) & 15;
            s = s + tbt_lut_lookup(H + 8 * (size_t)j, c);
        }
        y = y + a[(size_t)i * Np] * s;
    }
    return y;
}

/* ---------------------------------------------------------------------------------------
 * The AVX2 form: 8 output rows per vector (one per lane), the same order per lane
 * --------------------------------------------------------------------------------------- */
#if TBT_X86_SIMD
#define TBT_LUT_R 4     /* row blocks per tile: 4 independent sums hide the latency of the add */
#define TBT_LUT_MT 2    /* activation rows per tile: they share the decoding of the codes */

/* The AVX2 tables are keyed: entry q carries its own index in bits 28..30,
 *     H'_j[q] = H_j[q] XOR (q << 28)          (a bit pattern, not a float: it is only moved)
 * so that one shift of the code word gives both what cancels the key and the sign. For a lane
 * whose code is c:
 *     vpermps(H'_j, v)              = H'_j[c & 7]       (vpermps reads bits 0..2 of each lane)
 *     v << 28                       = (c & 7) << 28 | (c >> 3) << 31, zeros below bit 28
 *     H'_j[c & 7] XOR (v << 28)     = H_j[c & 7] XOR (c >> 3) << 31  =  T_j[p]
 * (the key cancels, bit 3 of c flips the sign bit: an exact negation). */
TBT_AVX2 static void tbt_lut_key_tables_avx2(float *H, size_t groups)
{
    const __m256 key = _mm256_castsi256_ps(_mm256_setr_epi32(0 << 28, 1 << 28, 2 << 28, 3 << 28,
                                                             4 << 28, 5 << 28, 6 << 28, 7 << 28));
    for (size_t g = 0; g < groups; g++)
        _mm256_storeu_ps(H + 8 * g, _mm256_xor_ps(_mm256_loadu_ps(H + 8 * g), key));
}

/* A tile: r row blocks (8 output rows each, one per lane) against mt activation rows; r and mt
 * are constants at each call (r <= TBT_LUT_R, mt <= TBT_LUT_MT), so the compiler unrolls their
 * loops and keeps the sums in registers. H[m]: the keyed tables of activation row m, (8 Wd, 8);
 * L: the first row block's words [i][w][8 lanes], the next row block block_words further on;
 * a: the first row block's scales, plane i at a + i Np. y[m][q] gets, for the 8 rows of row
 * block q, sum_i a_i s_i, every sum in the order of the scalar form.
 *
 * Per group b of a word v (lane = output row, nibble b = that row's code c), as above:
 *   s += vpermps(H'_j, v) XOR (v << 28)      T_j[p] for 8 rows at once
 *   v >>= 4                                  the next group's code to bits 0..3
 * A word covers 8 groups; past J they are padding (code 0, inputs 0, so the entry is +0), and
 * adding +0 leaves s as it is (s is never -0), so whole words are summed. */
TBT_AVX2 static TBT_ALWAYS_INLINE void tbt_lut_tile_avx2(const float *const H[TBT_LUT_MT], const int mt,
                                                const uint32_t *L, size_t block_words, const int r,
                                                const float *a, int k, int Np, int Wd,
                                                __m256 y[TBT_LUT_MT][TBT_LUT_R])
{
    for (int m = 0; m < mt; m++)
        for (int q = 0; q < r; q++) y[m][q] = _mm256_setzero_ps();
    for (int i = 0; i < k; i++) {
        __m256 s[TBT_LUT_MT][TBT_LUT_R];
        for (int m = 0; m < mt; m++)
            for (int q = 0; q < r; q++) s[m][q] = _mm256_setzero_ps();
        for (ptrdiff_t w = 0; w < Wd; w++) {
            __m256i v[TBT_LUT_R];
            for (int q = 0; q < r; q++)
                v[q] = _mm256_loadu_si256((const __m256i *)(L + q * block_words + ((size_t)i * Wd + w) * 8));
            /* GCC would unroll all 8 groups and run out of registers; 2 at a time keeps the
             * sums in registers (the GEMV runs about 1.4x faster) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 2
#endif
            for (int b = 0; b < 8; b++) {
                const ptrdiff_t j = 8 * w + b;
                for (int q = 0; q < r; q++) {
                    const __m256 unkey = _mm256_castsi256_ps(_mm256_slli_epi32(v[q], 28));
                    for (int m = 0; m < mt; m++) {
                        const __m256 h = _mm256_permutevar8x32_ps(_mm256_loadu_ps(H[m] + 8 * j), v[q]);
                        s[m][q] = _mm256_add_ps(s[m][q], _mm256_xor_ps(h, unkey));
                    }
                    v[q] = _mm256_srli_epi32(v[q], 4);
                }
            }
        }
        for (int q = 0; q < r; q++) {
            const __m256 ai = _mm256_loadu_ps(a + 8 * q + (size_t)i * Np);
            for (int m = 0; m < mt; m++) y[m][q] = _mm256_add_ps(y[m][q], _mm256_mul_ps(ai, s[m][q]));
        }
    }
}

/* out[m][n0 .. n0 + count - 1] = the first count lanes of y */
TBT_AVX2 static TBT_ALWAYS_INLINE void tbt_lut_store(float *o, __m256 y, int count)
{
    if (count == 8) {
        _mm256_storeu_ps(o, y);
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, y);
        for (int l = 0; l < count; l++) o[l] = tmp[l];
    }
}

/* Activation rows m0..m0+mt-1 against row blocks rb0..rb0+r-1 (r, mt constants at each call):
 * the tile, then its results to out. H: the keyed tables of the activation rows from mb on. */
TBT_AVX2 static TBT_ALWAYS_INLINE void tbt_lut_tile_out_avx2(const float *H, int mb, int m0, const int mt,
                                                    int rb0, const int r, const uint32_t *lut,
                                                    const float *scale, tbt_lut_dims d, float *out)
{
    const float *Hm[TBT_LUT_MT];
    __m256 y[TBT_LUT_MT][TBT_LUT_R];
    for (int m = 0; m < mt; m++) Hm[m] = H + (size_t)(m0 + m - mb) * d.table_floats;
    tbt_lut_tile_avx2(Hm, mt, lut + (size_t)rb0 * d.block_words, d.block_words, r,
                      scale + 8 * (size_t)rb0, d.k, d.Np, d.Wd, y);
    for (int m = 0; m < mt; m++)
        for (int q = 0; q < r; q++) {
            const int n0 = 8 * (rb0 + q), count = d.N - n0 < 8 ? d.N - n0 : 8;
            tbt_lut_store(out + (size_t)(m0 + m) * d.N + n0, y[m][q], count);
        }
}

/* Activation rows mb..me-1 (their keyed tables H) x the row blocks of tile t: TBT_LUT_R row
 * blocks x TBT_LUT_MT activation rows at a time, then the tails. */
TBT_AVX2 static TBT_NOINLINE void tbt_lut_rows_avx2(const float *H, int mb, int me, int t,
                                                    const uint32_t *lut, const float *scale,
                                                    tbt_lut_dims d, float *out)
{
    const int rb0 = TBT_LUT_R * t;
    const int full = rb0 + TBT_LUT_R <= d.Nb;          /* TBT_LUT_R row blocks, or the tail */
    int m = mb;
    for (; m + TBT_LUT_MT <= me; m += TBT_LUT_MT) {
        if (full)
            tbt_lut_tile_out_avx2(H, mb, m, TBT_LUT_MT, rb0, TBT_LUT_R, lut, scale, d, out);
        else
            for (int rb = rb0; rb < d.Nb; rb++)
                tbt_lut_tile_out_avx2(H, mb, m, TBT_LUT_MT, rb, 1, lut, scale, d, out);
    }
    for (; m < me; m++) {
        if (full)
            tbt_lut_tile_out_avx2(H, mb, m, 1, rb0, TBT_LUT_R, lut, scale, d, out);
        else
            for (int rb = rb0; rb < d.Nb; rb++)
                tbt_lut_tile_out_avx2(H, mb, m, 1, rb, 1, lut, scale, d, out);
    }
}
#endif

/* ---------------------------------------------------------------------------------------
 * The driver
 * --------------------------------------------------------------------------------------- */
/* Activation rows mb..me-1 (their tables H) x all output rows, one value at a time. */
static void tbt_lut_rows_scalar(const float *H, int mb, int me, const uint32_t *lut,
                                const float *scale, tbt_lut_dims d, float *out, int threads)
{
    (void)threads;                               /* without OpenMP */
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (int n = 0; n < d.N; n++) {
        const uint32_t *L = lut + (size_t)(n / 8) * d.block_words + n % 8;   /* row n's lane */
        for (int m = mb; m < me; m++)
            out[(size_t)m * d.N + n] = tbt_lut_dot(H + (size_t)(m - mb) * d.table_floats, L,
                                                   scale + n, d.k, d.Np, d.J, d.Wd);
    }
}

/* x: (M, K) float32; lut: the layout above, (ceil(N/8), k, Wd, 8) uint32 with
 * Wd = ceil(ceil(K/4) / 8); scale: (k, Np) float32, Np = 8 ceil(N/8); out: (M, N) float32.
 * Activation rows go in blocks of TBT_LUT_MBLOCK, their tables built first. The AVX2 form runs
 * where the kernel path (_dispatch.h) is AVX2 or AVX-512, unless scalar = 1 (the scalar form
 * always: the tests compare the two). */
static TBT_UNUSED int tbt_bcq_lut_f32(const float *x, int M, int K, const uint32_t *lut,
                                      const float *scale, int k, int N, float *out, int threads,
                                      int scalar)
{
    tbt_lut_dims d;
    d.K = K;
    d.J = (K + TBT_LUT_G - 1) / TBT_LUT_G;               /* groups */
    d.Wd = (d.J + 7) / 8;                                /* words per (row block, plane) */
    d.k = k;
    d.N = N;
    d.Nb = (N + 7) / 8;
    d.Np = 8 * d.Nb;
    d.block_words = (size_t)k * d.Wd * 8;
    d.table_floats = (size_t)d.Wd * 8 * 8;
    const int rows = M < TBT_LUT_MBLOCK ? M : TBT_LUT_MBLOCK;   /* tables held at once */
    void *raw = NULL;
    float *H = (float *)tbt_alloc((size_t)rows * d.table_floats * sizeof(float), &raw);
    if (H == NULL) return -1;
    const int simd = TBT_X86_SIMD && !scalar && tbt_kernel_path() >= TBT_PATH_AVX2;

    for (int mb = 0; mb < M; mb += TBT_LUT_MBLOCK) {
        const int me = mb + TBT_LUT_MBLOCK < M ? mb + TBT_LUT_MBLOCK : M;
        for (int m = mb; m < me; m++)        /* the tables, padding groups included (all +0) */
            tbt_lut_tables(x + (size_t)m * K, K, 8 * d.Wd, H + (size_t)(m - mb) * d.table_floats);
#if TBT_X86_SIMD
        if (simd) {
            tbt_lut_key_tables_avx2(H, (size_t)(me - mb) * 8 * d.Wd);
            const int ntiles = (d.Nb + TBT_LUT_R - 1) / TBT_LUT_R;
#if TBT_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
            for (int t = 0; t < ntiles; t++) tbt_lut_rows_avx2(H, mb, me, t, lut, scale, d, out);
            continue;
        }
#endif
        (void)simd;
        tbt_lut_rows_scalar(H, mb, me, lut, scale, d, out, threads);
    }
    free(raw);
    return 0;
}

#endif /* MINITBT_LUT_H */
