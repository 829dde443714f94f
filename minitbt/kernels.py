"""Multiplication-free kernels: the Python face of ``minitbt._core`` and their specification.

Every kernel here comes twice:

* ``<name>_ref`` -- a pure-NumPy reference. It *is* the specification: short, readable,
  with the equation in its docstring (METHODS.md section 7; docs/kernels.md).
* ``<name>`` -- the public function. It validates its inputs (dtype, C-contiguity, shapes,
  the K padding rule), then runs the compiled kernel from ``minitbt._core`` if it was built,
  else the reference. Both give the same integers (float kernels: the same sums up to
  rounding, because the order of the additions differs).

Bit layout (all popcount kernels)
---------------------------------
A row of K values becomes ``W = ceil(K / 64)`` uint64 words; value k is bit ``k % 64`` of
word ``k // 64`` (least significant bit first). The ``64 W - K`` padding bits are 0 in
*both* operands, so they add nothing to an AND or a XOR, and the results below are exact
without any correction. Activations are ``(M, W)``, weights ``(N, W)`` (a weight matrix keeps
its ``(out_features, in_features)`` shape): K is contiguous for both, and every kernel
returns ``(M, N) = activations @ weights.T``.

* sign bits (``pack_signs``): bit 1 means -1, bit 0 means +1 (``x < 0``; sign(0) is +1).
* {0,1} bits (``pack_bits``): bit 1 means 1.
* ternary (``pack_ternary``): two planes stacked as ``(2, rows, W)``: ``[plus, minus]``,
  ``w = plus - minus``.
* k-bit unsigned codes (``pack_bitplanes``): planes ``(k, rows, W)``, ``a = sum_j 2^j a_j``.

Scales, offsets (centring) and zero-points stay outside: these kernels compute the
integer (or sign-add) inner products only, as in METHODS.md section 7.

``MINITBT_NO_EXT=1`` forces the NumPy path; ``HAVE_EXT`` tells which path is active.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "HAVE_EXT", "words", "pack_bits", "unpack_bits", "pack_signs", "pack_ternary",
    "pack_bitplanes",
    "gemm_xnor", "gemm_and_pm1", "gemm_bitplane", "gemm_bitplane_pm1", "gemm_ternary_ternary",
    "TernaryInt8Weights", "prepare_ternary_int8", "gemm_ternary_int8",
    "TernarySignAddWeights", "prepare_signadd", "gemm_signadd_f32", "gemv_ternary_f32",
    "gemm_xnor_ref", "gemm_and_pm1_ref", "gemm_bitplane_ref", "gemm_bitplane_pm1_ref",
    "gemm_ternary_ternary_ref", "gemm_ternary_int8_ref", "gemm_signadd_f32_ref",
]


def _load_core():
    """The compiled module, or None and the reason it is missing."""
    if os.environ.get("MINITBT_NO_EXT", "0") == "1":
        return None, "MINITBT_NO_EXT=1 is set"
    try:
        from minitbt import _core as core
    except ImportError as exc:
        return None, f"minitbt._core could not be imported ({exc})"
    if not hasattr(core, "popc_gemm"):  # a stale build of an older _core.pyx
        return None, "minitbt._core is out of date (rebuild with `pip install -e .`)"
    return core, ""


_core, _why = _load_core()
HAVE_EXT = _core is not None
if not HAVE_EXT:
    warnings.warn(f"minitbt.kernels: {_why}; using the NumPy reference kernels (correct, slow).",
                  RuntimeWarning, stacklevel=2)


# --------------------------------------------------------------------------- packing

def words(K: int) -> int:
    """Number of uint64 words that hold K bits: ceil(K / 64)."""
    return (int(K) + 63) // 64


def pack_bits(bits) -> np.ndarray:
    """Pack a (rows, K) array of {0, 1} (any nonzero counts as 1) into (rows, ceil(K/64)) uint64.

    Value k goes to bit k % 64 of word k // 64; the padding bits past K are 0.
    """
    b = np.asarray(bits)
    if b.ndim != 2:
        raise ValueError(f"pack_bits expects a 2-D (rows, K) array, got shape {b.shape}")
    rows, K = b.shape
    W = words(K)
    padded = np.zeros((rows, 64 * W), dtype=bool)          # (rows, 64 W): zeros past K
    padded[:, :K] = b != 0
    as_bytes = np.packbits(padded, axis=1, bitorder="little")  # (rows, 8 W) uint8
    return np.ascontiguousarray(as_bytes).view("<u8").astype(np.uint64, copy=False)


def unpack_bits(packed: np.ndarray, K: int) -> np.ndarray:
    """Inverse of pack_bits: (..., W) uint64 -> (..., K) uint8 in {0, 1}."""
    p = np.ascontiguousarray(packed, dtype=np.uint64).astype("<u8", copy=False)
    bits = np.unpackbits(p.view(np.uint8), axis=-1, bitorder="little")
    return bits[..., :K]


def pack_signs(x) -> np.ndarray:
    """Pack the signs of a (rows, K) array: bit 1 where x < 0 (the value -1), else 0 (+1)."""
    return pack_bits(np.asarray(x) < 0)


def pack_ternary(codes) -> np.ndarray:
    """Pack (rows, K) ternary codes in {-1, 0, 1} as planes (2, rows, W) = [plus, minus].

    ``w = plus - minus``; unpack with ``plus, minus = pack_ternary(codes)``.
    """
    c = _check_codes("codes", codes, (-1, 0, 1))
    return np.stack([pack_bits(c > 0), pack_bits(c < 0)])


def pack_bitplanes(codes, k: int) -> np.ndarray:
    """Pack (rows, K) unsigned k-bit codes (0 <= code < 2^k) as planes (k, rows, W).

    Plane j holds bit j of every code: ``code = sum_j 2^j plane_j``.
    """
    if not 1 <= int(k) <= 8:
        raise ValueError(f"pack_bitplanes supports 1 to 8 bits, got k={k}")
    c = _check_codes("codes", codes, range(2 ** int(k)))
    return np.stack([pack_bits((c >> j) & 1) for j in range(int(k))])


def _check_codes(name, codes, allowed) -> np.ndarray:
    c = np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, K), got shape {c.shape}")
    if not (np.issubdtype(c.dtype, np.integer) or c.dtype == bool):
        raise TypeError(f"{name} must hold integers, got dtype {c.dtype}")
    c = c.astype(np.int64)
    lo, hi = min(allowed), max(allowed)
    if c.size and (c.min() < lo or c.max() > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got values in [{c.min()}, {c.max()}]")
    return c


# --------------------------------------------------------------------------- validation

def _check_threads(threads) -> int:
    if not isinstance(threads, (int, np.integer)) or int(threads) < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    return int(threads)


def _check_array(name, arr, dtype, ndim):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous; pass np.ascontiguousarray({name})")
    return arr


def _check_packed(name, arr, ndim, K):
    """uint64, C-contiguous, `ndim`-D, ceil(K/64) words, padding bits past K equal to 0."""
    _check_array(name, arr, np.uint64, ndim)
    if arr.shape[-1] != words(K):
        raise ValueError(f"{name} has {arr.shape[-1]} words per row but K={K} needs "
                         f"ceil(K/64)={words(K)}: was it packed with the same K?")
    if K % 64 and arr.size and np.any(arr[..., -1] >> np.uint64(K % 64)):
        raise ValueError(f"{name} has nonzero padding bits past K={K}; "
                         "pack with minitbt.kernels.pack_bits (padding must be 0)")
    return arr


def _check_K(K):
    if not isinstance(K, (int, np.integer)) or int(K) < 1:
        raise ValueError(f"K must be a positive integer, got {K!r}")
    return int(K)


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

        a . w = K - 2 * popcount(a XOR w)               (METHODS.md section 7)

    Equal signs contribute +1, different signs -1, and XOR marks the differing ones;
    padding bits are 0 in both operands, so their XOR is 0 and adds nothing.
    """
    return (K - 2 * _popc_pairs(a, w, np.bitwise_xor)).astype(np.int32)


