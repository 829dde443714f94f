/* The instruction-throughput roofline of minitbt's AVX2 kernels (docs/kernels.md section 6).
 *
 *     gcc -O3 -mavx2 -o /tmp/roofline benchmarks/roofline_avx2.c && /tmp/roofline
 *
 * Prints, three times: the throughput of single instructions in registers (8 independent
 * chains each, giga-instructions per second of process CPU time), and the inner-loop bodies of
 * the kernels with their loads replaced by registers (GMAC/s): what the kernels could reach if
 * nothing but their instruction mix limited them. Compare with the kernels' GMAC/s printed by
 * benchmarks/bench_kernels.py in the same conditions. Needs an AVX2 CPU. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
#define KEEP(v) __asm__ volatile("" : "+x"(v))
#define N_IT 20000000L

/* 8 independent chains c_i = OP(c_i, l), OP one instruction: its throughput in G/s. l is
 * kept in a register (KEEP), so that no operand comes from memory. */
#define EIGHT(OP) do { c0 = OP(c0, l); c1 = OP(c1, l); c2 = OP(c2, l); c3 = OP(c3, l); \
                       c4 = OP(c4, l); c5 = OP(c5, l); c6 = OP(c6, l); c7 = OP(c7, l); \
                       KEEP(c0); KEEP(c1); KEEP(c2); KEEP(c3); \
                       KEEP(c4); KEEP(c5); KEEP(c6); KEEP(c7); } while (0)

static inline __m256i op_shuf(__m256i c, __m256i l) { return _mm256_shuffle_epi8(l, c); }
static inline __m256i op_madd(__m256i c, __m256i l) { return _mm256_maddubs_epi16(c, l); }
static inline __m256i op_addb(__m256i c, __m256i l) { return _mm256_add_epi8(c, l); }
static inline __m256 op_perm(__m256 c, __m256i l) { return _mm256_permutevar8x32_ps(c, l); }

static __attribute__((noinline)) double chains_i(int which)
{
    __m256i l = _mm256_set1_epi8(3);
    __m256i c0 = _mm256_set1_epi8(0), c1 = _mm256_set1_epi8(1), c2 = _mm256_set1_epi8(2);
    __m256i c3 = _mm256_set1_epi8(3), c4 = _mm256_set1_epi8(4), c5 = _mm256_set1_epi8(5);
    __m256i c6 = _mm256_set1_epi8(6), c7 = _mm256_set1_epi8(7);
    KEEP(l);
    double t = now();
    if (which == 0) for (long n = 0; n < N_IT; n++) EIGHT(op_shuf);
    if (which == 1) for (long n = 0; n < N_IT; n++) EIGHT(op_madd);
    if (which == 2) for (long n = 0; n < N_IT; n++) EIGHT(op_addb);
    return 8.0 * N_IT / (now() - t);
}

static __attribute__((noinline)) double shuf(void) { return chains_i(0); }
static __attribute__((noinline)) double madd(void) { return chains_i(1); }
static __attribute__((noinline)) double addb(void) { return chains_i(2); }

static __attribute__((noinline)) double perm(void)
{
    __m256i l = _mm256_set1_epi32(3);
    __m256 c0 = _mm256_set1_ps(0), c1 = _mm256_set1_ps(1), c2 = _mm256_set1_ps(2);
    __m256 c3 = _mm256_set1_ps(3), c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5);
    __m256 c6 = _mm256_set1_ps(6), c7 = _mm256_set1_ps(7);
    KEEP(l);
    double t = now();
    for (long n = 0; n < N_IT; n++) EIGHT(op_perm);
    return 8.0 * N_IT / (now() - t);
}

/* W1A1 tile body: 2 activation rows (nibbles split) x 4 weight vectors, each split in the loop;
 * 512 bit-MACs per weight vector. Named variables (not arrays), so that all stay in registers. */
#define W1A1_COL(y, cA, cB) do {                                                        \
        KEEP(y);                                                                        \
        const __m256i yl = _mm256_and_si256(y, m4);                                     \
        const __m256i yh = _mm256_and_si256(_mm256_srli_epi16(y, 4), m4);               \
        cA = _mm256_add_epi8(cA, _mm256_add_epi8(                                       \
            _mm256_shuffle_epi8(lut, _mm256_xor_si256(a0l, yl)),                        \
            _mm256_shuffle_epi8(lut, _mm256_xor_si256(a0h, yh))));                      \
        cB = _mm256_add_epi8(cB, _mm256_add_epi8(                                       \
            _mm256_shuffle_epi8(lut, _mm256_xor_si256(a1l, yl)),                        \
            _mm256_shuffle_epi8(lut, _mm256_xor_si256(a1h, yh)))); } while (0)

static __attribute__((noinline)) __m256i w1a1_loop(long iterations)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i a0l = _mm256_set1_epi8(1), a0h = _mm256_set1_epi8(2);
    __m256i a1l = _mm256_set1_epi8(3), a1h = _mm256_set1_epi8(4);
    __m256i y0 = _mm256_set1_epi8(5), y1 = _mm256_set1_epi8(22);
    __m256i y2 = _mm256_set1_epi8(39), y3 = _mm256_set1_epi8(56);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00;
    __m256i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    for (long n = 0; n < iterations; n++) {
        W1A1_COL(y0, c00, c10); W1A1_COL(y1, c01, c11);
        W1A1_COL(y2, c02, c12); W1A1_COL(y3, c03, c13);
    }
    return _mm256_xor_si256(_mm256_xor_si256(_mm256_xor_si256(c00, c01), _mm256_xor_si256(c02, c03)),
                            _mm256_xor_si256(_mm256_xor_si256(c10, c11), _mm256_xor_si256(c12, c13)));
}

