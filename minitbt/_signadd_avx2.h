/*
 * minitbt/_signadd_avx2.h -- the AVX2 path of sign-add (included by _signadd.h).
 *
 * One vpermps looks a table up for 8 output rows at once: lane l of the index vector is row
 * 8r + l, and vpermps(T, v) gives T[v_l & 7] in lane l. Shifting the index vector by 8, 16,
 * 24 bits brings the other three indices of each row to the low bits. Per row the additions
 * are those of tbt_signadd_chunk, in the same order.
 */
#ifndef MINITBT_SIGNADD_AVX2_H
#define MINITBT_SIGNADD_AVX2_H
#if TBT_X86_SIMD

/* 8 rows (one row block, indices blk) of one chunk (tables t[g] in registers): yr += ... */
TBT_AVX2 static TBT_ALWAYS_INLINE void tbt_signadd_block_avx2(const __m256 t[TBT_SA_G],
                                                              const uint8_t *blk, float *yr)
{
    __m256 ap = _mm256_loadu_ps(yr), am = _mm256_setzero_ps();
    __m256 bp = _mm256_setzero_ps(), bm = _mm256_setzero_ps();
    for (int b = 0; b < TBT_SA_G / 2; b++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 32 * b));
        ap = _mm256_add_ps(ap, _mm256_permutevar8x32_ps(t[2 * b], v));
        am = _mm256_add_ps(am, _mm256_permutevar8x32_ps(t[2 * b], _mm256_srli_epi32(v, 8)));
        bp = _mm256_add_ps(bp, _mm256_permutevar8x32_ps(t[2 * b + 1], _mm256_srli_epi32(v, 16)));
        bm = _mm256_add_ps(bm, _mm256_permutevar8x32_ps(t[2 * b + 1], _mm256_srli_epi32(v, 24)));
    }
    _mm256_storeu_ps(yr, _mm256_sub_ps(_mm256_add_ps(ap, bp), _mm256_add_ps(am, bm)));
}

/* row blocks r0..r1-1 of one chunk (tables Tc, indices blk of row block r0) into y */
TBT_AVX2 static TBT_NOINLINE void tbt_signadd_rows_avx2(const float *Tc, const uint8_t *blk,
                                                        float *y, int r0, int r1)
{
    __m256 t[TBT_SA_G];
    for (int g = 0; g < TBT_SA_G; g++) t[g] = _mm256_loadu_ps(Tc + 8 * g);
    for (int r = r0; r < r1; r++, blk += TBT_SA_BYTES) tbt_signadd_block_avx2(t, blk, y + 8 * r);
}

#endif /* TBT_X86_SIMD */
#endif /* MINITBT_SIGNADD_AVX2_H */
