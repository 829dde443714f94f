"""What a quantizer is: the protocol every weight and activation quantizer follows.

A quantizer ``q`` (the larq model, Geiger & Team 2020):

    y = q(x)            fake quantization: y holds values such as {-a, 0, +a} in float32,
                        and y.backward passes the quantizer's *pseudo-gradient* (its STE)
    q.precision         bits per value: 1 (binary), 2 (ternary, log2(3) = 1.58 bits), 8, k
    q.codes(x)          QCodes(codes, scale, offset): the integers and the scale(s) behind y,
                        with  codes * scale + offset == q(x)  exactly (what the kernels consume)

Every quantizer is a Module (those with learned scales own Parameters and buffers, which
then appear in the state dict) and its forward is ONE Tensor.make op whose backward is
written right beside it: no chain of generic ops, so the pseudo-gradient is exact and cheap.

Conventions shared by all quantizers in this package:
- Statistics (means, mean|.|, absmax, minima, centres) are treated as constants in the
  backward (stop-gradient): the STE passes the gradient through the quantized value only.
- ``sign(0) = +1`` for binary codes, so every value gets one of the two codes.
- Rounding is ``np.rint`` (round half to even, as torch.round).
- Activation quantizers decide with ``round_ties``/``sign_ties``: a value within a few hundred
  ulps of a decision boundary (a half-integer for round, 0 for sign) is snapped onto it first.
  Quantized networks produce *exact* ties all the time (sums of +-a, values at half the
  maximum), and a batched and a step-by-step forward compute them with different BLAS kernels
  (different summation order, FMA), so without the snap a last-bit difference would flip a code
  and the KV-cache decoder would drift from the full forward. The snap never moves a value by
  more than that tolerance; weights (identical in both forwards) use plain ``np.rint``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minitbt.nn.module import Module
from minitbt.tensor import Tensor


class QCodes(NamedTuple):
    """The integer form of a fake-quantized tensor: ``codes * scale + offset`` reconstructs it.

    codes:  integer array (int8, or int16 when the levels do not fit), same shape as the input
    scale:  float array broadcastable against codes (a scalar, per row (out, 1), per token (..., 1))
    offset: float array broadcastable against codes, added back after scaling (0 where none is)
    """
    codes: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    def dequantize(self) -> np.ndarray:
        return self.codes * self.scale + self.offset


class PlaneCodes(QCodes):
    """Multi-bit binary codes (binary-coding quantization): ``sum_i scale[i] * codes[i] + offset``.

    codes: (k, *shape) in {-1, +1};  scale: (k, ..., 1), one scale per bit plane (and per row).
    """
    __slots__ = ()

    def dequantize(self) -> np.ndarray:
        return (self.codes * self.scale).sum(axis=0) + self.offset


def int_codes(q: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Integer-valued floats in [lo, hi] -> the smallest signed integer dtype that holds them."""
    dtype = np.int8 if (lo >= -128 and hi <= 127) else np.int16
    return q.astype(dtype)


def sign(x: np.ndarray) -> np.ndarray:
    """+1 where x >= 0, -1 elsewhere (binary codes never take 0)."""
    return np.where(x >= 0, 1.0, -1.0).astype(x.dtype)


TIE_ULPS = 256   # the half-width of the snapping window, in ulps of max(span, |u|)


def _tie_tol(u: np.ndarray, span) -> np.ndarray:
    return TIE_ULPS * np.finfo(u.dtype).eps * np.maximum(span, np.abs(u))


def round_ties(u: np.ndarray, span: float = 1) -> np.ndarray:
    """np.rint(u), with values within the tie window of a half-integer snapped onto it first
    (then rounded half to even), so that a value that is exactly a tie (an exact 0.5 step, computed
    in two summation orders) gets one code, whatever its last bit.

    The window moves the boundary between two codes to its edge; it does not remove it. A value
    within last-bit noise of that edge can still get different codes from two summation orders
    (tests/test_compiled.py measures it: about one sentence in 50 of a trained ternary model).

    ``span`` is the largest code (Qp): the noise of u = X/a grows with the range X spans in
    steps, so the window is TIE_ULPS ulps of max(span, |u|): 0.4% of a step for 8 bits in float32,
    3e-5 of a step for ternary; 7e-12 and 6e-14 in float64."""
    b = np.floor(u) + 0.5
    return np.rint(np.where(np.abs(u - b) < _tie_tol(u, span), b, u))


def sign_ties(u: np.ndarray, zero: bool = False) -> np.ndarray:
    """sign(u) in {-1, +1} (sign(0) = +1), with |u| inside the tie window counted as 0.
    ``zero=True``: in {-1, 0, +1}, 0 for |u| inside the tie window (torch.sign's sign(0) = 0)."""
    if not (isinstance(u, np.ndarray) and u.ndim and u.dtype.kind == "f"):
        tie = np.abs(u) < _tie_tol(u, 1)
        if zero:
            return np.where(tie, 0.0, np.where(u > 0, 1.0, -1.0)).astype(u.dtype)
        return np.where((u >= 0) | tie, 1.0, -1.0).astype(u.dtype)
    # The same values in two passes. The window is c max(|u|, 1) with c = TIE_ULPS eps < 1, so
    # |u| >= 1 is never inside it and |u| < 1 is inside exactly when |u| < c: the tie test is |u| < c.
    c = np.asarray(TIE_ULPS * np.finfo(u.dtype).eps, dtype=u.dtype)
    one, minus = np.asarray(1, dtype=u.dtype), np.asarray(-1, dtype=u.dtype)
    if zero:
        out = np.where(u >= c, one, minus)                        # +1 above the window, -1 below it,
        out[np.abs(u) < c] = 0                                    # 0 inside
        return out
    return np.where(u > -c, one, minus)                           # u >= 0 or inside the window: +1


def unsigned_levels(bits: int) -> int:
    """Largest code of an unsigned quantizer: 1 bit {0,1}; 2 bits ternary {0,1,2} (TBT);
    k >= 3 bits the full range 2^k - 1."""
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    return 1 if bits == 1 else 2 if bits == 2 else 2 ** bits - 1


def signed_levels(bits: int) -> int:
    """Largest code of a symmetric signed quantizer: 2^(k-1) - 1 (2 bits -> ternary {-1,0,1},
    8 bits -> [-127, 127]). 1 bit is binary {-1, +1} (handled by sign, no zero)."""
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def reduce_axes(ndim: int, per_row: bool):
    """The axes a statistic runs over: the last one (per row / per token) or all of them."""
    return (ndim - 1,) if per_row else tuple(range(ndim))


def finite_input(x) -> np.ndarray:
    """The array that ``codes()`` turns into integer codes: finite, or a ValueError (the rule of
    docs/kernels.md, "Non-finite input"; the training forward ``q(x)`` does not check)."""
    from minitbt.kernels._checks import _check_finite   # here: importing quant loads no kernels
    return _check_finite("x", x.data if isinstance(x, Tensor) else np.asarray(x))


class Quantizer(Module):
    """Base class. Sub-classes set ``precision`` and implement ``forward`` and ``codes``."""

    precision: int = 32
    row_local: bool = False   # True when the result for a row depends only on that row (last axis)

    def __call__(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        return self.forward(x)

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def codes(self, x) -> QCodes:
        """The integer codes, scale(s) and offset behind ``self(x)`` (no graph is built)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose codes()")

    def describe(self) -> str:
        """One line for model summaries: class, bits and options."""
        extra = self.extra_repr()
        return f"{type(self).__name__}({extra})" if extra else type(self).__name__
