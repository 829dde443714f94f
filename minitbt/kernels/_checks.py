"""Input validation of the public kernels: dtype, C-contiguity, shapes, the K padding rule.

Every check raises a TypeError or ValueError that names the argument and the problem, before
any compiled code sees the array (the C kernels trust their inputs).
"""
from __future__ import annotations

import numpy as np

from minitbt.kernels.packing import words


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


def _check_prepared(x, weights, kind, dtype, maker: str) -> None:
    """Activations x (M, K) of ``dtype`` against weights prepared by ``maker`` (a ``kind``)."""
    if not isinstance(weights, kind):
        raise TypeError(f"weights must come from {maker}(codes)")
    _check_array("x", x, dtype, 2)
    if x.shape[1] != weights.K:
        raise ValueError(f"x has K={x.shape[1]} columns but the weights have K={weights.K}")


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
