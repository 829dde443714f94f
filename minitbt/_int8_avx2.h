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

/* the totals of four int32 vectors, (sum s0, sum s1, sum s2, sum s3): vphaddd adds
 * neighbouring pairs within each 128-bit half, so two levels leave in each half the partial
 * sums of s0..s3 in order, and one add joins the halves (one reduction for 4 sums, not 4) */
TBT_AVX2 static TBT_ALWAYS_INLINE __m128i tbt_hsum4_epi32_avx2(__m256i s0, __m256i s1,
                                                               __m256i s2, __m256i s3)
{
    const __m256i t = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
    return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

/* One chunk of the GEMM tile: vectors [v0, v1) of 2 rows of xu = x + 128 (unsigned) times 4
 * rows of int8 codes w (ldw apart), as int16 sums: a[i][j] = xu_i . w_j per int16 lane.
 * Each weight vector is loaded once, into a register, for both rows. A function of its own,
 * the sums going out through memory: fed to vpmaddwd in the same function, GCC 12 added a
 * register copy per sum and step (8 more instructions per 8 multiplies). */
TBT_AVX2 static TBT_NOINLINE void tbt_i8_chunk_avx2(const uint8_t *x0, const uint8_t *x1,
                                                    const int8_t *w, size_t ldw, ptrdiff_t v0,
                                                    ptrdiff_t v1, __m256i a[2][4])
{
    const int8_t *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;  /* row 0 */
    __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;                      /* row 1 */
    for (ptrdiff_t o = 32 * v0; o < 32 * v1; o += 32) {
        const __m256i xa = _mm256_loadu_si256((const __m256i *)(x0 + o));
        const __m256i xb = _mm256_loadu_si256((const __m256i *)(x1 + o));
        __m256i y = tbt_in_register_avx2(_mm256_loadu_si256((const __m256i *)(w0 + o)));
        a00 = _mm256_add_epi16(_mm256_maddubs_epi16(xa, y), a00);
        a10 = _mm256_add_epi16(_mm256_maddubs_epi16(xb, y), a10);
        y = tbt_in_register_avx2(_mm256_loadu_si256((const __m256i *)(w1 + o)));
        a01 = _mm256_add_epi16(_mm256_maddubs_epi16(xa, y), a01);
        a11 = _mm256_add_epi16(_mm256_maddubs_epi16(xb, y), a11);
        y = tbt_in_register_avx2(_mm256_loadu_si256((const __m256i *)(w2 + o)));
        a02 = _mm256_add_epi16(_mm256_maddubs_epi16(xa, y), a02);
        a12 = _mm256_add_epi16(_mm256_maddubs_epi16(xb, y), a12);
        y = tbt_in_register_avx2(_mm256_loadu_si256((const __m256i *)(w3 + o)));
        a03 = _mm256_add_epi16(_mm256_maddubs_epi16(xa, y), a03);
        a13 = _mm256_add_epi16(_mm256_maddubs_epi16(xb, y), a13);
    }
    a[0][0] = a00; a[0][1] = a01; a[0][2] = a02; a[0][3] = a03;
    a[1][0] = a10; a[1][1] = a11; a[1][2] = a12; a[1][3] = a13;
}

/* GEMM tile: 2 rows of xu = x + 128 (unsigned) times 4 rows of int8 codes w (ldw apart),
 * Kp8 bytes each (a multiple of 32):  acc[i][j] = xu_i . w_j */
TBT_AVX2 static TBT_NOINLINE void tbt_i8_tile_avx2(const uint8_t *x0, const uint8_t *x1,
                                                   const int8_t *w, size_t ldw, int Kp8,
                                                   int32_t acc[2][4])
{
    const __m256i ones = _mm256_set1_epi16(1);
    const int nvec = Kp8 / 32;
    __m128i r[2] = {_mm_setzero_si128(), _mm_setzero_si128()};   /* int32 sums */
    /* a code is -1, 0 or 1, so |pair sum| <= 2 * 255 = 510 and 64 * 510 = 32640 <= 32767:
     * the int16 sums hold 64 vectors (K = 2048) */
    for (int v0 = 0; v0 < nvec; v0 += 64) {
        __m256i a[2][4];
        tbt_i8_chunk_avx2(x0, x1, w, ldw, v0, v0 + 64 < nvec ? v0 + 64 : nvec, a);
        /* int16 -> int32 (vpmaddwd by 1 adds pairs), then the 4 sums of a row at once */
        for (int i = 0; i < 2; i++)
            r[i] = _mm_add_epi32(r[i], tbt_hsum4_epi32_avx2(
                _mm256_madd_epi16(a[i][0], ones), _mm256_madd_epi16(a[i][1], ones),
                _mm256_madd_epi16(a[i][2], ones), _mm256_madd_epi16(a[i][3], ones)));
    }
    _mm_storeu_si128((__m128i *)acc[0], r[0]);
    _mm_storeu_si128((__m128i *)acc[1], r[1]);
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
