/*
 * minitbt/_quantize.h -- per-token signed min-max quantization of one row into int8 codes.
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

#endif /* MINITBT_QUANTIZE_H */
