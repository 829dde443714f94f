# cython: boundscheck=False, wraparound=False, cdivision=True, language_level=3
"""Compiled bit kernels: thin wrappers around the C in minitbt/_bitops.h (and the headers it
includes, one per kernel family) and minitbt/_lut.h.

Do not call these directly: minitbt/kernels/ validates shapes, dtypes,
C-contiguity and padding, documents the layouts, and holds the NumPy reference
of every kernel. The wrappers here trust their inputs, take the raw data
pointers (cheaper than typed memoryviews: these calls can be a few
microseconds long), release the GIL, and raise MemoryError if the C side
cannot get scratch memory.
"""
cimport numpy as cnp
from libc.math cimport fabsf, floorf, fmaxf, fminf, rintf
from libc.stdint cimport int8_t, int32_t, uint8_t, uint32_t, uint64_t

cnp.import_array()

cdef extern from "_bitops.h" nogil:
    int TBT_X86_SIMD
    int TBT_HAVE_OPENMP
    int TBT_PATH_PORTABLE
    int TBT_PATH_AVX2
    int TBT_PATH_AVX512
    int tbt_cpu_path()
    int tbt_kernel_init()
    int tbt_kernel_path()
    int tbt_set_kernel_path(int want)
    int tbt_xnor_dot(const uint64_t *a, const uint64_t *w, int W, int K)
    int TBT_AND
    int TBT_XOR
    int tbt_popc_gemm(const uint64_t *A, const uint64_t *B, int M, int N, int W,
                      int op, int pa, int pb, const int32_t *coef,
                      const int32_t *row_bias, int32_t bias, int32_t *out, int threads)
    void tbt_row_popc(const uint64_t *A, int pa, int M, int W, const int32_t *weight,
                      int32_t *row_popc)
    int tbt_gemm_ternary_i8(const int8_t *x, int M, int K, const int8_t *w_i8, int Kp8,
                            const int32_t *w_sum, int N, int32_t *out, int threads)
    int tbt_gemv_ternary_i2(const int8_t *x, int K, const uint8_t *w_i2, int Kp2, int N,
                            int32_t *out, int threads)
    int tbt_signadd_f32(const float *x, int M, int K, const uint8_t *idx, int N,
                        float *out, int threads)

cdef extern from "_quantize.h" nogil:
    float tbt_quantize_row_i8(const float *x, int K, float clip, float qp, float tol, float tiny, int8_t *codes)
    int tbt_fake_quant_f32(const float *x, size_t n, float a, float lo, float qp, int mode,
                            float *qout, float *dqda, uint8_t *inside)

cdef extern from "_lut.h" nogil:
    int tbt_bcq_lut_f32(const float *x, int M, int K, const uint32_t *lut, const float *scale,
                        int k, int N, float *out, int threads, int scalar)

HAVE_OPENMP = bool(TBT_HAVE_OPENMP)  # threads > 1 runs in parallel
OP_AND = TBT_AND
OP_XOR = TBT_XOR

# The kernel paths (minitbt/_dispatch.h), slowest first. This build has the SIMD ones on
# x86-64 with GCC or clang, unless it was built with MINITBT_PORTABLE=1.
PATHS = ("portable", "avx2", "avx512")
COMPILED_PATHS = PATHS if TBT_X86_SIMD else PATHS[:1]

tbt_kernel_init()                    # the CPU and MINITBT_KERNEL_PATH, read once, at import


def cpu_path():
    """The best path this CPU can run (of COMPILED_PATHS), whatever MINITBT_KERNEL_PATH says."""
    return PATHS[tbt_cpu_path()]


def kernel_path():
    """The path the kernels run now: "portable", "avx2" or "avx512"."""
    return PATHS[tbt_kernel_path()]


def set_kernel_path(name=None):
    """Run the kernels on path `name` (None: the best one); a path the CPU lacks gives the best
    one it has. Returns the path set. (Not thread-safe: for tests and comparisons.)"""
    return PATHS[tbt_set_kernel_path(-1 if name is None else PATHS.index(name))]


def xnor_dot(cnp.ndarray a, cnp.ndarray w, int K):
    """a . w = K - 2 popc(a XOR w) for one row of each (W uint64 words): the scalar C function
    that the W1A1 kernel's equation is written as (tbt_xnor_dot in minitbt/_popcount.h)."""
    return tbt_xnor_dot(<const uint64_t *>cnp.PyArray_DATA(a), <const uint64_t *>cnp.PyArray_DATA(w),
                        a.shape[0], K)


