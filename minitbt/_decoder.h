/*
 * minitbt/_decoder.h -- a packed encoder-decoder Transformer, whole, in C.
 *
 * The same model as minitbt/nn/transformer.py (read that first), run on the bit kernels of
 * minitbt/_bitops.h, one source sentence at a time, on one thread. The equations below are
 * the ones of the Python forward, in the same order; the shapes are in the comments
 * (M rows = tokens of the source in the encoder, live beams in a decoder step; d = d_model,
 * H heads of dh = d / H, V = vocabulary, S = source length, T = tokens decoded so far).
 *
 *   encoder:  x = LN(E[src] * sqrt(d) + P[0..S))                              (post-LN)
 *             x = LN(x + Attn(x, x)),  x = LN(x + FFN(x))        per layer
 *   decoder:  h = LN(E[y_t] * sqrt(d) + P[t])
 *             h = LN(h + SelfAttn(h, cache)),  h = LN(h + Attn(h, memory)),  h = LN(h + FFN(h))
 *   logits:   z = h E^T                (the tied embedding, full precision)
 *   copy:     log p = log[g softmax(z) + (1 - g) sum_{s: x_s = w} a_s],  g = sigmoid(h w_g + b_g)
 *             (a pointer-generator, See et al. 2017: a = the last cross-attention, mean over heads)
 *   pre-LN:   x = x + sublayer(LN(x)), no embedding LN, a final LN on each stack.
 *
 * A quantized linear layer (section 3) is  y = x_q W_q^T + b  with  x_q = s_x c_x + o_x per
 * token (an activation quantizer, section 2) and  W_q = s_w c_w + o_w  per row. Only the
 * integer inner products c_x . c_w run on a bit kernel (which one: the kernel table,
 * minitbt/packed/table.py, chosen when the model was packed):
 *
 *   y = s_x s_w (c_x . c_w) + s_x o_w sum(c_x) + o_x s_w sum(c_w) + o_x o_w K + b
 *
 * Attention (section 4) quantizes Q (after the 1/sqrt(dh) scale), K and V per token and head,
 * and the probabilities per query row, and keeps scores and softmax in float32, as
 * MultiHeadAttention._attend_op_by_op does. The cache keeps each token's quantized K and V.
 *
 * Python builds the structs below from a packed minitbt model (minitbt/packed/compiled.py)
 * and keeps every array alive; nothing here allocates weights. Functions return 0, or -1
 * when a work buffer could not be allocated.
 */
#ifndef MINITBT_DECODER_H
#define MINITBT_DECODER_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "_bitops.h"
#include "_quantize.h"

/* Where the time goes (minitbt.packed.speed.step_profile): with tbt_profiling on, each region
 * ends with tbt_mark(part), which adds the time since the previous mark to that part. */
enum { TBT_T_QUANT, TBT_T_KERNEL, TBT_T_RESCALE, TBT_T_ATTN, TBT_T_NORM, TBT_T_HEAD, TBT_T_OTHER, TBT_T_N };
static const char *const tbt_part_names[TBT_T_N] = {
    "activation codes (quantizers of the linear inputs)", "linear layers: bit kernels / float matmuls",
    "linear layers: rescale and bias", "attention: scores, softmax, P V, Q/K/V/P quantizers",
    "embedding, LayerNorm, residuals", "LM head (float, tied embedding)", "FFN activation, search"};
static int tbt_profiling = 0;
static double tbt_prof[TBT_T_N], tbt_prof_last;

static double tbt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void tbt_mark(int part)
{
    if (!tbt_profiling) return;
    const double t = tbt_now();
    tbt_prof[part] += t - tbt_prof_last;
    tbt_prof_last = t;
}

static TBT_UNUSED void tbt_profile(int on)        /* on: start (times reset), off: stop */
{
    tbt_profiling = on;
    if (on) { memset(tbt_prof, 0, sizeof(tbt_prof)); tbt_prof_last = tbt_now(); }
}

/* =========================================================================================
 * 1. The model, as Python hands it over
 * ========================================================================================= */

enum { TBT_Q_NONE = 0, TBT_Q_ELASTIC = 1, TBT_Q_BIT = 2, TBT_Q_MINMAX = 3 };

/* An activation quantizer (minitbt/quant/activation.py): x (n,) -> codes c, scale a, offset o. */
typedef struct {
    int kind;            /* TBT_Q_*: ElasticQuantizer, BiTElasticBinary, MinMaxQuantizer (per token) */
    int is_signed;       /* signed codes [-qp, qp] (1 bit: {-1, +1}); unsigned [0, qp] */
    int bits, qp;        /* precision and the largest code */
    int centre;          /* elastic, signed: x' = x - mean(x) */
    int shift_min;       /* elastic, unsigned: x' = x - min(x), o = min(x) */
    float a, b;          /* elastic: the learned scale a (clamped to >= 1e-5); BiT: a and offset b */
    float clip;          /* min-max: clip to [-clip, clip] first (<= 0: no clip) */
} tbt_quant;

typedef struct { const float *g, *b; float eps; } tbt_norm;     /* g == NULL: no LayerNorm here */

enum { TBT_K_FLOAT = 0, TBT_K_SIGNADD = 1, TBT_K_INT8 = 2, TBT_K_POPC = 3 };
enum { TBT_A_SIGNS = 0, TBT_A_TERNARY = 1, TBT_A_PLANES = 2 };   /* how c_x becomes bit planes */

