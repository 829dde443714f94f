"""Ternary weights x float32 activations with additions only (sign-add, table look-ups).

The weights are prepared once (``prepare_signadd``) as 3-bit look-up indices, 3 weights per
pair of indices; aimed at batch-1 decoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minitbt import kernels                     # kernels._core: the one switch, read at call time
from minitbt.kernels._checks import _check_finite, _check_prepared, _check_threads
from minitbt.kernels.packing import _check_codes


_SA_G = 6              # groups of 3 inputs per chunk (must match TBT_SA_G in minitbt/_signadd.h)
_SA_CHUNK = 3 * _SA_G  # inputs per chunk


@dataclass(frozen=True, eq=False)
class TernarySignAddWeights:
    """Ternary weights (N, K) prepared for gemm_signadd_f32: 3-bit look-up indices.

    For row n and group g (inputs 3g, 3g+1, 3g+2), ``i+ = sum_t 2^t [W[n, 3g+t] = +1]`` and
    ``i-`` likewise for -1. Layout (``idx``, uint8, flat): 8 rows form a row block, 6 groups
    a chunk; for each (chunk, row block) 3 blocks of 32 bytes, block b holding groups 2b and
    2b+1 as ``byte[4 row + s]``, s = (i+ of 2b, i- of 2b, i+ of 2b+1, i- of 2b+1); order
    [chunk][row block][block][32 bytes]. 6 bits per 3 weights: 5.3 bits per weight.
    """
    idx: np.ndarray
    N: int
    K: int

    @property
    def shape(self):
        return (self.N, self.K)

    def _planes(self):
        """(i+, i-) as (Np, ngroups) uint8 arrays."""
        nch, nrb = -(-self.K // _SA_CHUNK), -(-max(self.N, 1) // 8)   # N = 0: one padding block
        a = self.idx.reshape(nch, nrb, _SA_G // 2, 8, 2, 2)       # [c, r, b, row, pair, plane]
        a = a.transpose(1, 3, 0, 2, 4, 5).reshape(nrb * 8, nch * _SA_G, 2)  # [n, g, plane]
        return a[..., 0], a[..., 1]

    def codes(self) -> np.ndarray:
        """The (N, K) int8 codes back, decoded from the indices."""
        ip, im = self._planes()
        bits = (np.arange(3, dtype=np.uint8))
        plus = ((ip[..., None] >> bits) & 1).reshape(ip.shape[0], -1)   # (Np, 3 ngroups)
        minus = ((im[..., None] >> bits) & 1).reshape(im.shape[0], -1)
        return (plus.astype(np.int8) - minus.astype(np.int8))[:self.N, :self.K]


def prepare_signadd(codes) -> TernarySignAddWeights:
    """Prepare (N, K) codes in {-1, 0, 1} for gemm_signadd_f32 (once, outside the timing)."""
    c = _check_codes("codes", codes, (-1, 0, 1))
    N, K = c.shape
    if K < 1:
        raise ValueError("codes must have K >= 1 columns")
    nch, nrb = -(-K // _SA_CHUNK), -(-max(N, 1) // 8)
    full = np.zeros((nrb * 8, nch * _SA_CHUNK), dtype=np.int64)
    full[:N, :K] = c
    tri = full.reshape(nrb * 8, nch * _SA_G, 3)                   # [n, group, t]
    weights3 = np.array([1, 2, 4])
    ip = ((tri == 1) * weights3).sum(-1).astype(np.uint8)         # (Np, ngroups) i+
    im = ((tri == -1) * weights3).sum(-1).astype(np.uint8)        # (Np, ngroups) i-
    both = np.stack([ip, im], axis=-1)                            # [n, g, plane]
    both = both.reshape(nrb, 8, nch, _SA_G // 2, 2, 2)            # [r, row, c, b, pair, plane]
    idx = both.transpose(2, 0, 3, 1, 4, 5)                        # [c, r, b, row, pair, plane]
    return TernarySignAddWeights(np.ascontiguousarray(idx).reshape(-1), N, K)


def gemm_signadd_f32_ref(x: np.ndarray, weights: TernarySignAddWeights) -> np.ndarray:
    """Ternary weights x float activations with additions only (table look-up, BiQGEMM).

    For each group g of 3 inputs, T_g[i] = sum of x[3g + t] over the set bits t of i
    (8 subset sums, 7 additions). Then, with w = w+ - w-:

        y[m, n] = sum_g T_g[i+(n, g)] - T_g[i-(n, g)]      (BiQGEMM, Jeon et al. 2020; docs/kernels.md)

    which equals sum_k x[m, k] W[n, k]. Computed here in float64, returned as float32.
    x must be finite, as for gemm_signadd_f32 (docs/kernels.md, "Non-finite input").
    """
    _check_finite("x", x)
    ip, im = weights._planes()                                    # (Np, G) each
    G = ip.shape[1]
    xp = np.zeros((x.shape[0], 3 * G))
    xp[:, :weights.K] = x
    xg = xp.reshape(x.shape[0], G, 3)                             # (M, G, 3)
    subsets = ((np.arange(8)[:, None] >> np.arange(3)) & 1) == 1  # (8, 3): the bits of i
    T = np.where(subsets, xg[:, :, None, :], 0.0).sum(axis=-1)   # (M, G, 8): select, then add
    g = np.arange(G)
    out = np.empty((x.shape[0], weights.N), dtype=np.float32)
    for m in range(x.shape[0]):
        y = T[m, g, ip].sum(axis=1) - T[m, g, im].sum(axis=1)     # (Np,)
        out[m] = y[:weights.N]
    return out


def gemm_signadd_f32(x: np.ndarray, weights: TernarySignAddWeights, *,
                     threads: int = 1) -> np.ndarray:
    """float32 activations (M, K) x prepared ternary weights -> (M, N) float32, sign-add only.

    Aimed at batch-1 decoding (M = 1); rows are processed one after the other. M = 0 and
    N = 0 give an empty result. x must be finite: NaN, inf and -inf are refused with a
    ValueError (docs/kernels.md, "Non-finite input"). See gemm_signadd_f32_ref for the equation.
    """
    _check_prepared(x, weights, TernarySignAddWeights, np.float32, "prepare_signadd")
    threads = _check_threads(threads)
    if kernels._core is None:
        return gemm_signadd_f32_ref(x, weights)
    out = np.empty((x.shape[0], weights.N), dtype=np.float32)
    kernels._core.signadd_f32(x, weights.idx, weights.N, out, threads)
    return out


def gemv_ternary_f32(x: np.ndarray, weights: TernarySignAddWeights, *,
                     threads: int = 1) -> np.ndarray:
    """One float32 activation vector (K,) x prepared ternary weights -> (N,) float32."""
    if not isinstance(x, np.ndarray) or x.ndim != 1:
        raise ValueError("x must be a 1-D numpy array (K,)")
    return gemm_signadd_f32(x[None, :], weights, threads=threads)[0]
