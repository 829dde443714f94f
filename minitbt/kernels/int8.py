"""Ternary (or binary) weights x int8 activations: W2A8 / W1A8, exact int32 results.

The weights are prepared once (``prepare_ternary_int8``) in two layouts: int8 codes for the
GEMM, 2 bits per weight for the memory-bound batch-1 GEMV.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minitbt import kernels                     # kernels._core: the one switch, read at call time
from minitbt.kernels._checks import _check_int32, _check_prepared, _check_threads
from minitbt.kernels.packing import _check_codes


@dataclass(frozen=True, eq=False)
class TernaryInt8Weights:
    """Ternary (or binary) weights (N, K) prepared once for gemm_ternary_int8.

    Two layouts of the same codes (docs/kernels.md section 4.2; minitbt/_int8.h):

    * ``w_i8``  (Np, Kp8) int8 codes in {-1, 0, 1}; Kp8 = K rounded up to 32, Np = N rounded
      up to 8, padding 0. The GEMM layout: no unpacking in the inner loop.
    * ``w_i2``  (Np, Kp2 // 4) uint8, 2 bits per weight, code = w + 1 (padding code 1, i.e. 0);
      Kp2 = K rounded up to 128; in each 32-byte block b of a row, byte i holds the codes of
      k = 128 b + 32 j + i at bits 2j, 2j+1 (j = 0..3), as in bitnet.cpp's I2_S. The GEMV
      layout: 16x fewer bytes than float32 for the memory-bound batch-1 case.
    * ``w_sum`` (Np,) int32, sum of each row's codes (removes the +128 offset of the GEMM).
    """
    w_i8: np.ndarray
    w_i2: np.ndarray
    w_sum: np.ndarray
    N: int
    K: int

    @property
    def shape(self):
        return (self.N, self.K)

    def codes(self) -> np.ndarray:
        """The (N, K) int8 codes back."""
        return self.w_i8[:self.N, :self.K].copy()


def _round_up(n, m):
    return (n + m - 1) // m * m


def prepare_ternary_int8(codes) -> TernaryInt8Weights:
    """Prepare (N, K) codes in {-1, 0, 1} for gemm_ternary_int8 (once, outside the timing)."""
    c = _check_codes("codes", codes, (-1, 0, 1))
    N, K = c.shape
    if K < 1:
        raise ValueError("codes must have K >= 1 columns")
    Np, Kp8, Kp2 = _round_up(max(N, 1), 8), _round_up(K, 32), _round_up(K, 128)
    w_i8 = np.zeros((Np, Kp8), dtype=np.int8)
    w_i8[:N, :K] = c
    c2 = np.ones((Np, Kp2), dtype=np.uint8)                 # code = w + 1; padding: w = 0
    c2[:N, :K] = c + 1
    c2 = c2.reshape(Np, Kp2 // 128, 4, 32)                  # [row, block, j, i]
    w_i2 = (c2[:, :, 0] | (c2[:, :, 1] << 2) | (c2[:, :, 2] << 4) | (c2[:, :, 3] << 6))
    w_sum = w_i8.sum(axis=1, dtype=np.int32)
    return TernaryInt8Weights(w_i8, np.ascontiguousarray(w_i2.reshape(Np, Kp2 // 4)),
                              w_sum, N, K)


def unpack_i2(w_i2: np.ndarray, K: int) -> np.ndarray:
    """Decode the 2-bit layout back to (Np, K) int8 codes in {-1, 0, 1}."""
    Np = w_i2.shape[0]
    blocks = w_i2.reshape(Np, -1, 1, 32)                    # [row, block, 1, i]
    shifts = (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)
    c = (blocks >> shifts) & 3                              # [row, block, j, i]
    return (c.reshape(Np, -1)[:, :K].astype(np.int8) - 1)


def gemm_ternary_int8_ref(x: np.ndarray, weights: TernaryInt8Weights) -> np.ndarray:
    """W2A8 / W1A8: int8 activations x (M, K) times ternary codes W (N, K), exact integers.

        y[m, n] = sum_k x[m, k] * W[n, k]        (BitNet b1.58, Ma et al. 2024)

    W holds only -1, 0, +1, so each term is +x, 0 or -x: no multiplication is needed. Written
    that way, as selections and sums:

        y[m, n] = sum_{k: W[n,k] = +1} x[m, k]  -  sum_{k: W[n,k] = -1} x[m, k]
    """
    W = weights.codes()                                            # (N, K) in {-1, 0, +1}
    plus, minus = W == 1, W == -1
    out = np.empty((x.shape[0], W.shape[0]), dtype=np.int32)
    for m, row in enumerate(x.astype(np.int64)):                   # one row at a time: (N, K) temporaries
        out[m] = np.where(plus, row, 0).sum(axis=1) - np.where(minus, row, 0).sum(axis=1)
    return out


def gemm_ternary_int8(x: np.ndarray, weights: TernaryInt8Weights, *,
                      threads: int = 1) -> np.ndarray:
    """int8 activations (M, K) x prepared ternary weights -> (M, N) int32 (exact).

    One or two rows (decoding) use the 2-bit layout; more rows use the int8 layout.
    See gemm_ternary_int8_ref for the equation. |y| <= 128 K (x = -128, w = -1), so
    K <= (2^31 - 1) // 128 = 16 777 215 (_check_int32).
    """
    _check_prepared(x, weights, TernaryInt8Weights, np.int8, "prepare_ternary_int8")
    _check_int32(weights.K, 128)
    threads = _check_threads(threads)
    if kernels._core is None:
        return gemm_ternary_int8_ref(x, weights)
    M, N = x.shape[0], weights.N
    out = np.empty((M, N), dtype=np.int32)
    if M <= 2:                                   # one row at a time, 2-bit weights
        kernels._core.gemv_ternary_i2(x, weights.w_i2, N, out, threads)
    else:
        kernels._core.gemm_ternary_i8(x, weights.w_i8, weights.w_sum, N, out, threads)
    return out