/* (the loops are functions of their own, timed from outside: a call inside the timed function
 * would make the compiler keep the sums in memory across it) */
static __attribute__((noinline)) double w1a1(void)
{
    double t = now();
    __m256i r = w1a1_loop(N_IT / 4);
    t = now() - t;
    KEEP(r);
    return (N_IT / 4) * 4.0 * 512 / t;            /* bit-MACs per second */
}

/* sign-add body: per 32-byte index vector 4 vpermps + 3 shifts + 4 adds = 8 rows x 2 groups x 3
 * inputs = 48 MACs; two row blocks at once (8 independent sums, as the kernel's row blocks are) */
static __attribute__((noinline)) double signadd(void) {
    __m256 t0 = _mm256_set1_ps(1), t1 = _mm256_set1_ps(2), ap = _mm256_setzero_ps(), am = ap, bp = ap, bm = ap;
    __m256 cp = ap, cm = ap, dp = ap, dm = ap;
    __m256i v = _mm256_set1_epi32(0x03020100), u = _mm256_set1_epi32(0x01020304);
    double t = now();
    for (long n = 0; n < N_IT; n++) {
        KEEP(v); KEEP(u);
        ap = _mm256_add_ps(ap, _mm256_permutevar8x32_ps(t0, v));
        am = _mm256_add_ps(am, _mm256_permutevar8x32_ps(t0, _mm256_srli_epi32(v, 8)));
        bp = _mm256_add_ps(bp, _mm256_permutevar8x32_ps(t1, _mm256_srli_epi32(v, 16)));
        bm = _mm256_add_ps(bm, _mm256_permutevar8x32_ps(t1, _mm256_srli_epi32(v, 24)));
        cp = _mm256_add_ps(cp, _mm256_permutevar8x32_ps(t0, u));
        cm = _mm256_add_ps(cm, _mm256_permutevar8x32_ps(t0, _mm256_srli_epi32(u, 8)));
        dp = _mm256_add_ps(dp, _mm256_permutevar8x32_ps(t1, _mm256_srli_epi32(u, 16)));
        dm = _mm256_add_ps(dm, _mm256_permutevar8x32_ps(t1, _mm256_srli_epi32(u, 24)));
    }
    t = now() - t; ap = _mm256_add_ps(_mm256_add_ps(ap, am), _mm256_add_ps(bp, bm));
    cp = _mm256_add_ps(_mm256_add_ps(cp, cm), _mm256_add_ps(dp, dm)); ap = _mm256_add_ps(ap, cp); KEEP(ap);
    return N_IT * 96.0 / t;
}
/* W2A8 GEMM tile body: 2 activation vectors x 4 weight vectors: 8 vpmaddubsw + 8 vpaddw,
 * 2 * 4 * 32 = 256 MACs. In assembly, with fixed registers: GCC spills the 8 sums of the same
 * loop in C (x: ymm0-1, w: ymm2-5, sums: ymm6-13, products: ymm14-15). */
static __attribute__((noinline)) double w2a8(void)
{
    long n = N_IT / 4;
    double t = now();
    __asm__ volatile(
        "vpxor %%xmm6, %%xmm6, %%xmm6\n\t"
        "1:\n\t"
        "vpmaddubsw %%ymm2, %%ymm0, %%ymm14\n\t" "vpaddw %%ymm14, %%ymm6, %%ymm6\n\t"
        "vpmaddubsw %%ymm2, %%ymm1, %%ymm15\n\t" "vpaddw %%ymm15, %%ymm7, %%ymm7\n\t"
        "vpmaddubsw %%ymm3, %%ymm0, %%ymm14\n\t" "vpaddw %%ymm14, %%ymm8, %%ymm8\n\t"
        "vpmaddubsw %%ymm3, %%ymm1, %%ymm15\n\t" "vpaddw %%ymm15, %%ymm9, %%ymm9\n\t"
        "vpmaddubsw %%ymm4, %%ymm0, %%ymm14\n\t" "vpaddw %%ymm14, %%ymm10, %%ymm10\n\t"
        "vpmaddubsw %%ymm4, %%ymm1, %%ymm15\n\t" "vpaddw %%ymm15, %%ymm11, %%ymm11\n\t"
        "vpmaddubsw %%ymm5, %%ymm0, %%ymm14\n\t" "vpaddw %%ymm14, %%ymm12, %%ymm12\n\t"
        "vpmaddubsw %%ymm5, %%ymm1, %%ymm15\n\t" "vpaddw %%ymm15, %%ymm13, %%ymm13\n\t"
        "dec %0\n\t"
        "jnz 1b\n\t"
        "vzeroupper"
        : "+r"(n) :
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc");
    t = now() - t;
    return (N_IT / 4) * 256.0 / t;
}

int main(void) {
    for (int rep = 0; rep < 3; rep++)
        printf("G/s: vpshufb %.2f  vpmaddubsw %.2f  vpermps %.2f  vpaddb %.2f | bodies GMAC/s: W1A1 %.0f  W2A2(=W1A1/4) %.0f  W2A8 %.0f  sign-add %.1f\n",
               shuf() / 1e9, madd() / 1e9, perm() / 1e9, addb() / 1e9, w1a1() / 1e9, w1a1() / 4e9, w2a8() / 1e9, signadd() / 1e9);
    return 0;
}
