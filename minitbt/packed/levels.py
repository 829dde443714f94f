"""Fast forms of the activation quantizers' codes for the packed runtime, and small helpers.

``_levels`` evaluates the same equations as each quantizer's ``codes`` (tie snapping included)
with fewer NumPy calls; tests/test_packed.py checks them against ``codes`` and ``q(x)``
(test_fast_levels_equal_codes) and the packed model against fake quantization. Like ``codes``,
they refuse non-finite input (docs/kernels.md, "Non-finite input"): ``_levels``, ``_codes_i8``
and ``_fake_quant`` each check x once where they quantize it."""
import numpy as np

from minitbt import kernels
from minitbt.kernels._checks import _check_finite
from minitbt.quant.activation import (BiTElasticBinary, ElasticQuantizer, MinMaxQuantizer,
                                      PerChannelQuantizer)
from minitbt.quant.base import TIE_ULPS, sign_ties
from minitbt.tensor import Tensor


def _vec(a, n) -> np.ndarray:
    """A scale or offset (scalar, (n, 1) or (n,)) as a vector of length n (float32, or float64 if given)."""
    a = np.asarray(a)
    a = a.astype(np.float64 if a.dtype == np.float64 else np.float32)
    return np.broadcast_to(a.reshape(-1) if a.size > 1 else a.reshape(()), (n,)).copy()


# ---------------------------------------------------------------------------------------------
# Activation quantizers, evaluated fast (exactly their codes(): same equations, fewer calls)
# ---------------------------------------------------------------------------------------------

_CONSTS = {}
_MINMAX_QUANTIZE = MinMaxQuantizer._quantize


def _consts(q, dtype):
    """The constants of quantizer q's equations as 0-d arrays of ``dtype`` (a NumPy call with a
    0-d array is cheaper than with a Python scalar, and gives the same value):
    (clip, -clip, Qp, lo, tie window for |u| <= Qp, 1/2, smallest subnormal)."""
    clip = q.clip if isinstance(q, MinMaxQuantizer) else None
    key = (dtype, clip, q.qp, q.lo)
    if key not in _CONSTS:
        c = (lambda v: None if v is None else np.asarray(v, dtype))
        tol = (TIE_ULPS * np.finfo(dtype).eps) * np.asarray(q.qp, dtype)   # base._tie_tol for |u| <= Qp
        _CONSTS[key] = (c(clip), c(None if clip is None else -clip), c(q.qp), c(q.lo), tol, c(0.5),
                        c(np.finfo(dtype).smallest_subnormal))
    return _CONSTS[key]


def _round_levels(u, tol, half):
    """round_ties(u, Qp) computed in place in u (which the caller owns), for values that the caller
    clips to [-Qp, Qp] afterwards or that lie there already: for |u| <= Qp the tie window is the
    constant ``tol``; a larger |u| has a wider window in round_ties, but such a value ends up at
    +-Qp whichever way it rounds."""
    b = np.floor(u)
    b += half
    t = u - b
    np.abs(t, out=t)
    np.copyto(u, b, where=t < tol)                  # snap near-ties onto the half-integer
    return np.rint(u, out=u)


def _levels(q, x):
    """(levels, scale, offset) of activation quantizer ``q`` on x (..., K): levels are the
    integer codes as floats, ``levels * scale (+ offset)`` is q(x); offset None means 0.
    None when q has no fast path here (then use q.codes / q(x)).

    Covered: MinMaxQuantizer per token (SymmetricA8, PerTokenAbsMax, min-max k-bit) and an
    initialised ElasticQuantizer, with the equations of their ``_quantize``. One deviation:
    signed min-max's scale ``a = max|x|/Qp`` (1 where max|x| = 0) is taken as
    max(max|x|/Qp, smallest subnormal), one NumPy call instead of three: where max|x| = 0 all
    codes are 0 with either scale; it differs only where max|x|/Qp underflows to 0
    (all |x| < 1e-43), where the original divides by zero."""
    if isinstance(q, MinMaxQuantizer):
        if not q.per_token or (q.signed and q.precision == 1) or type(q)._quantize is not _MINMAX_QUANTIZE:
            return None
        _check_finite("x", x)
        clip, nclip, qp, lo, tol, half, sub = _consts(q, x.dtype)
        xc = x if clip is None else np.minimum(np.maximum(x, nclip), clip)
        m = np.maximum.reduce(np.abs(xc) if q.signed else xc, axis=-1, keepdims=True)
        a = np.maximum(m / qp, sub) if q.signed else np.where(m > 0, m / qp, 1).astype(x.dtype, copy=False)
        r = _round_levels(xc / a, tol, half)
        if not q.signed:                      # signed: |x/a| <= Qp by construction of a
            r = np.minimum(np.maximum(r, lo, out=r), qp, out=r)
        return r, a, None
    if type(q) is ElasticQuantizer and bool(q.initialized[0]):
        _check_finite("x", x)
        _, _, qp, lo, tol, half, _ = _consts(q, x.dtype)
        off = None
        if q.centre:
            xs = x - x.mean(axis=-1, keepdims=True)
        elif q.shift_min:
            off = np.minimum.reduce(x, axis=-1, keepdims=True)
            xs = x - off
        else:
            xs = x
        a = q._a(x)                                   # the clamped scale the forward uses
        u = xs / a
        if q.signed and q.precision == 1:
            return sign_ties(u), a, off
        r = _round_levels(u, tol, half)
        return np.minimum(np.maximum(r, lo, out=r), qp, out=r), a, off
    return None