/* A linear layer y = x_q W_q^T + b, x (M, K) -> y (M, N), on one kernel. */
typedef struct {
    int K, N, kernel;              /* TBT_K_*                                                   */
    tbt_norm in_norm;              /* SubLN: x <- LN(x) first (g == NULL: none)                 */
    tbt_quant in;                  /* the input quantizer (kind NONE: float input)              */
    const float *w;                /* FLOAT: (N, K) dequantized weights                         */
    const uint8_t *sa_idx;         /* SIGNADD: look-up indices (kernels.prepare_signadd)        */
    const uint8_t *w_i2; int Kp2;  /* INT8: 2-bit weights for M <= 2 (kernels.prepare_ternary_int8) */
    const int8_t *w_i8; int Kp8;   /* INT8: int8 weights for M > 2                              */
    const int32_t *w_sum;          /* INT8: sum of each row's codes                             */
    const uint64_t *wb; int pb;    /* POPC: weight planes (pb, N, W)                            */
    int op, act, pa;               /* POPC: and/xor, TBT_A_*, activation planes                 */
    const int32_t *coef;           /* POPC: (pa, pb) coefficients                               */
    const int32_t *row_coef;       /* POPC, bit planes x signs: row_bias = sum_j row_coef[j] popc(a_j) */
    int32_t bias_k;                /* POPC: a constant added to every output (xnor: K)          */
    const float *w_scale, *w_offset, *codes_sum;   /* (N,) each: s_w, o_w, sum_k c_w            */
    int has_offset;                /* any o_w != 0                                              */
    const float *bias;             /* (N,) or NULL                                              */
} tbt_linear;

typedef struct {
    tbt_linear q, k, v, o;
    tbt_quant qq, kq, vq, pq;      /* the four attention quantizers (kind NONE: full precision) */
} tbt_attn;

enum { TBT_RELU = 0, TBT_GELU = 1, TBT_GELU_TANH = 2 };

typedef struct {
    tbt_attn self_attn;  tbt_norm self_norm;
    tbt_attn cross_attn; tbt_norm cross_norm;    /* decoder layers only */
    tbt_linear fc1, fc2; tbt_norm ffn_norm;
} tbt_layer;

typedef struct {
    int d, H, V, max_len, n_enc, n_dec, pre_ln, act, d_ff_max;
    int pad, bos, eos;
    const int8_t *emb_codes;       /* (V, d) codes with a scale and offset per row, or NULL:    */
    const float *emb_scale, *emb_offset;
    const float *emb_float;        /* (V, d) float rows (an embedding that is not quantized)    */
    float emb_mul;                 /* sqrt(d)                                                   */
    const float *pos;              /* (max_len, d) learned or sinusoidal positions              */
    tbt_norm enc_emb_norm, dec_emb_norm, enc_final, dec_final;
    const float *head_w, *head_b;  /* (V, d) LM head (the tied embedding), (V,) or NULL         */
    const float *copy_w;           /* (d,) the copy gate's weights, or NULL: no copy output     */
    float copy_b;                  /* the copy gate's bias                                      */
    tbt_layer *enc, *dec;
} tbt_model;

/* =========================================================================================
 * 2. Activation quantizers: codes, scale and offset of one row (one token, or one head of it)
 * =========================================================================================
 * The rounding of minitbt/quant/base.py: a value within 256 ulps of a half-integer is snapped
 * onto it before rounding half to even, so last-bit noise cannot flip a code at a tie.
 */
#define TBT_TIE_ULPS 256.0f

static inline float tbt_round_ties(float u, float span)
{
    const float b = floorf(u) + 0.5f;
    const float tol = TBT_TIE_ULPS * FLT_EPSILON * fmaxf(span, fabsf(u));
    return rintf(fabsf(u - b) < tol ? b : u);
}

static inline int tbt_sign_ties(float u)      /* sign(u), +1 at 0 and inside the tie window */
{
    const float tol = TBT_TIE_ULPS * FLT_EPSILON * fmaxf(fabsf(u), 1.0f);
    return (u >= 0 || fabsf(u) < tol) ? 1 : -1;
}

static inline float tbt_clampf(float v, float lo, float hi) { return fminf(fmaxf(v, lo), hi); }

/* x (n,) -> c (n,), *a, *o with x_q = a c + o   (c8: n bytes of work memory) */
static void tbt_quant_row(const tbt_quant *q, const float *x, int n, int32_t *c, int8_t *c8, float *a, float *o)
{
    const int lo = q->is_signed ? -q->qp : 0;
    *o = 0.0f;
    if (q->kind == TBT_Q_ELASTIC) {
        /* TBT: c = round(clip(x' / a, lo, Qp)), signed 1 bit: c = sign(x' / a) */
        float shift = 0.0f;
        if (q->centre || q->shift_min) {
            double s = 0.0;
            float mn = x[0];
            for (int i = 0; i < n; i++) { s += x[i]; mn = fminf(mn, x[i]); }
            shift = q->centre ? (float)(s / n) : mn;
            if (q->shift_min) *o = mn;
        }
        *a = q->a;
        for (int i = 0; i < n; i++) {
            const float u = (x[i] - shift) / q->a;
            c[i] = (q->is_signed && q->bits == 1) ? tbt_sign_ties(u)
                 : (int32_t)tbt_clampf(tbt_round_ties(u, (float)q->qp), (float)lo, (float)q->qp);
        }
    } else if (q->kind == TBT_Q_BIT) {
        /* BiT: u = (x - b) / a;  c = sign(u) (signed), round(clip(u, 0, 1)) (non-negative) */
        *a = q->a;
        for (int i = 0; i < n; i++) {
            const float u = (x[i] - q->b) / q->a;
            c[i] = q->is_signed ? tbt_sign_ties(u) : (int32_t)tbt_clampf(tbt_round_ties(u, 1.0f), 0.0f, 1.0f);
        }
    } else if (q->is_signed && q->bits >= 2 && q->qp <= 127) {
        /* min-max per token, signed k bits (SymmetricA8, PerTokenAbsMax): minitbt/_quantize.h, the
         * C of kernels.quantize_rows_i8 (window 256 ulps of Qp >= |u|); a zero row gets a = 1 */
        *a = tbt_quantize_row_i8(x, n, q->clip, (float)q->qp, TBT_TIE_ULPS * FLT_EPSILON * (float)q->qp,
                                 FLT_TRUE_MIN, c8);
        int any = 0;
        for (int i = 0; i < n; i++) { c[i] = c8[i]; any |= c8[i]; }
        if (*a == FLT_TRUE_MIN && !any) *a = 1.0f;
    } else {
        /* min-max per token: x_c = clip(x, -clip, clip);  a = max|x_c| / Qp (unsigned: max x_c / Qp),
         * c = round(x_c / a);  signed 1 bit: a = mean|x_c|, c = sign(x_c / a);  a = 1 for a zero row */
        float m = 0.0f;
        double s = 0.0;
        for (int i = 0; i < n; i++) {
            const float v = q->clip > 0 ? tbt_clampf(x[i], -q->clip, q->clip) : x[i];
            if (q->is_signed && q->bits == 1) s += fabsf(v);
            else m = i == 0 && !q->is_signed ? v : fmaxf(m, q->is_signed ? fabsf(v) : v);
        }
        if (q->is_signed && q->bits == 1) {
            const float mean = (float)(s / n);
            *a = mean > 0 ? mean : 1.0f;
        } else {
            *a = m > 0 ? m / (float)q->qp : 1.0f;
        }
        for (int i = 0; i < n; i++) {
            const float v = q->clip > 0 ? tbt_clampf(x[i], -q->clip, q->clip) : x[i];
            const float u = v / *a;
            c[i] = (q->is_signed && q->bits == 1) ? tbt_sign_ties(u)
                 : (int32_t)tbt_clampf(tbt_round_ties(u, (float)q->qp), (float)lo, (float)q->qp);
        }
    }
}

