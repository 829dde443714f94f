"""Popcount GEMMs: {-1,+1}, {0,1}, k-bit and ternary operands packed as bits (packing.py).

The references ``gemm_*_ref`` are the specification, with the identity each kernel uses in
its docstring (docs/kernels.md section 1); the public functions validate their inputs and run one
compiled loop, ``_core.popc_gemm``, with a small coefficient table per kernel (``_coef``;
docs/kernels.md section 4.1), or the reference when ``kernels._core`` is None.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from minitbt import kernels                     # kernels._core: the one switch, read at call time
from minitbt.kernels._checks import _check_int32, _check_K, _check_packed, _check_threads

# --------------------------------------------------------------------------- references

def _popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of every uint64 (np.bitwise_count, or a byte table on NumPy < 2)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    b = np.ascontiguousarray(x, dtype="<u8").view(np.uint8).reshape(*x.shape, 8)
    return table[b].sum(axis=-1, dtype=np.uint8)


def _popc_pairs(a: np.ndarray, b: np.ndarray, op) -> np.ndarray:
    """C[m, n] = sum_w popcount(op(a[m, w], b[n, w])) as int64 (M, N), in row chunks."""
    M, W = a.shape
    N = b.shape[0]
    out = np.empty((M, N), dtype=np.int64)
    step = max(1, (1 << 22) // max(1, N * W))       # bound the (step, N, W) temporary
    for m0 in range(0, M, step):
        both = op(a[m0:m0 + step, None, :], b[None, :, :])          # (step, N, W)
        out[m0:m0 + step] = _popcount(both).sum(axis=-1, dtype=np.int64)
    return out


def gemm_xnor_ref(a: np.ndarray, w: np.ndarray, K: int) -> np.ndarray:
    """W1A1: a, w in {-1, +1}^K as sign bits (1 = -1).

        a . w = K - 2 * popcount(a XOR w)               (docs/kernels.md section 1)

    Equal signs contribute +1, different signs -1, and XOR marks the differing ones;
    padding bits are 0 in both operands, so their XOR is 0 and adds nothing.
    In C: ``tbt_xnor_dot`` in minitbt/_popcount.h is this line for one output; the compiled
    GEMM is ``tbt_popc_gemm`` with op XOR, coef [[-2]] and bias K (``_coef`` below).
    """
    return (K - 2 * _popc_pairs(a, w, np.bitwise_xor)).astype(np.int32)


def gemm_and_pm1_ref(a: np.ndarray, w: np.ndarray, K: int) -> np.ndarray:
    """Two-set binary (BiT): a in {0, 1}^K as bits, w in {-1, +1}^K as sign bits (1 = -1).

        a . w = 2 * popcount(a AND w+) - popcount(a)     (docs/kernels.md section 1)
              = popcount(a) - 2 * popcount(a AND w-)

    with w+ the bits where w = +1 and w- (the stored sign bits) where w = -1: every active
    input contributes +1, minus 2 for each one that meets a -1. K is only checked.
    """
    return gemm_bitplane_pm1_ref(a[None], w, K)


def gemm_bitplane_ref(a_planes: np.ndarray, w_ternary: np.ndarray, K: int) -> np.ndarray:
    """Unsigned k-bit activations x ternary weights (W2A2, W2A8-as-planes, ...).

    a = sum_j 2^j a_j (planes ``(k, M, W)``), w = w+ - w- (``(2, N, W)`` from pack_ternary):

        a . w = sum_j 2^j (popcount(a_j AND w+) - popcount(a_j AND w-))   (docs/kernels.md section 1)
    """
    w_plus, w_minus = w_ternary
    out = np.zeros((a_planes.shape[1], w_plus.shape[0]), dtype=np.int64)
    for j, a_j in enumerate(a_planes):
        out += (2 ** j) * (_popc_pairs(a_j, w_plus, np.bitwise_and)
                           - _popc_pairs(a_j, w_minus, np.bitwise_and))
    return out.astype(np.int32)


def gemm_bitplane_pm1_ref(a_planes: np.ndarray, w_signs: np.ndarray, K: int) -> np.ndarray:
    """Unsigned k-bit activations x binary weights (W1A2, ...): planes ``(k, M, W)``, sign bits.

        a . w = sum_j 2^j (popcount(a_j) - 2 * popcount(a_j AND w-))

    (the two-set identity of gemm_and_pm1_ref applied to every plane).
    """
    out = np.zeros((a_planes.shape[1], w_signs.shape[0]), dtype=np.int64)
    for j, a_j in enumerate(a_planes):
        ones = _popcount(a_j).sum(axis=-1, dtype=np.int64)            # popcount(a_j) per row
        out += (2 ** j) * (ones[:, None] - 2 * _popc_pairs(a_j, w_signs, np.bitwise_and))
    return out.astype(np.int32)


def gemm_ternary_ternary_ref(a_ternary: np.ndarray, w_ternary: np.ndarray, K: int) -> np.ndarray:
    """Signed ternary activations (TBT's {-a, 0, a}) x ternary weights, both ``(2, rows, W)``.

        a . w = popc(a+ AND w+) + popc(a- AND w-) - popc(a+ AND w-) - popc(a- AND w+)
    """
    (ap, am), (wp, wm) = a_ternary, w_ternary
    AND = np.bitwise_and
    out = (_popc_pairs(ap, wp, AND) + _popc_pairs(am, wm, AND)
           - _popc_pairs(ap, wm, AND) - _popc_pairs(am, wp, AND))
    return out.astype(np.int32)


# --------------------------------------------------------------------------- public popcount GEMMs

@lru_cache(maxsize=None)
def _coef(kind: str, k: int = 1) -> np.ndarray:
    """coef[p, q] of each kernel (activation plane p, weight plane q), built once: the C driver
    tbt_popc_gemm (minitbt/_popcount.h) computes, on every path,
        out[m, n] = bias + row_bias[m] + sum_{p,q} coef[p, q] * popc(op(A[p, m], B[q, n]))."""
    table = {"xnor": [[-2]],                                    # K - 2 popc(a ^ w)
             "tt": [[1, -1], [-1, 1]],                          # (a+ - a-) . (w+ - w-)
             "bitplane": [[2 ** j, -(2 ** j)] for j in range(k)],   # 2^j (a_j.w+ - a_j.w-)
             "bitplane_pm1": [[-2 * 2 ** j] for j in range(k)]}     # -2^(j+1) popc(a_j & w-)
    c = np.array(table[kind], dtype=np.int32)
    c.flags.writeable = False
    return c


def _popc_gemm(A, B, op, coef, row_bias, bias, threads):
    out = np.empty((A.shape[1], B.shape[1]), dtype=np.int32)
    kernels._core.popc_gemm(A, B, op, coef, row_bias, int(bias), out, threads)
    return out


def gemm_xnor(a: np.ndarray, w: np.ndarray, K: int, *, threads: int = 1) -> np.ndarray:
    """W1A1 GEMM, (M, N) int32 = a @ w.T for a (M, W), w (N, W) sign bits. See gemm_xnor_ref."""
    K = _check_K(K)
    _check_packed("a", a, 2, K), _check_packed("w", w, 2, K)
    _check_int32(K, 1)                                            # |a . w| <= K
    threads = _check_threads(threads)
    if kernels._core is None:
        return gemm_xnor_ref(a, w, K)
    return _popc_gemm(a[None], w[None], kernels._core.OP_XOR, _coef("xnor"), None, K, threads)


def gemm_and_pm1(a: np.ndarray, w: np.ndarray, K: int, *, threads: int = 1) -> np.ndarray:
    """{0,1} activations (M, W) x sign-bit weights (N, W) -> (M, N) int32. See gemm_and_pm1_ref."""
    K = _check_K(K)
    _check_packed("a", a, 2, K), _check_packed("w", w, 2, K)
    return gemm_bitplane_pm1(a[None], w, K, threads=threads)


def _check_planes(a_planes, K):
    """k = 1..8 planes of K bits; |a . w| <= (2^k - 1) K must fit int32 (_check_int32)."""
    _check_packed("a_planes", a_planes, 3, K)
    if not 1 <= a_planes.shape[0] <= 8:
        raise ValueError(f"a_planes must hold 1 to 8 bit planes, got {a_planes.shape[0]}")
    _check_int32(K, 2 ** a_planes.shape[0] - 1)


def _check_ternary(name, t, K):
    _check_packed(name, t, 3, K)
    if t.shape[0] != 2:
        raise ValueError(f"{name} must be (2, rows, W) = [plus, minus] from pack_ternary, "
                         f"got shape {t.shape}")


def gemm_bitplane(a_planes: np.ndarray, w_ternary: np.ndarray, K: int, *,
                  threads: int = 1) -> np.ndarray:
    """k-bit unsigned activations (k, M, W) x ternary weights (2, N, W) -> (M, N) int32.

    See gemm_bitplane_ref for the equation.
    """
    K = _check_K(K)
    _check_planes(a_planes, K), _check_ternary("w_ternary", w_ternary, K)
    threads = _check_threads(threads)
    if kernels._core is None:
        return gemm_bitplane_ref(a_planes, w_ternary, K)
    coef = _coef("bitplane", a_planes.shape[0])
    return _popc_gemm(a_planes, w_ternary, kernels._core.OP_AND, coef, None, 0, threads)


def gemm_bitplane_pm1(a_planes: np.ndarray, w_signs: np.ndarray, K: int, *,
                      threads: int = 1) -> np.ndarray:
    """k-bit unsigned activations (k, M, W) x binary sign-bit weights (N, W) -> (M, N) int32.

    See gemm_bitplane_pm1_ref for the equation.
    """
    K = _check_K(K)
    _check_planes(a_planes, K), _check_packed("w_signs", w_signs, 2, K)
    threads = _check_threads(threads)
    if kernels._core is None:
        return gemm_bitplane_pm1_ref(a_planes, w_signs, K)
    k, M = a_planes.shape[:2]
    coef = _coef("bitplane_pm1", k)
    ones = np.empty(M, dtype=np.int32)
    kernels._core.row_popc(a_planes, _coef("bitplane", k)[:, 0].copy(), ones)   # sum_j 2^j popc(a_j)
    return _popc_gemm(a_planes, w_signs[None], kernels._core.OP_AND, coef, ones, 0, threads)


def gemm_ternary_ternary(a_ternary: np.ndarray, w_ternary: np.ndarray, K: int, *,
                         threads: int = 1) -> np.ndarray:
    """Ternary activations (2, M, W) x ternary weights (2, N, W) -> (M, N) int32.

    See gemm_ternary_ternary_ref for the equation.
    """
    K = _check_K(K)
    _check_ternary("a_ternary", a_ternary, K), _check_ternary("w_ternary", w_ternary, K)
    _check_int32(K, 1)                                            # |a . w| <= K
    threads = _check_threads(threads)
    if kernels._core is None:
        return gemm_ternary_ternary_ref(a_ternary, w_ternary, K)
    return _popc_gemm(a_ternary, w_ternary, kernels._core.OP_AND, _coef("tt"), None, 0, threads)
