/*
 * minitbt/_popcount_avx512.h -- the AVX-512 path of the popcount GEMMs (included by
 * _popcount.h). Needs AVX-512 F and VPOPCNTDQ (and VL for the 256-bit step).
 *
 * The tile of _popcount.h (2 activation rows x 4 weight rows), counted 512 bits at a time:
 *     c_ij += vpopcntq(op(a_i, b_j))          8 words, 8 int64 counts, one instruction
 * No nibble split, no byte counters to fold, no preparation of the activations. The words
 * past the last whole 512-bit vector: one 256-bit step (4 words) if there are 4 or more, then
 * the scalar tile for the last W mod 4 (inlined: popcnt).
 */
#ifndef MINITBT_POPCOUNT_AVX512_H
#define MINITBT_POPCOUNT_AVX512_H
#if TBT_X86_SIMD

TBT_AVX512 static TBT_ALWAYS_INLINE __m512i tbt_op_avx512(int op, __m512i a, __m512i b)
{
    return op == TBT_XOR ? _mm512_xor_si512(a, b) : _mm512_and_si512(a, b);
}

/* the sum of the 8 int64 lanes of c, plus the 4 of h */
TBT_AVX512 static TBT_ALWAYS_INLINE int64_t tbt_sum_epi64_avx512(__m512i c, __m256i h)
{
    __m256i s = _mm256_add_epi64(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64(c, 1));
    s = _mm256_add_epi64(s, h);
    const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return _mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1);
}

/* out_i[j] (+)= coef * sum_{w < W} popc(op(a_i[w], b_j[w])), i < 2, j < 4 */
TBT_AVX512 static TBT_ALWAYS_INLINE void tbt_tile_avx512(int op, const uint64_t *a0,
                                                         const uint64_t *a1,
                                                         const uint64_t *const b[TBT_NR],
                                                         int W, int32_t coef, tbt_dst d)
{
    __m512i c0[TBT_NR], c1[TBT_NR];             /* int64 counts of rows 0 and 1 */
    __m256i h0[TBT_NR], h1[TBT_NR];             /* the same, from the 256-bit step */
    for (int j = 0; j < TBT_NR; j++) {
        c0[j] = c1[j] = _mm512_setzero_si512();
        h0[j] = h1[j] = _mm256_setzero_si256();
    }
    ptrdiff_t w = 0;
    for (; w + 8 <= W; w += 8) {                /* 512 bits of K per step */
        const __m512i x0 = _mm512_loadu_si512((const void *)(a0 + w));
        const __m512i x1 = _mm512_loadu_si512((const void *)(a1 + w));
        for (int j = 0; j < TBT_NR; j++) {
            const __m512i y = _mm512_loadu_si512((const void *)(b[j] + w));
            c0[j] = _mm512_add_epi64(c0[j], _mm512_popcnt_epi64(tbt_op_avx512(op, x0, y)));
            c1[j] = _mm512_add_epi64(c1[j], _mm512_popcnt_epi64(tbt_op_avx512(op, x1, y)));
        }
    }
    if (w + 4 <= W) {                           /* 256 bits */
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(a0 + w));
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(a1 + w));
        for (int j = 0; j < TBT_NR; j++) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)(b[j] + w));
            h0[j] = _mm256_popcnt_epi64(op == TBT_XOR ? _mm256_xor_si256(x0, y)
                                                      : _mm256_and_si256(x0, y));
            h1[j] = _mm256_popcnt_epi64(op == TBT_XOR ? _mm256_xor_si256(x1, y)
                                                      : _mm256_and_si256(x1, y));
        }
        w += 4;
    }
    int32_t r0[TBT_NR], r1[TBT_NR];
    for (int j = 0; j < TBT_NR; j++) {
        r0[j] = coef * (int32_t)tbt_sum_epi64_avx512(c0[j], h0[j]);
        r1[j] = coef * (int32_t)tbt_sum_epi64_avx512(c1[j], h1[j]);
    }
    tbt_put(d.o0, d.init0, d.first, r0);
    tbt_put(d.o1, d.init1, d.first, r1);
    if (w < W) {                                /* the last W mod 4 words */
        d.first = 0;
        tbt_tile_scalar(op, a0, a1, b, (int)w, W, coef, d);
    }
}

/* The panel of _popcount.h, AVX-512 (in.prep is not used). */
TBT_AVX512 static TBT_NOINLINE void tbt_panel_avx512(int op, tbt_panel_in in,
                                                     const uint64_t *const b[TBT_NR],
                                                     int32_t coef, int first, int32_t *o,
                                                     size_t ld, int32_t *spare, int32_t bias,
                                                     const int32_t *row_bias)
{
    for (int r = 0; r < in.rows; r += TBT_MR) {
        const tbt_dst d = tbt_panel_dst(r, in.rows, first, o, ld, spare, bias, row_bias);
        const uint64_t *a0 = in.a + (size_t)r * in.W;
        const uint64_t *a1 = r + 1 < in.rows ? a0 + in.W : in.zero;
        if (op == TBT_XOR) tbt_tile_avx512(TBT_XOR, a0, a1, b, in.W, coef, d);
        else               tbt_tile_avx512(TBT_AND, a0, a1, b, in.W, coef, d);
    }
}

#endif /* TBT_X86_SIMD */
#endif /* MINITBT_POPCOUNT_AVX512_H */