cdef inline void _check(int rc) except *:
    if rc != 0:
        raise MemoryError("minitbt._core: could not allocate a work buffer")


def popc_gemm(cnp.ndarray A, cnp.ndarray B, int op, cnp.ndarray coef, row_bias, int bias,
              cnp.ndarray out, int threads):
    """out[m, n] = bias + row_bias[m] + sum_{p,q} coef[p, q] * popc(op(A[p, m], B[q, n])).

    A: (pa, M, W) uint64, B: (pb, N, W) uint64, coef: (pa, pb) int32, row_bias: (M,) int32
    or None, out: (M, N) int32.
    """
    cdef int pa = A.shape[0], M = A.shape[1], W = A.shape[2]
    cdef int pb = B.shape[0], N = B.shape[1]
    cdef const uint64_t *a = <const uint64_t *>cnp.PyArray_DATA(A)
    cdef const uint64_t *b = <const uint64_t *>cnp.PyArray_DATA(B)
    cdef const int32_t *c = <const int32_t *>cnp.PyArray_DATA(coef)
    cdef const int32_t *rb = NULL
    cdef int32_t *o = <int32_t *>cnp.PyArray_DATA(out)
    cdef int rc
    if row_bias is not None:
        rb = <const int32_t *>cnp.PyArray_DATA(row_bias)
    if M == 0 or N == 0:
        return
    with nogil:
        rc = tbt_popc_gemm(a, b, M, N, W, op, pa, pb, c, rb, bias, o, threads)
    _check(rc)


def row_popc(cnp.ndarray A, cnp.ndarray weight, cnp.ndarray out):
    """out[m] = sum_p weight[p] * popc(A[p, m]);  A (pa, M, W) uint64, weight (pa,) int32."""
    cdef int pa = A.shape[0], M = A.shape[1], W = A.shape[2]
    cdef const uint64_t *a = <const uint64_t *>cnp.PyArray_DATA(A)
    cdef const int32_t *wt = <const int32_t *>cnp.PyArray_DATA(weight)
    cdef int32_t *o = <int32_t *>cnp.PyArray_DATA(out)
    with nogil:
        tbt_row_popc(a, pa, M, W, wt, o)


def gemm_ternary_i8(cnp.ndarray x, cnp.ndarray w_i8, cnp.ndarray w_sum, int N,
                    cnp.ndarray out, int threads):
    """out (M, N) = x (M, K) int8 @ W.T, W the int8 codes w_i8 (Np, Kp8); exact int32."""
    cdef int M = x.shape[0], K = x.shape[1], Kp8 = w_i8.shape[1]
    cdef const int8_t *xp = <const int8_t *>cnp.PyArray_DATA(x)
    cdef const int8_t *wp = <const int8_t *>cnp.PyArray_DATA(w_i8)
    cdef const int32_t *ws = <const int32_t *>cnp.PyArray_DATA(w_sum)
    cdef int32_t *o = <int32_t *>cnp.PyArray_DATA(out)
    cdef int rc
    if M == 0 or N == 0:
        return
    with nogil:
        rc = tbt_gemm_ternary_i8(xp, M, K, wp, Kp8, ws, N, o, threads)
    _check(rc)


def gemv_ternary_i2(cnp.ndarray x, cnp.ndarray w_i2, int N, cnp.ndarray out, int threads):
    """out[m] (N,) = W @ x[m] for each row of x (M, K) int8, W in the 2-bit layout w_i2."""
    cdef int M = x.shape[0], K = x.shape[1], Kp2 = 4 * w_i2.shape[1]
    cdef const int8_t *xp = <const int8_t *>cnp.PyArray_DATA(x)
    cdef const uint8_t *wp = <const uint8_t *>cnp.PyArray_DATA(w_i2)
    cdef int32_t *o = <int32_t *>cnp.PyArray_DATA(out)
    cdef int m, rc = 0
    if N == 0:
        return
    with nogil:
        for m in range(M):
            rc = tbt_gemv_ternary_i2(xp + <size_t>m * K, K, wp, Kp2, N, o + <size_t>m * N,
                                     threads)
            if rc != 0:
                break
    _check(rc)