def _codes_i8(q, x2):
    """(int8 codes (M, K), scale (M, 1)) of a signed per-token min-max quantizer (SymmetricA8,
    PerTokenAbsMax, k <= 8 bits) on a C-contiguous (M, K) float32 array, from the compiled
    ``quantize_rows_i8``: one C call for what ``_levels`` does in about ten NumPy calls, with the
    same float32 operations, so the same codes (tests/test_packed.py). None where it does not
    apply (float64, another quantizer, no compiled kernels): use ``_levels`` then."""
    core = kernels._core
    if (core is None or x2.dtype != np.float32 or not isinstance(q, MinMaxQuantizer)
            or type(q)._quantize is not _MINMAX_QUANTIZE or not (q.signed and q.per_token)
            or not 2 <= q.precision <= 8 or not hasattr(core, "quantize_rows_i8")):
        return None
    _check_finite("x", x2)                     # the C would turn NaN into an arbitrary code
    clip, _, qp, _, tol, _, tiny = _consts(q, np.float32)
    codes = np.empty(x2.shape, dtype=np.int8)
    scale = np.empty((x2.shape[0], 1), dtype=np.float32)
    core.quantize_rows_i8(x2, -1.0 if clip is None else float(clip), float(qp), float(tol), float(tiny),
                          codes, scale)
    return codes, scale


def _fake_quant(q, x):
    """q(x).data (the fake-quantized values) without building a Tensor."""
    if q is None:
        return x
    if x.flags.c_contiguous:
        ca = _codes_i8(q, x.reshape(-1, x.shape[-1]))
        if ca is not None:
            codes, scale = ca
            return (codes * scale).reshape(x.shape)          # int8 * float32 -> float32 = levels * a
    lv = _levels(q, x)
    if lv is None:                            # no fast path (and so no check yet)
        return q(Tensor(_check_finite("x", x))).data
    r, a, off = lv
    y = r * a
    if off is not None:
        y += off
    return y


def _same_quantizer(qs) -> bool:
    """True when all quantizers in qs are stateless min-max quantizers with the same settings."""
    first = qs[0]
    if not isinstance(first, MinMaxQuantizer) or type(first)._quantize is not _MINMAX_QUANTIZE:
        return False
    key = (type(first), first.precision, first.signed, first.clip, first.per_token)
    return all(isinstance(q, MinMaxQuantizer) and (type(q), q.precision, q.signed, q.clip, q.per_token) == key
               for q in qs)


def _row_local(q) -> bool:
    """Does q quantize each row (last axis) on its own, independently of the other rows?
    Then the quantized K/V cache equals quantizing the whole cache again."""
    if q is None:
        return True
    if isinstance(q, MinMaxQuantizer):
        return q.per_token
    if isinstance(q, (ElasticQuantizer, BiTElasticBinary, PerChannelQuantizer)):
        return bool(q.initialized[0])     # the first call would initialise the scale from data
    return False


def _per_token(a, M) -> bool:
    """A scale or offset that is one number, or one per row of an (M, K) input (shape (M, 1));
    not one per channel (shape (K,)), even where K == M."""
    return a.size == 1 or (a.ndim >= 1 and a.shape[-1] == 1 and a.size == M)


def _ternary_int8(c8, prep):
    """kernels.gemm_ternary_int8(c8, prep) without its argument checks (the layout is ours, c8 a
    C-contiguous (M, K) int8 array): one or two rows run the 2-bit GEMV, more the int8 GEMM."""
    core = kernels._core
    if core is None:
        return kernels.gemm_ternary_int8(c8, prep)
    out = np.empty((c8.shape[0], prep.N), dtype=np.int32)
    if c8.shape[0] <= 2:
        core.gemv_ternary_i2(c8, prep.w_i2, prep.N, out, 1)
    else:
        core.gemm_ternary_i8(c8, prep.w_i8, prep.w_sum, prep.N, out, 1)
    return out


# ---------------------------------------------------------------------------------------------
# PackedLinear
# ---------------------------------------------------------------------------------------------
