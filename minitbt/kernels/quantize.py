"""Per-row signed min-max quantization of float32 activations into int8 codes.

The codes the ternary x int8 kernel reads (W2A8 / W1A8). ``MinMaxQuantizer.codes`` (SymmetricA8,
PerTokenAbsMax, signed k-bit min-max per token) calls ``quantize_rows_i8`` on float32 input: one
compiled call for what takes about ten NumPy calls, with the same float32 operations, so the
same codes (tests/test_kernels.py checks the compiled kernel against the reference bit for bit).
"""
from __future__ import annotations

import numpy as np

from minitbt import kernels                     # kernels._core: the one switch, read at call time
from minitbt.kernels._checks import _check_array, _check_finite

TINY = np.finfo(np.float32).smallest_subnormal   # the smallest scale (a row of zeros gets it)


def quantize_rows_i8_ref(x: np.ndarray, qp: float, clip: float = None, tol: float = 0.0):
    """(codes (M, K) int8, scale (M, 1) float32) of x (M, K) float32, each row on its own:

        X_c = clip(X, -c, c)                      (no clip when c is None)
        a   = max(max_k |X_c| / Qp, tiny)         (tiny = smallest float32 subnormal)
        u   = X_c / a;  b = floor(u) + 1/2;  u <- b where |u - b| < tol   (a near-tie snapped onto it)
        code = rint(u)                            (half to even; |u| <= Qp <= 127 by construction of a)

    ``tol`` is the tie window (quant/base.py, round_ties); every operation is in float32.
    Where every |x| is 0 the codes are 0 and the scale is ``tiny``."""
    f = np.float32
    xc = x if clip is None else np.minimum(np.maximum(x, f(-clip)), f(clip))
    a = np.maximum(np.abs(xc).max(axis=1, keepdims=True) / f(qp), TINY)
    u = xc / a
    b = np.floor(u) + f(0.5)
    u = np.where(np.abs(u - b) < f(tol), b, u)
    return np.rint(u).astype(np.int8), a


def quantize_rows_i8(x: np.ndarray, qp: float, clip: float = None, tol: float = 0.0):
    """x (M, K) float32, C-contiguous and finite -> (codes (M, K) int8, scale (M, 1) float32);
    see quantize_rows_i8_ref for the equations. Qp must be in [1, 127] (the codes are int8)."""
    _check_array("x", x, np.float32, 2)
    _check_finite("x", x)                      # the C would turn NaN into an arbitrary code
    if x.shape[1] < 1:
        raise ValueError("x must have K >= 1 columns")
    if not 1 <= qp <= 127:
        raise ValueError(f"qp must be in [1, 127] for int8 codes, got {qp}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    if kernels._core is None:
        return quantize_rows_i8_ref(x, qp, clip, tol)
    codes = np.empty(x.shape, dtype=np.int8)
    scale = np.empty((x.shape[0], 1), dtype=np.float32)
    kernels._core.quantize_rows_i8(x, -1.0 if clip is None else float(clip), float(qp), float(tol), float(TINY),
                                   codes, scale)
    return codes, scale


FAKE_QUANT_MODES = ("levels", "plus", "zero")   # k levels; signed binary with sign(0) = +1; with 0 kept at 0


def fake_quantize_ref(x: np.ndarray, a, lo: int, qp: int, mode: str = "levels"):
    """The training forward of a learned-scale activation quantizer (quant.activation.ElasticQuantizer):
    (q, dq/da, inside) for x of any shape, scale a > 0 (a scalar or a size-1 array):

        u = x / a
        "levels":  q = clip(round_ties(u, Qp), lo, Qp);  inside = lo < u < Qp;  dq/da = q - u inside, q outside
        "plus":    q = sign_ties(u) in {-1, +1};  inside = |u| < 1;  dq/da = q            (signed binary)
        "zero":    q = sign_ties(u, zero=True) in {-1, 0, +1}; inside and dq/da as "plus"

    dq/da is the LSQ form (Esser et al., ICLR 2020; quant/scale.py). The fake-quantized value is
    q * a (+ the quantizer's offset). Any float dtype; the result keeps it."""
    from minitbt.quant.base import round_ties, sign_ties     # here: importing kernels loads no quant
    u = x / a
    if mode == "levels":
        q = np.clip(round_ties(u, qp), lo, qp)
        inside = (u > lo) & (u < qp)
        return q, np.where(inside, q - u, q), inside
    q = sign_ties(u, zero=mode == "zero")
    return q, q, np.abs(u) < 1


def fake_quantize(x: np.ndarray, a, lo: int, qp: int, mode: str = "levels"):
    """fake_quantize_ref's result, from one compiled pass where x is float32 (any shape; a copy is
    made if it is not C-contiguous) and the kernel path is AVX2 or AVX-512: bit for bit the same
    values (tests/test_kernels.py). Elsewhere the reference runs: other dtypes (float64 in the
    gradient checks), the portable path (scalar C is no faster than NumPy here), no extension.
    No finiteness check: this is the training forward, where a NaN stays a NaN as in NumPy."""
    if mode not in FAKE_QUANT_MODES:
        raise ValueError(f"mode must be one of {FAKE_QUANT_MODES}, got {mode!r}")
    a32 = np.asarray(a)
    if (kernels._core is None or kernels._core.kernel_path() == "portable" or x.dtype != np.float32
            or a32.dtype != np.float32 or a32.size != 1):
        return fake_quantize_ref(x, a, lo, qp, mode)
    x = np.ascontiguousarray(x)
    q, dqda = np.empty_like(x), np.empty_like(x)
    inside = np.empty(x.shape, dtype=np.bool_)
    if not kernels._core.fake_quant_f32(x, float(a32.reshape(())), float(lo), float(qp),
                                        FAKE_QUANT_MODES.index(mode), q, dqda, inside.view(np.uint8)):
        return fake_quantize_ref(x, a, lo, qp, mode)
    return q, dqda, inside
