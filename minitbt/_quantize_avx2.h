/*
 * minitbt/_quantize_avx2.h -- the AVX2 path of the fake quantization (included by _quantize.h).
 *
 * Eight values per step: the operations of tbt_fake_quant_one on a vector, each compare ordered
 * (false for NaN, as the scalar C and NumPy), each select a vblendvps; the tail runs the scalar
 * function, so every element gets the same bits whichever way it went.
 */
#ifndef MINITBT_QUANTIZE_AVX2_H
#define MINITBT_QUANTIZE_AVX2_H
#if TBT_X86_SIMD

/* sel(m, a, b): a where the mask m is set, b elsewhere */
#define TBT_SEL(m, a, b) _mm256_blendv_ps((b), (a), (m))

TBT_AVX2 static TBT_NOINLINE void tbt_fake_quant_avx2(const float *x, size_t n, float a, float lo, float qp,
                                                      int mode, float *qout, float *dqda, uint8_t *inside)
{
    const __m256 va = _mm256_set1_ps(a), vlo = _mm256_set1_ps(lo), vqp = _mm256_set1_ps(qp);
    const __m256 tie = _mm256_set1_ps(TBT_FQ_TIE), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 sgn = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps(), mone = _mm256_set1_ps(-1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 u = _mm256_div_ps(_mm256_loadu_ps(x + i), va);
        const __m256 au = _mm256_andnot_ps(sgn, u);
        __m256 q, d, in;
        if (mode == TBT_FQ_LEVELS) {
            const __m256 b = _mm256_add_ps(_mm256_round_ps(u, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), half);
            const __m256 c = _mm256_mul_ps(tie, _mm256_max_ps(au, vqp));   /* max_ps: vqp when au is NaN */
            const __m256 snap = _mm256_cmp_ps(_mm256_andnot_ps(sgn, _mm256_sub_ps(u, b)), c, _CMP_LT_OQ);
            const __m256 r = _mm256_round_ps(TBT_SEL(snap, b, u), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = TBT_SEL(_mm256_cmp_ps(r, vlo, _CMP_LT_OQ), vlo, TBT_SEL(_mm256_cmp_ps(r, vqp, _CMP_GT_OQ), vqp, r));
            in = _mm256_and_ps(_mm256_cmp_ps(u, vlo, _CMP_GT_OQ), _mm256_cmp_ps(u, vqp, _CMP_LT_OQ));
            d = TBT_SEL(in, _mm256_sub_ps(q, u), q);
        } else {
            if (mode == TBT_FQ_PLUS)
                q = TBT_SEL(_mm256_cmp_ps(u, _mm256_sub_ps(zero, tie), _CMP_GT_OQ), one, mone);
            else
                q = TBT_SEL(_mm256_cmp_ps(au, tie, _CMP_LT_OQ), zero,
                            TBT_SEL(_mm256_cmp_ps(u, tie, _CMP_GE_OQ), one, mone));
            in = _mm256_cmp_ps(au, one, _CMP_LT_OQ);
            d = q;
        }
        _mm256_storeu_ps(qout + i, q);
        _mm256_storeu_ps(dqda + i, d);
        /* the 8 masks -> 8 bytes 0/1: 32-bit 0/1, packed to 16 then 8 bits within each 128-bit lane */
        const __m256i m32 = _mm256_srli_epi32(_mm256_castps_si256(in), 31);
        const __m256i m8 = _mm256_packus_epi16(_mm256_packs_epi32(m32, m32), _mm256_setzero_si256());
        const uint32_t lo4 = (uint32_t)_mm256_extract_epi32(m8, 0), hi4 = (uint32_t)_mm256_extract_epi32(m8, 4);
        memcpy(inside + i, &lo4, 4);
        memcpy(inside + i + 4, &hi4, 4);
    }
    for (; i < n; i++) tbt_fake_quant_one(x[i], a, lo, qp, mode, qout + i, dqda + i, inside + i);
}
#undef TBT_SEL

#endif /* TBT_X86_SIMD */
#endif /* MINITBT_QUANTIZE_AVX2_H */
