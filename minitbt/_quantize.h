/*
 * minitbt/_quantize.h -- per-token signed min-max quantization of one row into int8 codes, and
 * the fake quantization of the training forward (tbt_fake_quant_f32, at the end).
 *
 * The C behind kernels.quantize_rows_i8 (minitbt._core) and the compiled decoder's 8-bit
 * activations (minitbt/_decoder.h): one definition for both. The equations are those of
 * minitbt.kernels.quantize.quantize_rows_i8_ref, operation for operation in float32:
 *
 *     X_c = clip(X, -c, c)         (no clip when c <= 0)
 *     a   = max(max_k |X_c| / Qp, tiny)
 *     u   = X_c / a;  b = floor(u) + 1/2;  u = b if |u - b| < tol   (a near-tie snapped onto it)
 *     code = rint(u)               (half to even; |u| <= Qp, so no clip is needed)
 */
#ifndef MINITBT_QUANTIZE_H
#define MINITBT_QUANTIZE_H

#include <math.h>
#include <stdint.h>

#include "_dispatch.h"

/* x (K,) -> codes (K,) int8; returns the scale a */
static inline float tbt_quantize_row_i8(const float *x, int K, float clip, float qp, float tol, float tiny,
                                        int8_t *codes)
{
    float mx = 0.0f;
    for (int k = 0; k < K; k++) {
        const float v = clip > 0 ? fminf(fmaxf(x[k], -clip), clip) : x[k];
        mx = fmaxf(mx, fabsf(v));
    }
    const float a = fmaxf(mx / qp, tiny);
    for (int k = 0; k < K; k++) {
        const float v = clip > 0 ? fminf(fmaxf(x[k], -clip), clip) : x[k];
        float u = v / a;
        const float b = floorf(u) + 0.5f;
        if (fabsf(u - b) < tol) u = b;
        codes[k] = (int8_t)rintf(u);
    }
    return a;
}

/*
 * Fake quantization with a learned scale (the training forward of quant.activation.ElasticQuantizer):
 * the equations of minitbt.kernels.quantize.fake_quantize_ref, operation for operation in float32.
 *
 *     u = x / a
 *     k levels:        c = 2^-15 max(Qp, |u|);  b = floor(u) + 1/2;  u' = b if |u - b| < c else u
 *                      q = clip(rint(u'), lo, Qp);  inside = lo < u < Qp;  dq/da = q - u inside, q outside
 *     signed binary:   q = +1 if u > -2^-15 else -1           (mode TBT_FQ_PLUS: sign(0) = +1)
 *                      q = 0 if |u| < 2^-15, else +1 if u >= 2^-15, else -1   (mode TBT_FQ_ZERO)
 *                      inside = |u| < 1;  dq/da = q
 *
 * It writes q (the codes, as floats), dq/da and inside (0/1); the caller forms q a (+ offset).
 * A NaN stays a NaN (every comparison with it is false, as in NumPy). AVX2 only (_quantize_avx2.h):
 * eight values per step, tbt_fake_quant_one for the tail; on the portable path the NumPy reference is
 * as fast as scalar C, so tbt_fake_quant_f32 returns -1 there and the caller runs the reference.
 */
enum { TBT_FQ_LEVELS = 0, TBT_FQ_PLUS = 1, TBT_FQ_ZERO = 2 };

#define TBT_FQ_TIE (1.0f / 32768.0f)                  /* TIE_ULPS * float32 eps = 2^-15 */

/* one element: the scalar form of the equations above */
static TBT_UNUSED void tbt_fake_quant_one(float x, float a, float lo, float qp, int mode,
                                          float *qout, float *dqda, uint8_t *inside)
{
    const float u = x / a;
    float q;
    int in;
    if (mode == TBT_FQ_LEVELS) {
        const float b = floorf(u) + 0.5f, au = fabsf(u);
        const float c = TBT_FQ_TIE * (au > qp ? au : qp);
        const float r = rintf(fabsf(u - b) < c ? b : u);
        q = r < lo ? lo : (r > qp ? qp : r);
        in = (u > lo) && (u < qp);
        *dqda = in ? q - u : q;
    } else {
        if (mode == TBT_FQ_PLUS) q = u > -TBT_FQ_TIE ? 1.0f : -1.0f;
        else q = fabsf(u) < TBT_FQ_TIE ? 0.0f : (u >= TBT_FQ_TIE ? 1.0f : -1.0f);
        in = fabsf(u) < 1.0f;
        *dqda = q;
    }
    *qout = q;
    *inside = (uint8_t)in;
}

#include "_quantize_avx2.h"

/* x (n,) -> qout (n,), dqda (n,), inside (n,) 0/1; lo, qp: the clip levels (k levels); mode: TBT_FQ_*.
 * Returns 0, or -1 (nothing written) where the kernel path has no SIMD. */
static TBT_UNUSED int tbt_fake_quant_f32(const float *x, size_t n, float a, float lo, float qp, int mode,
                                         float *qout, float *dqda, uint8_t *inside)
{
#if TBT_X86_SIMD
    if (tbt_kernel_path() >= TBT_PATH_AVX2) {
        tbt_fake_quant_avx2(x, n, a, lo, qp, mode, qout, dqda, inside);
        return 0;
    }
#endif
    (void)x; (void)n; (void)a; (void)lo; (void)qp; (void)mode; (void)qout; (void)dqda; (void)inside;
    return -1;
}

#endif /* MINITBT_QUANTIZE_H */