def signadd_f32(cnp.ndarray x, cnp.ndarray idx, int N, cnp.ndarray out, int threads):
    """out (M, N) = x (M, K) float32 @ W.T for ternary W given as look-up indices."""
    cdef int M = x.shape[0], K = x.shape[1]
    cdef const float *xp = <const float *>cnp.PyArray_DATA(x)
    cdef const uint8_t *ip = <const uint8_t *>cnp.PyArray_DATA(idx)
    cdef float *o = <float *>cnp.PyArray_DATA(out)
    cdef int rc
    if M == 0 or N == 0:
        return
    with nogil:
        rc = tbt_signadd_f32(xp, M, K, ip, N, o, threads)
    _check(rc)


def quantize_rows_i8(cnp.ndarray x, float clip, float qp, float tol, float tiny,
                     cnp.ndarray codes, cnp.ndarray scale):
    """Signed per-token min-max quantization of x (M, K) float32 into codes (M, K) int8 and a
    scale (M,) float32 per row: tbt_quantize_row_i8 (minitbt/_quantize.h, which the compiled
    decoder uses too), the equations of minitbt.kernels.quantize.quantize_rows_i8_ref operation
    for operation in float32, so the codes are identical."""
    cdef int M = x.shape[0], K = x.shape[1], m
    cdef const float *xp = <const float *>cnp.PyArray_DATA(x)
    cdef int8_t *cp = <int8_t *>cnp.PyArray_DATA(codes)
    cdef float *sp = <float *>cnp.PyArray_DATA(scale)
    with nogil:
        for m in range(M):
            sp[m] = tbt_quantize_row_i8(xp + <size_t>m * K, K, clip, qp, tol, tiny, cp + <size_t>m * K)


def fake_quant_f32(cnp.ndarray x, float a, float lo, float qp, int mode,
                   cnp.ndarray q, cnp.ndarray dqda, cnp.ndarray inside):
    """The training forward of a learned-scale quantizer over x (any shape, C-contiguous float32):
    the codes q (as float32), dq/da and the inside mask (uint8), from tbt_fake_quant_f32 (minitbt/_quantize.h), the
    equations of minitbt.kernels.quantize.fake_quantize_ref operation for operation in float32.
    Returns False, with nothing written, where the kernel path is portable (no SIMD)."""
    cdef size_t n = x.size
    cdef int rc
    cdef const float *xp = <const float *>cnp.PyArray_DATA(x)
    cdef float *qp_ = <float *>cnp.PyArray_DATA(q)
    cdef float *dp = <float *>cnp.PyArray_DATA(dqda)
    cdef uint8_t *ip = <uint8_t *>cnp.PyArray_DATA(inside)
    with nogil:
        rc = tbt_fake_quant_f32(xp, n, a, lo, qp, mode, qp_, dp, ip)
    return rc == 0


def bcq_lut_f32(cnp.ndarray x, cnp.ndarray lut, cnp.ndarray scale, int N, cnp.ndarray out,
                int threads, bint scalar=False):
    """out (M, N) = sum_i scale[i] * (b_i . x) for k-bit binary-coding weights by table look-up.

    x: (M, K) float32; lut: the layout of minitbt/_lut.h, (ceil(N/8), k, Wd, 8) uint32;
    scale: (k, 8 ceil(N/8)) float32; out: (M, N) float32. Equation and order of the float32
    additions: minitbt.kernels.lut.gemm_bcq_lut_ref. scalar=True runs the scalar C even where
    the kernel path is AVX2 or AVX-512 (for the tests: both forms must give the reference's bits)."""
    cdef int M = x.shape[0], K = x.shape[1], k = scale.shape[0]
    cdef const float *xp = <const float *>cnp.PyArray_DATA(x)
    cdef const uint32_t *lp = <const uint32_t *>cnp.PyArray_DATA(lut)
    cdef const float *sp = <const float *>cnp.PyArray_DATA(scale)
    cdef float *o = <float *>cnp.PyArray_DATA(out)
    cdef int rc
    if M == 0 or N == 0:
        return
    with nogil:
        rc = tbt_bcq_lut_f32(xp, M, K, lp, sp, k, N, o, threads, scalar)
    _check(rc)