/* x (n,) <- a c + o: the fake-quantized row (the attention states) */
static void tbt_fake_quant_row(const tbt_quant *q, float *x, int n, int32_t *c, int8_t *c8)
{
    float a, o;
    if (q->kind == TBT_Q_NONE) return;
    tbt_quant_row(q, x, n, c, c8, &a, &o);
    for (int i = 0; i < n; i++) x[i] = (float)c[i] * a + o;
}

/* =========================================================================================
 * 3. Linear layers: quantize the input, one kernel call, rescale
 * ========================================================================================= */

/* Work memory of one forward, sized for the largest layer (tbt_scratch_new). */
typedef struct {
    int32_t *codes;      /* (M, K) activation codes      */
    int8_t *codes_i8;    /* (M, K) the same as int8      */
    uint64_t *planes;    /* (8, M, W) activation planes  */
    int32_t *dot;        /* (M, N) integer inner products */
    int32_t *row_bias;   /* (M,)                         */
    float *xn;           /* (M, K) SubLN: the normalised input */
    float *sx, *ox;      /* (M,) scale and offset of each row's codes */
} tbt_scratch;

/* dense float32 y (M, N) = x (M, K) W^T (N, K), the float layers and the LM head.
 * Each dot product keeps 8 partial sums, s_j = sum_i x[8i + j] w[8i + j], adds them as
 * ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)), then the tail: the AVX2 form below holds
 * the 8 sums in one register and so gives the same bits. */
static void tbt_matmul_f32_scalar(const float *x, int M, int K, const float *w, int N, float *y)
{
    for (int m = 0; m < M; m++) {
        const float *xm = x + (size_t)m * K;
        for (int n = 0; n < N; n++) {
            const float *wn = w + (size_t)n * K;
            float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int k = 0;
            for (; k + 8 <= K; k += 8)
                for (int j = 0; j < 8; j++) acc[j] += xm[k + j] * wn[k + j];
            float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (; k < K; k++) s += xm[k] * wn[k];
            y[(size_t)m * N + n] = s;
        }
    }
}

#if TBT_X86_SIMD
static TBT_AVX2 float tbt_sum8_avx2(__m256 v)          /* ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)) */
{
    float a[8];
    _mm256_storeu_ps(a, v);
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* four weight rows at a time share each load of x */
static TBT_AVX2 void tbt_matmul_f32_avx2(const float *x, int M, int K, const float *w, int N, float *y)
{
    const int K8 = K / 8 * 8;
    for (int m = 0; m < M; m++) {
        const float *xm = x + (size_t)m * K;
        int n = 0;
        for (; n + 4 <= N; n += 4) {
            const float *w0 = w + (size_t)n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (ptrdiff_t k = 0; k < K8; k += 8) {
                const __m256 xv = _mm256_loadu_ps(xm + k);
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(xv, _mm256_loadu_ps(w0 + k)));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(xv, _mm256_loadu_ps(w1 + k)));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(xv, _mm256_loadu_ps(w2 + k)));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(xv, _mm256_loadu_ps(w3 + k)));
            }
            float s[4] = {tbt_sum8_avx2(a0), tbt_sum8_avx2(a1), tbt_sum8_avx2(a2), tbt_sum8_avx2(a3)};
            for (int k = K8; k < K; k++) {
                s[0] += xm[k] * w0[k]; s[1] += xm[k] * w1[k]; s[2] += xm[k] * w2[k]; s[3] += xm[k] * w3[k];
            }
            for (int j = 0; j < 4; j++) y[(size_t)m * N + n + j] = s[j];
        }
        if (n < N) tbt_matmul_f32_scalar(xm, 1, K, w + (size_t)n * K, N - n, y + (size_t)m * N + n);
    }
}
#endif

static void tbt_matmul_f32(const float *x, int M, int K, const float *w, int N, float *y)
{
#if TBT_X86_SIMD
    if (tbt_kernel_path() >= TBT_PATH_AVX2) { tbt_matmul_f32_avx2(x, M, K, w, N, y); return; }
#endif
    tbt_matmul_f32_scalar(x, M, K, w, N, y);
}

/* c (M, K) -> bit planes (pa, M, W): sign bits (c < 0), ternary [c > 0, c < 0], or bit j of c */
static void tbt_pack_codes(const int32_t *c, int M, int K, int act, int pa, uint64_t *planes)
{
    const int W = (K + 63) / 64;
    memset(planes, 0, (size_t)pa * M * W * sizeof(uint64_t));
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) {
            const int32_t v = c[(size_t)m * K + k];
            const uint64_t bit = (uint64_t)1 << (k % 64);
            const size_t at = (size_t)m * W + k / 64, plane = (size_t)M * W;
            if (act == TBT_A_SIGNS) { if (v < 0) planes[at] |= bit; }
            else if (act == TBT_A_TERNARY) {
                if (v > 0) planes[at] |= bit;
                if (v < 0) planes[plane + at] |= bit;
            } else {
                for (int j = 0; j < pa; j++) if ((v >> j) & 1) planes[j * plane + at] |= bit;
            }
        }
}

static void tbt_layer_norm(const tbt_norm *nm, float *x, int M, int d);

