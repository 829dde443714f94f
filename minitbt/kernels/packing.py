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

Every packer returns a ``PackedBits``: the uint64 words, plus the K they hold (``.K``), which
the kernels compare with their K argument (a K past the last value but in the same word does
not show in the zero padding). Float input to ``pack_bits`` and ``pack_signs`` must be finite
(docs/kernels.md, "Non-finite input").

(The ternary x int8 and ternary x float32 kernels have layouts of their own, built by
``prepare_ternary_int8`` and ``prepare_signadd``: int8.py, signadd.py.)
"""
from __future__ import annotations

import numpy as np

from minitbt.kernels._checks import _check_finite


class PackedBits(np.ndarray):
    """A packed uint64 array that remembers the K it was packed with, as ``.K``.

    Views and copies that keep the last axis (rows, planes: ``a[None]``, ``t[0]``, ``a[:2]``)
    keep K; one that cuts the words (``a[:, :1]``) has ``K = None``, and so has any plain
    array (``np.asarray(a)``): then only the words and the padding are checked. Arithmetic
    (``a ^ w``, ``np.bitwise_count(a)``) gives plain arrays.
    """
    K = None

    def __array_finalize__(self, obj):
        if getattr(obj, "K", None) is not None and obj.shape[-1:] == self.shape[-1:]:
            self.K = obj.K

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        def plain(a):
            return a.view(np.ndarray) if isinstance(a, PackedBits) else a
        if "out" in kwargs:
            kwargs["out"] = tuple(plain(o) for o in kwargs["out"])
        return getattr(ufunc, method)(*map(plain, inputs), **kwargs)


def _packed(words_array: np.ndarray, K: int) -> PackedBits:
    out = words_array.view(PackedBits)
    out.K = int(K)
    return out


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
    padded[:, :K] = _check_finite("bits", b) != 0
    as_bytes = np.packbits(padded, axis=1, bitorder="little")  # (rows, 8 W) uint8
    return _packed(np.ascontiguousarray(as_bytes).view("<u8").astype(np.uint64, copy=False), K)


def unpack_bits(packed: np.ndarray, K: int) -> np.ndarray:
    """Inverse of pack_bits: (..., W) uint64 -> (..., K) uint8 in {0, 1}."""
    p = np.ascontiguousarray(packed, dtype=np.uint64).astype("<u8", copy=False)
    bits = np.unpackbits(p.view(np.uint8), axis=-1, bitorder="little")
    return bits[..., :K]


def pack_signs(x) -> np.ndarray:
    """Pack the signs of a (rows, K) array: bit 1 where x < 0 (the value -1), else 0 (+1)."""
    return pack_bits(_check_finite("x", np.asarray(x)) < 0)


def pack_ternary(codes) -> np.ndarray:
    """Pack (rows, K) ternary codes in {-1, 0, 1} as planes (2, rows, W) = [plus, minus].

    ``w = plus - minus``; unpack with ``plus, minus = pack_ternary(codes)``.
    """
    c = _check_codes("codes", codes, (-1, 0, 1))
    return _packed(np.stack([pack_bits(c > 0), pack_bits(c < 0)]), c.shape[1])


def pack_bitplanes(codes, k: int) -> np.ndarray:
    """Pack (rows, K) unsigned k-bit codes (0 <= code < 2^k) as planes (k, rows, W).

    Plane j holds bit j of every code: ``code = sum_j 2^j plane_j``.
    """
    if not 1 <= int(k) <= 8:
        raise ValueError(f"pack_bitplanes supports 1 to 8 bits, got k={k}")
    c = _check_codes("codes", codes, range(2 ** int(k)))
    return _packed(np.stack([pack_bits((c >> j) & 1) for j in range(int(k))]), c.shape[1])


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