def gemm_and_pm1_ref(a: np.ndarray, w: np.ndarray, K: int) -> np.ndarray:
    """Two-set binary (BiT): a in {0, 1}^K as bits, w in {-1, +1}^K as sign bits (1 = -1).

        a . w = 2 * popcount(a AND w+) - popcount(a)     (METHODS.md section 7)
              = popcount(a) - 2 * popcount(a AND w-)

    with w+ the bits where w = +1 and w- (the stored sign bits) where w = -1: every active
    input contributes +1, minus 2 for each one that meets a -1. K is only checked.
    """
    return gemm_bitplane_pm1_ref(a[None], w, K)


def gemm_bitplane_ref(a_planes: np.ndarray, w_ternary: np.ndarray, K: int) -> np.ndarray:
    """Unsigned k-bit activations x ternary weights (W2A2, W2A8-as-planes, ...).

    a = sum_j 2^j a_j (planes ``(k, M, W)``), w = w+ - w- (``(2, N, W)`` from pack_ternary):

        a . w = sum_j 2^j (popcount(a_j AND w+) - popcount(a_j AND w-))   (METHODS.md section 7)
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
    """coef[p, q] of each kernel (activation plane p, weight plane q), built once."""
    table = {"xnor": [[-2]],                                    # K - 2 popc(a ^ w)
             "tt": [[1, -1], [-1, 1]],                          # (a+ - a-) . (w+ - w-)
             "bitplane": [[2 ** j, -(2 ** j)] for j in range(k)],   # 2^j (a_j.w+ - a_j.w-)
             "bitplane_pm1": [[-2 * 2 ** j] for j in range(k)]}     # -2^(j+1) popc(a_j & w-)
    c = np.array(table[kind], dtype=np.int32)
    c.flags.writeable = False
    return c


def _popc_gemm(A, B, op, coef, row_bias, bias, threads):
    out = np.empty((A.shape[1], B.shape[1]), dtype=np.int32)
    _core.popc_gemm(A, B, op, coef, row_bias, int(bias), out, threads)
    return out


def gemm_xnor(a: np.ndarray, w: np.ndarray, K: int, *, threads: int = 1) -> np.ndarray:
    """W1A1 GEMM, (M, N) int32 = a @ w.T for a (M, W), w (N, W) sign bits. See gemm_xnor_ref."""
    K = _check_K(K)
    _check_packed("a", a, 2, K), _check_packed("w", w, 2, K)
    threads = _check_threads(threads)
    if _core is None:
        return gemm_xnor_ref(a, w, K)
    return _popc_gemm(a[None], w[None], _core.OP_XOR, _coef("xnor"), None, K, threads)


def gemm_and_pm1(a: np.ndarray, w: np.ndarray, K: int, *, threads: int = 1) -> np.ndarray:
    """{0,1} activations (M, W) x sign-bit weights (N, W) -> (M, N) int32. See gemm_and_pm1_ref."""
    K = _check_K(K)
    _check_packed("a", a, 2, K), _check_packed("w", w, 2, K)
    return gemm_bitplane_pm1(a[None], w, K, threads=threads)


def _check_planes(a_planes, K):
    _check_packed("a_planes", a_planes, 3, K)
    if not 1 <= a_planes.shape[0] <= 8:
        raise ValueError(f"a_planes must hold 1 to 8 bit planes, got {a_planes.shape[0]}")


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
    if _core is None:
        return gemm_bitplane_ref(a_planes, w_ternary, K)
    coef = _coef("bitplane", a_planes.shape[0])
    return _popc_gemm(a_planes, w_ternary, _core.OP_AND, coef, None, 0, threads)


def gemm_bitplane_pm1(a_planes: np.ndarray, w_signs: np.ndarray, K: int, *,
                      threads: int = 1) -> np.ndarray:
    """k-bit unsigned activations (k, M, W) x binary sign-bit weights (N, W) -> (M, N) int32.

    See gemm_bitplane_pm1_ref for the equation.
    """
    K = _check_K(K)
    _check_planes(a_planes, K), _check_packed("w_signs", w_signs, 2, K)
    threads = _check_threads(threads)
    if _core is None:
        return gemm_bitplane_pm1_ref(a_planes, w_signs, K)
    k, M = a_planes.shape[:2]
    coef = _coef("bitplane_pm1", k)
    ones = np.empty(M, dtype=np.int32)
    _core.row_popc(a_planes, _coef("bitplane", k)[:, 0].copy(), ones)   # sum_j 2^j popc(a_j)
    return _popc_gemm(a_planes, w_signs[None], _core.OP_AND, coef, ones, 0, threads)


def gemm_ternary_ternary(a_ternary: np.ndarray, w_ternary: np.ndarray, K: int, *,
                         threads: int = 1) -> np.ndarray:
    """Ternary activations (2, M, W) x ternary weights (2, N, W) -> (M, N) int32.

    See gemm_ternary_ternary_ref for the equation.
    """
    K = _check_K(K)
    _check_ternary("a_ternary", a_ternary, K), _check_ternary("w_ternary", w_ternary, K)
    threads = _check_threads(threads)
    if _core is None:
        return gemm_ternary_ternary_ref(a_ternary, w_ternary, K)
    return _popc_gemm(a_ternary, w_ternary, _core.OP_AND, _coef("tt"), None, 0, threads)


# --------------------------------------------------------------------------- ternary x int8

@dataclass(frozen=True, eq=False)
class TernaryInt8Weights:
    """Ternary (or binary) weights (N, K) prepared once for gemm_ternary_int8.

    Two layouts of the same codes (docs/kernels.md; minitbt/_bitops.h section 2):

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

        y[m, n] = sum_k x[m, k] * W[n, k]        (BitNet b1.58, METHODS.md section 6)

    W holds only -1, 0, +1, so each term is +x, 0 or -x: no multiplication is needed.
    """
    return (x.astype(np.int64) @ weights.codes().T.astype(np.int64)).astype(np.int32)


def gemm_ternary_int8(x: np.ndarray, weights: TernaryInt8Weights, *,
                      threads: int = 1) -> np.ndarray:
    """int8 activations (M, K) x prepared ternary weights -> (M, N) int32 (exact).

    One or two rows (decoding) use the 2-bit layout; more rows use the int8 layout.
    See gemm_ternary_int8_ref for the equation.
    """
    if not isinstance(weights, TernaryInt8Weights):
        raise TypeError("weights must come from prepare_ternary_int8(codes)")
    _check_array("x", x, np.int8, 2)
    if x.shape[1] != weights.K:
        raise ValueError(f"x has K={x.shape[1]} columns but the weights have K={weights.K}")
    threads = _check_threads(threads)
    if _core is None:
        return gemm_ternary_int8_ref(x, weights)
    M, N = x.shape[0], weights.N
    out = np.empty((M, N), dtype=np.int32)
    if M <= 2:                                   # one row at a time, 2-bit weights
        _core.gemv_ternary_i2(x, weights.w_i2, N, out, threads)
    else:
        _core.gemm_ternary_i8(x, weights.w_i8, weights.w_sum, N, out, threads)
    return out


# --------------------------------------------------------------------------- ternary x float32

_SA_G = 6              # groups of 3 inputs per chunk (must match TBT_SA_G in _bitops.h)
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
        nch, nrb = -(-self.K // _SA_CHUNK), -(-self.N // 8)
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

        y[m, n] = sum_g T_g[i+(n, g)] - T_g[i-(n, g)]      (METHODS.md section 5)

    which equals sum_k x[m, k] W[n, k]. Computed here in float64, returned as float32.
    """
    ip, im = weights._planes()                                    # (Np, G) each
    G = ip.shape[1]
    xp = np.zeros((x.shape[0], 3 * G))
    xp[:, :weights.K] = x
    xg = xp.reshape(x.shape[0], G, 3)                             # (M, G, 3)
    subsets = (np.arange(8)[:, None] >> np.arange(3)) & 1         # (8, 3): bits of i
    T = np.einsum("mgt,it->mgi", xg, subsets)                     # (M, G, 8): sums only
    g = np.arange(G)
    out = np.empty((x.shape[0], weights.N), dtype=np.float32)
    for m in range(x.shape[0]):
        y = T[m, g, ip].sum(axis=1) - T[m, g, im].sum(axis=1)     # (Np,)
        out[m] = y[:weights.N]
    return out


