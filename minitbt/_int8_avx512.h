/*
 * minitbt/_int8_avx512.h -- the AVX-512 path of ternary x int8 (included by _int8.h).
 * Needs AVX-512 F, BW, VL and VNNI.
 *
 * vpdpbusd (VNNI) multiplies 64 unsigned bytes by 64 signed bytes and adds each group of 4
 * products into an int32 lane of the accumulator, in one instruction:
 *     acc[i] += u[4i] s[4i] + u[4i+1] s[4i+1] + u[4i+2] s[4i+2] + u[4i+3] s[4i+3]
 * It does not saturate and the sums are int32 from the start: no int16 folding. (An int32
 * sum may wrap past 2^31 with the +128 offset; it wraps back when the offset is removed, and
 * the result itself fits in int32: kernels/_checks.py.)
 */
#ifndef MINITBT_INT8_AVX512_H
#define MINITBT_INT8_AVX512_H
#if TBT_X86_SIMD

/* the sum of the 16 int32 lanes of c plus the 8 of h */
TBT_AVX512 static TBT_ALWAYS_INLINE int32_t tbt_hsum_epi32_avx512(__m512i c, __m256i h)
{
    __m256i s = _mm256_add_epi32(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64(c, 1));
    return tbt_hsum_epi32_avx2(_mm256_add_epi32(s, h));
}

/* GEMM tile: as tbt_i8_tile_avx2, 64 bytes per step (a 32-byte step for Kp8 mod 64) */
TBT_AVX512 static TBT_NOINLINE void tbt_i8_tile_avx512(const uint8_t *x0, const uint8_t *x1,
                                                       const int8_t *w, size_t ldw, int Kp8,
                                                       int32_t acc[2][4])
{
    __m512i a0[4], a1[4];                        /* int32 sums of rows 0 and 1 */
    __m256i h0[4], h1[4];                        /* the same, from the 32-byte step */
    for (int j = 0; j < 4; j++) {
        a0[j] = a1[j] = _mm512_setzero_si512();
        h0[j] = h1[j] = _mm256_setzero_si256();
    }
    ptrdiff_t k = 0;
    for (; k + 64 <= Kp8; k += 64) {
        const __m512i xa = _mm512_loadu_si512((const void *)(x0 + k));
        const __m512i xb = _mm512_loadu_si512((const void *)(x1 + k));
        for (int j = 0; j < 4; j++) {
            const __m512i y = _mm512_loadu_si512((const void *)(w + j * ldw + k));
            a0[j] = _mm512_dpbusd_epi32(a0[j], xa, y);
            a1[j] = _mm512_dpbusd_epi32(a1[j], xb, y);
        }
    }
    if (k < Kp8) {                               /* Kp8 is a multiple of 32: one 32-byte step */
        const __m256i xa = _mm256_loadu_si256((const __m256i *)(x0 + k));
        const __m256i xb = _mm256_loadu_si256((const __m256i *)(x1 + k));
        for (int j = 0; j < 4; j++) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)(w + j * ldw + k));
            h0[j] = _mm256_dpbusd_epi32(h0[j], xa, y);
            h1[j] = _mm256_dpbusd_epi32(h1[j], xb, y);
        }
    }
    for (int j = 0; j < 4; j++) {
        acc[0][j] = tbt_hsum_epi32_avx512(a0[j], h0[j]);
        acc[1][j] = tbt_hsum_epi32_avx512(a1[j], h1[j]);
    }
}

/* x in the order of a pair of 2-bit weight blocks: for blocks 2P, 2P+1 and j = 0..3, 64
 * bytes = x[256P + 32j .. +32] then x[256P + 128 + 32j .. +32], i.e. the activations that
 * meet the codes at bits 2j of a 64-byte load of the two blocks. xp: Kp2 bytes (padded). */
static void tbt_i2_pair_order(const int8_t *xp, int Kp2, int8_t *xr)
{
    for (int P = 0; P < Kp2 / 256; P++)
        for (int j = 0; j < 4; j++) {
            memcpy(xr + 256 * P + 64 * j, xp + 256 * P + 32 * j, 32);
            memcpy(xr + 256 * P + 64 * j + 32, xp + 256 * P + 128 + 32 * j, 32);
        }
}

/* GEMV: as tbt_i2_rows_avx2, two blocks (256 codes) per 64-byte load and vpdpbusd of the
 * codes (unsigned, 0..2) by x (xr: in the order of a block pair); an odd last block as one
 * 32-byte step (xp: x in the order of K). */
TBT_AVX512 static TBT_NOINLINE void tbt_i2_rows_avx512(const int8_t *xp, const int8_t *xr,
                                                       const uint8_t *w_i2, size_t ldw, int nblk,
                                                       int g0, int g1, int N, int32_t xsum,
                                                       int32_t *out)
{
    const __m512i m3 = _mm512_set1_epi8(3);
    for (int g = g0; g < g1; g++) {
        const uint8_t *w0 = w_i2 + (size_t)8 * g * ldw;
        __m512i s[8];                                /* int32 sums of the 8 rows */
        __m256i h[8];                                /* the same, from the odd last block */
        for (int r = 0; r < 8; r++) {
            s[r] = _mm512_setzero_si512();
            h[r] = _mm256_setzero_si256();
        }
        for (ptrdiff_t P = 0; P < nblk / 2; P++) {
            const int8_t *xb = xr + 256 * P;
            const __m512i x0 = _mm512_loadu_si512((const void *)xb);
            const __m512i x1 = _mm512_loadu_si512((const void *)(xb + 64));
            const __m512i x2 = _mm512_loadu_si512((const void *)(xb + 128));
            const __m512i x3 = _mm512_loadu_si512((const void *)(xb + 192));
            for (int r = 0; r < 8; r++) {
                const __m512i p = _mm512_loadu_si512((const void *)(w0 + r * ldw + 64 * P));
                s[r] = _mm512_dpbusd_epi32(s[r], _mm512_and_si512(p, m3), x0);
                s[r] = _mm512_dpbusd_epi32(s[r], _mm512_and_si512(_mm512_srli_epi16(p, 2), m3), x1);
                s[r] = _mm512_dpbusd_epi32(s[r], _mm512_and_si512(_mm512_srli_epi16(p, 4), m3), x2);
                s[r] = _mm512_dpbusd_epi32(s[r], _mm512_and_si512(_mm512_srli_epi16(p, 6), m3), x3);
            }
        }
        if (nblk % 2) {
            const ptrdiff_t b = nblk - 1;
            const __m256i n3 = _mm256_set1_epi8(3);
            const int8_t *xb = xp + 128 * b;
            for (int r = 0; r < 8; r++) {
                const __m256i p = _mm256_loadu_si256((const __m256i *)(w0 + r * ldw + 32 * b));
                for (int j = 0; j < 4; j++) {
                    const __m256i c = _mm256_and_si256(_mm256_srli_epi16(p, 2 * j), n3);
                    h[r] = _mm256_dpbusd_epi32(h[r], c,
                                               _mm256_loadu_si256((const __m256i *)(xb + 32 * j)));
                }
            }
        }
        for (int r = 0; r < 8 && 8 * g + r < N; r++)
            out[8 * g + r] = tbt_hsum_epi32_avx512(s[r], h[r]) - xsum;
    }
}

#endif /* TBT_X86_SIMD */
#endif /* MINITBT_INT8_AVX512_H */
