"""Bit packing: the operand layouts of the popcount kernels.

A row of K values becomes ``W = ceil(K / 64)`` uint64 words; value k is bit ``k % 64`` of
word ``k // 64`` (least significant bit first). The ``64 W - K`` padding bits are 0 in
*both* operands, so they add nothing to an AND or a XOR, and the results of the popcount
kernels are exact without any correction. Activations are ``(M, W)``, weights ``(N, W)`` (a
weight matrix keeps its ``(out_features, in_features)`` shape): K is contiguous for both, and
every kernel returns ``(M, N) = activations @ weights.T``.

* sign bits (``pack_signs``): bit 1 means -1, bit 0 means +1 (``x < 0``; sign(0) is +1).
* {0,1} bits (``pack_bits``): bit 1 means 1.
* ternary (``pack_ternary``): two planes stacked as ``(2, rows, W)``: ``[plus, minus]``,
  ``w = plus - minus``.
* k-bit unsigned codes (``pack_bitplanes``): planes ``(k, rows, W)``, ``a = sum_j 2^j a_j``.

(The ternary x int8 and ternary x float32 kernels have layouts of their own, built by
``prepare_ternary_int8`` and ``prepare_signadd``: int8.py, signadd.py.)
"""
from __future__ import annotations

import numpy as np


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