/* y (M, N) = x_q (M, K) W_q^T + b   (SubLN: x_q = q(LN(x))) */
static int tbt_linear_forward(const tbt_linear *L, const float *x, int M, float *y, tbt_scratch *s)
{
    const int K = L->K, N = L->N;
    if (L->in_norm.g) {
        memcpy(s->xn, x, (size_t)M * K * sizeof(float));
        tbt_layer_norm(&L->in_norm, s->xn, M, K);
        x = s->xn;
    }
    if (L->kernel == TBT_K_FLOAT || L->kernel == TBT_K_SIGNADD) {
        const float *xin = x;
        if (L->in.kind != TBT_Q_NONE) {              /* x_q = a c + o, then a float matmul */
            float *xq = (float *)s->planes;          /* big enough: 8 M W words >= M K floats */
            memcpy(xq, x, (size_t)M * K * sizeof(float));
            for (int m = 0; m < M; m++) tbt_fake_quant_row(&L->in, xq + (size_t)m * K, K, s->codes, s->codes_i8);
            xin = xq;
        }
        tbt_mark(TBT_T_QUANT);
        if (L->kernel == TBT_K_FLOAT) {
            tbt_matmul_f32(xin, M, K, L->w, N, y);
            tbt_mark(TBT_T_KERNEL);
        } else {
            /* sign-add: y = s_w (x . c_w) + o_w sum(x), the dot by look-ups and additions only */
            if (tbt_signadd_f32(xin, M, K, L->sa_idx, N, y, 1) != 0) return -1;
            tbt_mark(TBT_T_KERNEL);
            for (int m = 0; m < M; m++) {
                double sum = 0;
                for (int k = 0; k < K; k++) sum += xin[(size_t)m * K + k];
                for (int n = 0; n < N; n++)
                    y[(size_t)m * N + n] = y[(size_t)m * N + n] * L->w_scale[n] + (float)sum * L->w_offset[n];
            }
        }
    } else {
        /* c_x, s_x, o_x per row (the input quantizer's codes()) */
        for (int m = 0; m < M; m++)
            tbt_quant_row(&L->in, x + (size_t)m * K, K, s->codes + (size_t)m * K, s->codes_i8 + (size_t)m * K,
                          &s->sx[m], &s->ox[m]);
        tbt_mark(TBT_T_QUANT);
        if (L->kernel == TBT_K_INT8) {
            /* dot[m][n] = sum_k c_x[m][k] c_w[n][k], c_w in {-1, 0, 1}: +c_x, 0 or -c_x per term */
            for (size_t i = 0; i < (size_t)M * K; i++) s->codes_i8[i] = (int8_t)s->codes[i];
            for (int m = 0; m < M && M <= 2; m++)
                if (tbt_gemv_ternary_i2(s->codes_i8 + (size_t)m * K, K, L->w_i2, L->Kp2, N,
                                        s->dot + (size_t)m * N, 1) != 0) return -1;
            if (M > 2 && tbt_gemm_ternary_i8(s->codes_i8, M, K, L->w_i8, L->Kp8, L->w_sum, N, s->dot, 1) != 0)
                return -1;
        } else {
            /* dot[m][n] = bias_k + row_bias[m] + sum_{p,q} coef[p][q] popc(op(A[p][m], B[q][n])) */
            const int W = (K + 63) / 64;
            tbt_pack_codes(s->codes, M, K, L->act, L->pa, s->planes);
            if (L->row_coef) tbt_row_popc(s->planes, L->pa, M, W, L->row_coef, s->row_bias);
            if (tbt_popc_gemm(s->planes, L->wb, M, N, W, L->op, L->pa, L->pb, L->coef,
                              L->row_coef ? s->row_bias : NULL, L->bias_k, s->dot, 1) != 0) return -1;
        }
        tbt_mark(TBT_T_KERNEL);
        /* y = s_x s_w dot + s_x o_w sum(c_x) + o_x s_w sum(c_w) + o_x o_w K */
        for (int m = 0; m < M; m++) {
            const float sx = s->sx[m], ox = s->ox[m];
            const int32_t *dm = s->dot + (size_t)m * N;
            float *ym = y + (size_t)m * N;
            if (!L->has_offset && ox == 0.0f) {
                for (int n = 0; n < N; n++) ym[n] = (float)dm[n] * (sx * L->w_scale[n]);
            } else {
                int64_t cs = 0;
                for (int k = 0; k < K; k++) cs += s->codes[(size_t)m * K + k];
                const float csum = (float)cs;
                for (int n = 0; n < N; n++)
                    ym[n] = (sx * L->w_scale[n]) * (float)dm[n] + (sx * csum) * L->w_offset[n]
                          + ox * (L->w_scale[n] * L->codes_sum[n]) + ox * L->w_offset[n] * (float)K;
            }
        }
    }
    if (L->bias)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) y[(size_t)m * N + n] += L->bias[n];
    tbt_mark(TBT_T_RESCALE);
    return 0;
}

/* =========================================================================================
 * 4. LayerNorm, attention, feed-forward
 * ========================================================================================= */

/* y = (x - mean) / sqrt(var + eps) * g + b over the last axis, in place, M rows of d */
static void tbt_layer_norm(const tbt_norm *nm, float *x, int M, int d)
{
    for (int m = 0; m < M; m++) {
        float *r = x + (size_t)m * d;
        double s = 0, v = 0;
        for (int i = 0; i < d; i++) s += r[i];
        const float mu = (float)(s / d);
        for (int i = 0; i < d; i++) { r[i] -= mu; v += (double)r[i] * r[i]; }
        const float rstd = 1.0f / sqrtf((float)(v / d) + nm->eps);
        for (int i = 0; i < d; i++) r[i] = (r[i] * rstd) * nm->g[i] + nm->b[i];
    }
}

/* Work memory of attention and the FFN. */
typedef struct {
    float *q, *k, *v, *o;    /* (M, d), (S or T, d) ... */
    float *p;                /* (max_len) one row of probabilities */
    float *h;                /* (M, d_ff) FFN hidden */
    int32_t *c;              /* (max(d, max_len)) codes of one fake-quantized row */
    int8_t *c8;              /* the same as int8 (work memory of the 8-bit quantizer) */
} tbt_work;