def gemm_signadd_f32(x: np.ndarray, weights: TernarySignAddWeights, *,
                     threads: int = 1) -> np.ndarray:
    """float32 activations (M, K) x prepared ternary weights -> (M, N) float32, sign-add only.

    Aimed at batch-1 decoding (M = 1); rows are processed one after the other.
    See gemm_signadd_f32_ref for the equation.
    """
    if not isinstance(weights, TernarySignAddWeights):
        raise TypeError("weights must come from prepare_signadd(codes)")
    _check_array("x", x, np.float32, 2)
    if x.shape[1] != weights.K:
        raise ValueError(f"x has K={x.shape[1]} columns but the weights have K={weights.K}")
    threads = _check_threads(threads)
    if _core is None:
        return gemm_signadd_f32_ref(x, weights)
    out = np.empty((x.shape[0], weights.N), dtype=np.float32)
    _core.signadd_f32(x, weights.idx, weights.N, out, threads)
    return out


def gemv_ternary_f32(x: np.ndarray, weights: TernarySignAddWeights, *,
                     threads: int = 1) -> np.ndarray:
    """One float32 activation vector (K,) x prepared ternary weights -> (N,) float32."""
    if not isinstance(x, np.ndarray) or x.ndim != 1:
        raise ValueError("x must be a 1-D numpy array (K,)")
    return gemm_signadd_f32(x[None, :], weights, threads=threads)[0]
