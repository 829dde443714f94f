/*
 * minitbt/_int8_avx2.h -- the AVX2 path of ternary x int8 (included by _int8.h).
 *
 * vpmaddubsw multiplies 32 unsigned bytes by 32 signed bytes and adds neighbouring pairs
 * into 16 int16:  out[i] = u[2i] s[2i] + u[2i+1] s[2i+1].  The unsigned operand carries an
 * offset that the driver removes (_int8.h). int16 sums are folded into int32 (vpmaddwd by 1)
 * before they can overflow.
 */
#ifndef MINITBT_INT8_AVX2_H
#define MINITBT_INT8_AVX2_H
#if TBT_X86_SIMD

/* the sum of the 8 int32 lanes of v */
TBT_AVX2 static TBT_ALWAYS_INLINE int32_t tbt_hsum_epi32_avx2(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* GEMM tile: 2 rows of xu = x + 128 (unsigned) times 4 rows of int8 codes w (ldw apart),
 * Kp8 bytes each (a multiple of 32):  acc[i][j] = xu_i . w_j */
TBT_AVX2 static TBT_NOINLINE void tbt_i8_tile_avx2(const uint8_t *x0, const uint8_t *x1,
                                                   const int8_t *w, size_t ldw, int Kp8,
                                                   int32_t acc[2][4])
{
    const __m256i ones = _mm256_set1_epi16(1);
    const int nvec = Kp8 / 32;
    for (int i = 0; i < 2; i++) for (int j = 0; j < 4; j++) acc[i][j] = 0;
    /* |pair sum| <= 2 * 255 = 510, so 32 vectors per int16 accumulator are safe */
    for (int v0 = 0; v0 < nvec; v0 += 32) {
        const int v1 = v0 + 32 < nvec ? v0 + 32 : nvec;
        __m256i a0[4], a1[4];                    /* int16 sums of rows 0 and 1 */
        for (int j = 0; j < 4; j++) a0[j] = a1[j] = _mm256_setzero_si256();
        for (ptrdiff_t v = v0; v < v1; v++) {
            const __m256i xa = _mm256_loadu_si256((const __m256i *)(x0 + 32 * v));
            const __m256i xb = _mm256_loadu_si256((const __m256i *)(x1 + 32 * v));
            for (int j = 0; j < 4; j++) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)(w + j * ldw + 32 * v));
                a0[j] = _mm256_add_epi16(a0[j], _mm256_maddubs_epi16(xa, y));
                a1[j] = _mm256_add_epi16(a1[j], _mm256_maddubs_epi16(xb, y));
            }
        }
        for (int j = 0; j < 4; j++) {
            acc[0][j] += tbt_hsum_epi32_avx2(_mm256_madd_epi16(a0[j], ones));
            acc[1][j] += tbt_hsum_epi32_avx2(_mm256_madd_epi16(a1[j], ones));
        }
    }
}

/* GEMV: the groups g0..g1-1 of 8 rows of the 2-bit layout w_i2 (ldw bytes per row) against
 * xp (Kp2 = 128 nblk bytes): out[n] = (w_n + 1) . x - xsum = w_n . x, for n < N.
 * Per 32-byte block: shift by 2j and mask 3 -> the codes of k = 128b + 32j + i, multiplied
 * by x[128b + 32j + i]; the 8 rows of a group share each activation vector. */
TBT_AVX2 static TBT_NOINLINE void tbt_i2_rows_avx2(const int8_t *xp, const uint8_t *w_i2,
                                                   size_t ldw, int nblk, int g0, int g1, int N,
                                                   int32_t xsum, int32_t *out)
{
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    for (int g = g0; g < g1; g++) {
        const uint8_t *w0 = w_i2 + (size_t)8 * g * ldw;
        __m256i s[8];                             /* int32 sums of the 8 rows */
        for (int r = 0; r < 8; r++) s[r] = _mm256_setzero_si256();
        /* |pair sum| <= 2 * 2 * 128 = 512, 4 per block: fold every 8 blocks */
        for (int b0 = 0; b0 < nblk; b0 += 8) {
            const int b1 = b0 + 8 < nblk ? b0 + 8 : nblk;
            __m256i a[8];                         /* int16 sums */
            for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_si256();
            for (ptrdiff_t b = b0; b < b1; b++) {
                const int8_t *xb = xp + 128 * b;
                const __m256i x0 = _mm256_loadu_si256((const __m256i *)xb);
                const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb + 32));
                const __m256i x2 = _mm256_loadu_si256((const __m256i *)(xb + 64));
                const __m256i x3 = _mm256_loadu_si256((const __m256i *)(xb + 96));
                for (int r = 0; r < 8; r++) {
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
        for (int r = 0; r < 8 && 8 * g + r < N; r++)
            out[8 * g + r] = tbt_hsum_epi32_avx2(s[r]) - xsum;
    }
}

#endif /* TBT_X86_SIMD */
#endif /* MINITBT_INT8_AVX2_H */
