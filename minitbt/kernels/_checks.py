"""Input validation of the public kernels: dtype, C-contiguity, shapes, K, the int32 range,
non-finite values.

Every check raises a TypeError or ValueError that names the argument and the problem, before
any compiled code sees the array (the C kernels trust their inputs).
"""
from __future__ import annotations

import numpy as np

INT32_MAX = 2 ** 31 - 1   # the integer kernels accumulate and return int32


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


def _check_finite(name, x):
    """The one rule for non-finite input (docs/kernels.md, "Non-finite input"): a float array
    that is about to become integer codes or enter a kernel must hold no NaN, +inf or -inf;
    otherwise a ValueError that names it. Integer and bool arrays pass unchecked. Returns x."""
    if x.dtype.kind in "fc" and not np.isfinite(x).all():
        bad = ~np.isfinite(x)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} has non-finite values (NaN, inf or -inf): {int(bad.sum())} of "
                         f"{x.size}, the first at index {first}")
    return x


def _check_prepared(x, weights, kind, dtype, maker: str) -> None:
    """Activations x (M, K) of ``dtype`` against weights prepared by ``maker`` (a ``kind``);
    float activations must be finite."""
    if not isinstance(weights, kind):
        raise TypeError(f"weights must come from {maker}(codes)")
    _check_array("x", x, dtype, 2)
    if x.shape[1] != weights.K:
        raise ValueError(f"x has K={x.shape[1]} columns but the weights have K={weights.K}")
    _check_finite("x", x)


def _check_packed(name, arr, ndim, K):
    """uint64, C-contiguous, `ndim`-D, ceil(K/64) words, padding bits past K equal to 0, and,
    for an array from the packers (packing.PackedBits), the K it was packed with.

    The words and the padding catch a K in another word, or one below a set bit; a K past the
    last set bit of the same word does not show in the bits (the padding is 0), and gemm_xnor's
    result depends on K (K - 2 popc), so the packers record K and it is compared here."""
    _check_array(name, arr, np.uint64, ndim)
    W = -(-K // 64)                                   # ceil(K/64), as packing.words(K)
    if arr.shape[-1] != W:
        raise ValueError(f"{name} has {arr.shape[-1]} words per row but K={K} needs "
                         f"ceil(K/64)={W}: was it packed with the same K?")
    packed_K = getattr(arr, "K", None)
    if packed_K is not None and packed_K != K:
        raise ValueError(f"{name} was packed with K={packed_K}, but K={K} was passed")
    if K % 64 and arr.size and np.any(arr[..., -1] >> np.uint64(K % 64)):
        raise ValueError(f"{name} has nonzero padding bits past K={K}; "
                         "pack with minitbt.kernels.pack_bits (padding must be 0)")
    return arr


def _check_K(K):
    if not isinstance(K, (int, np.integer)) or int(K) < 1:
        raise ValueError(f"K must be a positive integer, got {K!r}")
    return int(K)


def _check_int32(K: int, term: int) -> None:
    """Refuse a K whose results could leave int32 (they would wrap, silently).

    An integer kernel sums K products a_k w_k, each at most ``term`` in magnitude, so

        |y| = |sum_{k<K} a_k w_k| <= term * K <= 2^31 - 1   <=>   K <= (2^31 - 1) // term

    term = 1 for {-1,0,1} or {0,1} activations x {-1,0,1} weights (xnor, two-set, ternary x
    ternary: K <= 2 147 483 647), 2^k - 1 for k-bit unsigned activations (bit planes; 8 bits:
    K <= 8 421 504), 128 for int8 activations x ternary weights (-128 * -1: K <= 16 777 215).
    Every bound is reached (all products at their extreme), so no larger K is safe. Partial
    sums inside the C may pass int32 on the way (offsets such as (x + 128) . w, the order of
    the planes), but its int32 arithmetic wraps modulo 2^32 (vector adds wrap, and Python
    builds extensions with -fwrapv), so a result within the bound comes out exact.
    """
    limit = INT32_MAX // term
    if K > limit:
        raise ValueError(f"K={K} is too large for exact int32 results: |result| <= {term} * K "
                         f"needs K <= {limit}")
