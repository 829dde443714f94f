/*
 * minitbt/_signadd_avx512.h -- the AVX-512 path of sign-add (included by _signadd.h).
 * Needs AVX-512 F (and the AVX2 of every AVX-512 CPU for an odd last row block).
 *
 * The 512-bit vpermps (vpermps zmm) looks up 16 lanes at once from a 16-entry table; the
 * table is the group's 8 entries twice (an index is at most 7, so bit 3 is 0). Two row blocks
 * (16 rows) go in one vector: the 32 index bytes of row block r in the low half, those of
 * r + 1 in the high half. Per row the additions are those of tbt_signadd_chunk.
 */
#ifndef MINITBT_SIGNADD_AVX512_H
#define MINITBT_SIGNADD_AVX512_H
#if TBT_X86_SIMD

/* row blocks r0..r1-1 of one chunk (tables Tc, indices blk of row block r0) into y */
TBT_AVX512 static TBT_NOINLINE void tbt_signadd_rows_avx512(const float *Tc, const uint8_t *blk,
                                                            float *y, int r0, int r1)
{
    __m512 t[TBT_SA_G];                          /* each table, in both halves */
    __m256 t8[TBT_SA_G];                         /* each table, for an odd last row block */
    for (int g = 0; g < TBT_SA_G; g++) {
        t8[g] = _mm256_loadu_ps(Tc + 8 * g);
        t[g] = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(t8[g])));
    }
    int r = r0;
    for (; r + 2 <= r1; r += 2, blk += 2 * TBT_SA_BYTES) {
        float *yr = y + 8 * r;
        __m512 ap = _mm512_loadu_ps(yr), am = _mm512_setzero_ps();
        __m512 bp = _mm512_setzero_ps(), bm = _mm512_setzero_ps();
        for (int b = 0; b < TBT_SA_G / 2; b++) {
            const __m512i v = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(blk + 32 * b))),
                _mm256_loadu_si256((const __m256i *)(blk + TBT_SA_BYTES + 32 * b)), 1);
            ap = _mm512_add_ps(ap, _mm512_permutexvar_ps(v, t[2 * b]));
            am = _mm512_add_ps(am, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 8), t[2 * b]));
            bp = _mm512_add_ps(bp, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 16), t[2 * b + 1]));
            bm = _mm512_add_ps(bm, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 24), t[2 * b + 1]));
        }
        _mm512_storeu_ps(yr, _mm512_sub_ps(_mm512_add_ps(ap, bp), _mm512_add_ps(am, bm)));
    }
    if (r < r1) tbt_signadd_block_avx2(t8, blk, y + 8 * r);
}

#endif /* TBT_X86_SIMD */
#endif /* MINITBT_SIGNADD_AVX512_H */