/*
 * One query row against Tk keys, all heads:  (M = 1 row of q, k/v (Tk, d), quantized already)
 *   s_j = q_h . k_{j,h}            (q already scaled by 1/sqrt(dh) and quantized)
 *   p = q_p(softmax(s)),  o_h = sum_j p_j v_{j,h}
 */
/* keep (Tk,) or NULL: the probabilities before their quantizer, averaged over the heads (copy) */
static void tbt_attend_row(const tbt_attn *A, int H, int dh, const float *q, const float *k,
                           const float *v, int Tk, float *o, tbt_work *w, float *keep)
{
    const int d = H * dh;
    for (int h = 0; h < H; h++) {
        const float *qh = q + h * dh;
        float mx = -FLT_MAX, *p = w->p;
        for (int j = 0; j < Tk; j++) {
            const float *kj = k + (size_t)j * d + h * dh;
            float s = 0;
            for (int i = 0; i < dh; i++) s += qh[i] * kj[i];
            p[j] = s;
            mx = fmaxf(mx, s);
        }
        double sum = 0;
        for (int j = 0; j < Tk; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
        const float inv = (float)sum;
        for (int j = 0; j < Tk; j++) p[j] /= inv;
        if (keep)
            for (int j = 0; j < Tk; j++) keep[j] = (h ? keep[j] : 0.0f) + p[j];
        tbt_fake_quant_row(&A->pq, p, Tk, w->c, w->c8);
        float *oh = o + h * dh;
        for (int i = 0; i < dh; i++) oh[i] = 0;
        for (int j = 0; j < Tk; j++) {
            const float *vj = v + (size_t)j * d + h * dh;
            for (int i = 0; i < dh; i++) oh[i] += p[j] * vj[i];
        }
    }
    if (keep)
        for (int j = 0; j < Tk; j++) keep[j] /= (float)H;
    tbt_mark(TBT_T_ATTN);
}

/* Q of M rows: x W_q^T + b, scaled by 1/sqrt(dh), each head quantized */
static int tbt_queries(const tbt_attn *A, const float *x, int M, int H, int dh, float *q, tbt_scratch *s,
                       tbt_work *w)
{
    const float scale = (float)(1.0 / sqrt((double)dh));
    if (tbt_linear_forward(&A->q, x, M, q, s) != 0) return -1;
    for (int i = 0; i < M * H; i++) {
        for (int j = 0; j < dh; j++) q[(size_t)i * dh + j] *= scale;
        tbt_fake_quant_row(&A->qq, q + (size_t)i * dh, dh, w->c, w->c8);
    }
    tbt_mark(TBT_T_ATTN);
    return 0;
}

/* K and V of M rows of m, each head quantized: what a cache keeps */
static int tbt_keys_values(const tbt_attn *A, const float *m, int M, int H, int dh, float *k, float *v,
                           tbt_scratch *s, tbt_work *w)
{
    if (tbt_linear_forward(&A->k, m, M, k, s) != 0 || tbt_linear_forward(&A->v, m, M, v, s) != 0) return -1;
    for (int i = 0; i < M * H; i++) {
        tbt_fake_quant_row(&A->kq, k + (size_t)i * dh, dh, w->c, w->c8);
        tbt_fake_quant_row(&A->vq, v + (size_t)i * dh, dh, w->c, w->c8);
    }
    tbt_mark(TBT_T_ATTN);
    return 0;
}

/* y (M, d) = FFN(x) = fc2(act(fc1(x))) */
static int tbt_ffn(const tbt_layer *L, int act, const float *x, int M, float *y, tbt_scratch *s, tbt_work *w)
{
    const int F = L->fc1.N;
    if (tbt_linear_forward(&L->fc1, x, M, w->h, s) != 0) return -1;
    for (size_t i = 0; i < (size_t)M * F; i++) {
        const float z = w->h[i];
        if (act == TBT_RELU) w->h[i] = z > 0 ? z : 0.0f;
        else if (act == TBT_GELU) w->h[i] = 0.5f * z * (1.0f + erff(z * 0.70710678118654752f));
        else w->h[i] = 0.5f * z * (1.0f + tanhf(0.7978845608028654f * (z + 0.044715f * z * z * z)));
    }
    tbt_mark(TBT_T_OTHER);
    return tbt_linear_forward(&L->fc2, w->h, M, y, s);
}

/* x <- LN(x + f) (post-LN) or x + f (pre-LN, where f was computed on LN(x)) */
static void tbt_residual(const tbt_model *mdl, const tbt_norm *nm, float *x, const float *f, int M)
{
    for (size_t i = 0; i < (size_t)M * mdl->d; i++) x[i] += f[i];
    if (!mdl->pre_ln) tbt_layer_norm(nm, x, M, mdl->d);
    tbt_mark(TBT_T_NORM);
}

/* the sublayer's input: x itself (post-LN) or LN(x) in a copy (pre-LN) */
static const float *tbt_sub_in(const tbt_model *mdl, const tbt_norm *nm, const float *x, int M, float *buf)
{
    if (!mdl->pre_ln) return x;
    memcpy(buf, x, (size_t)M * mdl->d * sizeof(float));
    tbt_layer_norm(nm, buf, M, mdl->d);
    tbt_mark(TBT_T_NORM);
    return buf;
}

/* =========================================================================================
 * 5. Encoder, decoder step, greedy and beam search
 * ========================================================================================= */

/* Everything one source needs while it is decoded. */
typedef struct {
    int S, R, T;            /* source length, beam rows allocated, longest target      */
    float *memory;          /* (S, d) encoder output                                   */
    float *ck, *cv;         /* (n_dec, S, d) cross-attention K, V (quantized), shared  */
    float *sk, *sv;         /* (n_dec, R, T, d) self-attention cache (quantized)       */
    float *x, *t1, *t2;     /* (max(S, R), d) activations and two buffers              */
    float *logits;          /* (R, V)                                                  */
    float *copy_a;          /* (R, S) copy: the last cross-attention, mean over heads  */
    const int32_t *src;     /* (S,) the source ids (copy: where the copied mass lands) */
    float *reorder;         /* (R, T, d) beam search: the cache rows being reordered   */
    tbt_scratch s;
    tbt_work w;
    void *block;            /* one allocation holds everything above                  */
} tbt_state;

static void tbt_state_free(tbt_state *st) { free(st->block); memset(st, 0, sizeof(*st)); }

static int tbt_state_new(const tbt_model *mdl, int S, int R, int T, tbt_state *st)
{
    const int d = mdl->d, Mx = S > R ? S : R;
    const int Kmax = d > mdl->d_ff_max ? d : mdl->d_ff_max, Nmax = Kmax > mdl->V ? Kmax : mdl->V;
    const int Wmax = (Kmax + 63) / 64, Lmax = (S > T ? S : T) + 1;
    size_t sizes[] = {
        (size_t)S * d, (size_t)mdl->n_dec * S * d, (size_t)mdl->n_dec * S * d,
        (size_t)mdl->n_dec * R * T * d, (size_t)mdl->n_dec * R * T * d,
        (size_t)Mx * d, (size_t)Mx * d, (size_t)Mx * d, (size_t)R * mdl->V,
        /* scratch: codes, codes_i8 (bytes, rounded up), planes (8-byte words), dot, row_bias, sx, ox */
        (size_t)Mx * Kmax, ((size_t)Mx * Kmax + 3) / 4, (size_t)2 * 8 * Mx * Wmax + (size_t)Mx * Kmax,
        (size_t)Mx * Nmax, (size_t)Mx, (size_t)Mx, (size_t)Mx,
        /* work: q, k, v, o, p, h, c */
        (size_t)Mx * d, (size_t)Mx * d, (size_t)Mx * d, (size_t)Mx * d, (size_t)Lmax,
        (size_t)Mx * mdl->d_ff_max, (size_t)(Lmax > Kmax ? Lmax : Kmax),
        /* beam search's reorder buffer, SubLN's normalised input, w.c8 */
        (size_t)R * T * d, (size_t)Mx * Kmax, (size_t)((Lmax > Kmax ? Lmax : Kmax) + 3) / 4,
        /* the copy distribution */
        (size_t)R * S,
    };
    const int n = (int)(sizeof(sizes) / sizeof(sizes[0]));
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (sizes[i] + 15) / 16 * 16 * 4;   /* 4-byte units, 64-byte aligned */
    char *p = (char *)calloc(1, total + 64);
    if (!p) return -1;
    memset(st, 0, sizeof(*st));
    st->block = p;
    char *at = (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
    void *ptr[32];
    for (int i = 0; i < n; i++) { ptr[i] = at; at += (sizes[i] + 15) / 16 * 16 * 4; }
    st->S = S; st->R = R; st->T = T;
    st->memory = ptr[0]; st->ck = ptr[1]; st->cv = ptr[2]; st->sk = ptr[3]; st->sv = ptr[4];
    st->x = ptr[5]; st->t1 = ptr[6]; st->t2 = ptr[7]; st->logits = ptr[8];
    st->s.codes = ptr[9]; st->s.codes_i8 = ptr[10]; st->s.planes = ptr[11]; st->s.dot = ptr[12];
    st->s.row_bias = ptr[13]; st->s.sx = ptr[14]; st->s.ox = ptr[15];
    st->w.q = ptr[16]; st->w.k = ptr[17]; st->w.v = ptr[18]; st->w.o = ptr[19]; st->w.p = ptr[20];
    st->w.h = ptr[21]; st->w.c = ptr[22]; st->reorder = ptr[23]; st->s.xn = ptr[24]; st->w.c8 = ptr[25];
    st->copy_a = ptr[26];
    return 0;
}

/* x (M, d) = E[ids] * sqrt(d) + P[pos0 + i]   (then the embedding LN in post-LN) */
static void tbt_embed(const tbt_model *mdl, const int32_t *ids, int M, int pos0, int same_pos,
                      const tbt_norm *nm, float *x)
{
    const int d = mdl->d;
    for (int m = 0; m < M; m++) {
        const int t = ids[m], p = same_pos ? pos0 : pos0 + m;
        float *r = x + (size_t)m * d;
        for (int i = 0; i < d; i++) {
            const float e = mdl->emb_codes
                ? (float)mdl->emb_codes[(size_t)t * d + i] * mdl->emb_scale[t] + mdl->emb_offset[t]
                : mdl->emb_float[(size_t)t * d + i];
            r[i] = e * mdl->emb_mul + mdl->pos[(size_t)p * d + i];
        }
    }
    if (nm->g) tbt_layer_norm(nm, x, M, d);
    tbt_mark(TBT_T_NORM);
}

/* memory (S, d) of one source; then each decoder layer's cross K, V */
static int tbt_encode(const tbt_model *mdl, const int32_t *src, tbt_state *st)
{
    const int S = st->S, d = mdl->d, H = mdl->H, dh = d / H;
    float *x = st->memory;
    st->src = src;
    tbt_embed(mdl, src, S, 0, 0, &mdl->enc_emb_norm, x);
    for (int l = 0; l < mdl->n_enc; l++) {
        const tbt_layer *L = &mdl->enc[l];
        const float *in = tbt_sub_in(mdl, &L->self_norm, x, S, st->t2);
        if (tbt_queries(&L->self_attn, in, S, H, dh, st->w.q, &st->s, &st->w) != 0 ||
            tbt_keys_values(&L->self_attn, in, S, H, dh, st->w.k, st->w.v, &st->s, &st->w) != 0) return -1;
        for (int i = 0; i < S; i++)
            tbt_attend_row(&L->self_attn, H, dh, st->w.q + (size_t)i * d, st->w.k, st->w.v, S,
                           st->w.o + (size_t)i * d, &st->w, NULL);
        if (tbt_linear_forward(&L->self_attn.o, st->w.o, S, st->t1, &st->s) != 0) return -1;
        tbt_residual(mdl, &L->self_norm, x, st->t1, S);
        in = tbt_sub_in(mdl, &L->ffn_norm, x, S, st->t2);
        if (tbt_ffn(L, mdl->act, in, S, st->t1, &st->s, &st->w) != 0) return -1;
        tbt_residual(mdl, &L->ffn_norm, x, st->t1, S);
    }
    if (mdl->enc_final.g) tbt_layer_norm(&mdl->enc_final, x, S, d);
    for (int l = 0; l < mdl->n_dec; l++)
        if (tbt_keys_values(&mdl->dec[l].cross_attn, x, S, H, dh, st->ck + (size_t)l * S * d,
                            st->cv + (size_t)l * S * d, &st->s, &st->w) != 0) return -1;
    return 0;
}

/* The pointer-generator's output for one row (F.copy_mixture): h (d,) the decoder's last state,
 * a (S,) its copy distribution over the source ids x (S,); z (V,) the logits, replaced by
 *   log p(w) = log[g softmax(z)_w + (1 - g) sum_{s: x_s = w} a_s],   g = sigmoid(h w_g + b_g) */
static void tbt_copy_mixture(const tbt_model *mdl, const float *h, const float *a, const int32_t *x, int S,
                             float *z)
{
    const int V = mdl->V;
    float u = mdl->copy_b;
    for (int i = 0; i < mdl->d; i++) u += h[i] * mdl->copy_w[i];
    const float g = 1.0f / (1.0f + expf(-u));
    float mx = -FLT_MAX;
    for (int i = 0; i < V; i++) mx = fmaxf(mx, z[i]);
    double sum = 0;
    for (int i = 0; i < V; i++) { z[i] = expf(z[i] - mx); sum += z[i]; }
    const float gq = g / (float)sum;
    for (int i = 0; i < V; i++) z[i] *= gq;                       /* g softmax(z)                  */
    for (int s = 0; s < S; s++) z[x[s]] += (1.0f - g) * a[s];     /* + (1 - g) a at the source ids */
    for (int i = 0; i < V; i++) z[i] = logf(fmaxf(z[i], FLT_MIN));
}

/* logits (R, V) for the next token of R rows (beams), each with t tokens in its cache already
 * (log-probabilities when the model copies) */
static int tbt_decode_step(const tbt_model *mdl, const int32_t *tokens, int R, int t, tbt_state *st)
{
    const int d = mdl->d, H = mdl->H, dh = d / H, S = st->S, T = st->T;
    float *x = st->x;
    tbt_embed(mdl, tokens, R, t, 1, &mdl->dec_emb_norm, x);
    for (int l = 0; l < mdl->n_dec; l++) {
        const tbt_layer *L = &mdl->dec[l];
        float *sk = st->sk + (size_t)l * st->R * T * d, *sv = st->sv + (size_t)l * st->R * T * d;
        /* self-attention: this step's K, V join each row's cache at position t */
        const float *in = tbt_sub_in(mdl, &L->self_norm, x, R, st->t2);
        if (tbt_queries(&L->self_attn, in, R, H, dh, st->w.q, &st->s, &st->w) != 0 ||
            tbt_keys_values(&L->self_attn, in, R, H, dh, st->w.k, st->w.v, &st->s, &st->w) != 0) return -1;
        for (int r = 0; r < R; r++) {
            memcpy(sk + ((size_t)r * T + t) * d, st->w.k + (size_t)r * d, d * sizeof(float));
            memcpy(sv + ((size_t)r * T + t) * d, st->w.v + (size_t)r * d, d * sizeof(float));
            tbt_attend_row(&L->self_attn, H, dh, st->w.q + (size_t)r * d, sk + (size_t)r * T * d,
                           sv + (size_t)r * T * d, t + 1, st->w.o + (size_t)r * d, &st->w, NULL);
        }
        if (tbt_linear_forward(&L->self_attn.o, st->w.o, R, st->t1, &st->s) != 0) return -1;
        tbt_residual(mdl, &L->self_norm, x, st->t1, R);
        /* cross-attention over the memory's cached K, V */
        in = tbt_sub_in(mdl, &L->cross_norm, x, R, st->t2);
        if (tbt_queries(&L->cross_attn, in, R, H, dh, st->w.q, &st->s, &st->w) != 0) return -1;
        const int keep = mdl->copy_w && l == mdl->n_dec - 1;       /* the copy distribution */
        for (int r = 0; r < R; r++)
            tbt_attend_row(&L->cross_attn, H, dh, st->w.q + (size_t)r * d, st->ck + (size_t)l * S * d,
                           st->cv + (size_t)l * S * d, S, st->w.o + (size_t)r * d, &st->w,
                           keep ? st->copy_a + (size_t)r * S : NULL);
        if (tbt_linear_forward(&L->cross_attn.o, st->w.o, R, st->t1, &st->s) != 0) return -1;
        tbt_residual(mdl, &L->cross_norm, x, st->t1, R);
        /* feed-forward */
        in = tbt_sub_in(mdl, &L->ffn_norm, x, R, st->t2);
        if (tbt_ffn(L, mdl->act, in, R, st->t1, &st->s, &st->w) != 0) return -1;
        tbt_residual(mdl, &L->ffn_norm, x, st->t1, R);
    }
    if (mdl->dec_final.g) tbt_layer_norm(&mdl->dec_final, x, R, d);
    /* z = h E^T (+ b): the full-precision LM head */
    tbt_matmul_f32(x, R, d, mdl->head_w, mdl->V, st->logits);
    if (mdl->head_b)
        for (int r = 0; r < R; r++)
            for (int i = 0; i < mdl->V; i++) st->logits[(size_t)r * mdl->V + i] += mdl->head_b[i];
    if (mdl->copy_w)
        for (int r = 0; r < R; r++)
            tbt_copy_mixture(mdl, x + (size_t)r * d, st->copy_a + (size_t)r * S, st->src, S,
                             st->logits + (size_t)r * mdl->V);
    tbt_mark(TBT_T_HEAD);
    return 0;
}

/* Greedy: y_t = argmax z_t (<eos> forbidden before min_len). out: up to max_len ids, without
 * <eos>; returns the length, or -1 (no memory). Equals minitbt.decode.greedy on one source. */
static int tbt_greedy(const tbt_model *mdl, const int32_t *src, int S, int max_len, int min_len, int32_t *out)
{
    tbt_state st;
    if (max_len > mdl->max_len) max_len = mdl->max_len;
    if (tbt_state_new(mdl, S, 1, max_len > 0 ? max_len : 1, &st) != 0) return -1;
    int n = 0, rc = tbt_encode(mdl, src, &st);
    int32_t token = mdl->bos;
    for (int t = 0; rc == 0 && t < max_len; t++) {
        if ((rc = tbt_decode_step(mdl, &token, 1, t, &st)) != 0) break;
        const float *z = st.logits;
        int best = -1;
        for (int i = 0; i < mdl->V; i++)
            if ((t >= min_len || i != mdl->eos) && (best < 0 || z[i] > z[best])) best = i;
        tbt_mark(TBT_T_OTHER);
        if (best == mdl->eos) break;
        out[n++] = best;
        token = best;
    }
    tbt_state_free(&st);
    return rc == 0 ? n : -1;
}

/* keep the self-attention caches of the rows that survive: row i <- row rows[i] (t tokens each) */
static void tbt_reorder_cache(const tbt_model *mdl, tbt_state *st, const int *rows, int R, int t)
{
    const size_t row = (size_t)st->T * mdl->d, used = (size_t)t * mdl->d * sizeof(float);
    for (int l = 0; l < mdl->n_dec; l++)
        for (int part = 0; part < 2; part++) {
            float *c = (part ? st->sv : st->sk) + (size_t)l * st->R * row;
            for (int i = 0; i < R; i++) memcpy(st->reorder + i * row, c + (size_t)rows[i] * row, used);
            for (int i = 0; i < R; i++) memcpy(c + (size_t)i * row, st->reorder + i * row, used);
        }
}

typedef struct { double score; int beam, tok; } tbt_cand;

/*
 * Beam search on one source, as minitbt.decode.beam_search: at step t every live beam b and
 * token y give log p(b) + log p(y | b); the 2k best (stable: ties keep the lower index) are
 * taken in order; <eos> ends a hypothesis with score (log p) / (t + 1)^alpha, others stay live
 * (at most k). Stop when k hypotheses have finished and the best of them beats the best live
 * beam's score / max_len^alpha, or nothing is live. out: the best finished ids; returns its length.
 */
static int tbt_beam(const tbt_model *mdl, const int32_t *src, int S, int k, int max_len, int min_len,
                    double alpha, int32_t *out)
{
    tbt_state st;
    if (max_len > mdl->max_len) max_len = mdl->max_len;
    if (max_len < 1) return 0;
    if (tbt_state_new(mdl, S, k, max_len, &st) != 0) return -1;
    const int V = mdl->V, T = max_len;
    int32_t *seqs = calloc((size_t)k * T, sizeof(int32_t)), *nseqs = calloc((size_t)k * T, sizeof(int32_t));
    int32_t *tokens = calloc((size_t)k, sizeof(int32_t)), *fin_ids = calloc((size_t)T, sizeof(int32_t));
    double *scores = calloc((size_t)k, sizeof(double));
    tbt_cand *top = calloc((size_t)2 * k, sizeof(tbt_cand));
    int *rows = calloc((size_t)k, sizeof(int));
    int rc = (seqs && nseqs && tokens && fin_ids && scores && top && rows) ? tbt_encode(mdl, src, &st) : -1;
    int R = 1, n_fin = 0, fin_len = -1;
    double fin_best = -INFINITY;
    tokens[0] = mdl->bos;
    for (int t = 0; rc == 0 && t < max_len; t++) {
        if ((rc = tbt_decode_step(mdl, tokens, R, t, &st)) != 0) break;
        /* the 2k best candidates over all beams, ordered by score, then by index b V + y */
        int ntop = 0;
        for (int b = 0; b < R; b++) {
            const float *z = st.logits + (size_t)b * V;
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < V; i++) mx = fmax(mx, (double)z[i]);
            for (int i = 0; i < V; i++) sum += exp((double)z[i] - mx);
            const double lse = log(sum);
            for (int i = 0; i < V; i++) {
                double c = scores[b] + (((double)z[i] - mx) - lse);
                if (t < min_len && i == mdl->eos) c = -INFINITY;
                if (ntop == 2 * k && !(c > top[ntop - 1].score)) continue;
                int j = ntop < 2 * k ? ntop++ : ntop - 1;
                while (j > 0 && top[j - 1].score < c) { top[j] = top[j - 1]; j--; }
                top[j].score = c; top[j].beam = b; top[j].tok = i;
            }
        }
        int live = 0;
        double best_live = -INFINITY;
        for (int j = 0; j < ntop && live < k; j++) {
            if (!isfinite(top[j].score)) continue;
            if (top[j].tok == mdl->eos) {
                const double f = top[j].score / pow(t + 1, alpha);
                if (f > fin_best) {
                    fin_best = f; fin_len = t;
                    memcpy(fin_ids, seqs + (size_t)top[j].beam * T, (size_t)t * sizeof(int32_t));
                }
                n_fin++;
            } else {
                rows[live] = top[j].beam;
                memcpy(nseqs + (size_t)live * T, seqs + (size_t)top[j].beam * T, (size_t)t * sizeof(int32_t));
                nseqs[(size_t)live * T + t] = top[j].tok;
                tokens[live] = top[j].tok;
                scores[live] = top[j].score;
                best_live = fmax(best_live, top[j].score);
                live++;
            }
        }
        best_live = live ? best_live / (alpha >= 0 ? pow(max_len, alpha) : 1.0) : -INFINITY;
        if ((n_fin >= k && fin_best >= best_live) || live == 0) break;
        memcpy(seqs, nseqs, (size_t)live * T * sizeof(int32_t));
        tbt_reorder_cache(mdl, &st, rows, live, t + 1);
        R = live;
        if (t == max_len - 1 && n_fin == 0) {       /* max_len reached: score the live beams */
            for (int b = 0; b < R; b++) {
                const double f = scores[b] / pow(max_len, alpha);
                if (f > fin_best) { fin_best = f; fin_len = max_len; memcpy(fin_ids, seqs + (size_t)b * T, (size_t)max_len * sizeof(int32_t)); }
            }
        }
    }
    if (fin_len > 0) memcpy(out, fin_ids, (size_t)fin_len * sizeof(int32_t));
    free(seqs); free(nseqs); free(tokens); free(fin_ids); free(scores); free(top); free(rows);
    tbt_state_free(&st);
    return rc == 0 ? (fin_len > 0 ? fin_len : 0) : -1;
}

#endif /* MINITBT_DECODER_H */
