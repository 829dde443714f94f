/*
 * minitbt/_bitops.h -- the C side of minitbt's multiplication-free kernels: include this one
 * file (minitbt/_core.pyx does; any other extension may too: every function is static and
 * every header has an include guard).
 *
 * minitbt/kernels/ holds the specification: a pure-NumPy reference for every kernel, the bit
 * layouts, and the equations (docs/kernels.md explains the design). Each family has its own
 * header, which reads top down: the equation as a short scalar C function first, then the
 * SIMD forms (in their own files), then the driver.
 *
 *   _common.h        includes, scratch memory, the target attributes TBT_AVX2 / TBT_AVX512
 *   _dispatch.h      which path runs: tbt_kernel_init(), tbt_kernel_path(), MINITBT_KERNEL_PATH
 *   _popcount.h      1. popcount GEMMs on bit-packed operands (W1A1, W1A2, W2A2, ternary^2)
 *                      out[m][n] = bias + row_bias[m] + sum_{p,q} coef[p][q] popc(op(A[p][m], B[q][n]))
 *                      tbt_popc_gemm, tbt_row_popc
 *   _int8.h          2. ternary weights x int8 activations, exact int32:  y = sum_k x_k w_k
 *                      tbt_gemm_ternary_i8, tbt_gemv_ternary_i2
 *   _signadd.h       3. ternary weights x float32 by table look-up (additions only)
 *                      tbt_signadd_f32
 *   _lut.h           4. k-bit binary-coding weights x float32 by table look-up (tbt_bcq_lut_f32;
 *                      included separately, after this file)
 *
 * Paths: portable C everywhere; AVX2 and AVX-512 (VPOPCNTDQ, VNNI) on x86-64, chosen at run
 * time (_dispatch.h). The entry points above dispatch inside; their names and signatures are
 * stable. Every one returns 0 on success and -1 if a work buffer could not be allocated
 * (tbt_row_popc cannot fail).
 */
#ifndef MINITBT_BITOPS_H
#define MINITBT_BITOPS_H

#include "_common.h"
#include "_dispatch.h"
#include "_popcount.h"
#include "_int8.h"
#include "_signadd.h"

#endif /* MINITBT_BITOPS_H */
