"""Dynamic ("min-max") activation quantizers: the scale is a statistic of the data, not learned.

    class                 values                                   scale                          source
    MinMaxQuantizer       symmetric k-bit / unsigned k-bit         dynamic absmax (not learned)   TernaryBERT "min-max"
    SymmetricA8           8-bit symmetric after clipping to +-2.5  dynamic 127/max|X|             TBT's A8, TernaryBERT
    PerTokenAbsMax        int8, per token                          dynamic 127/max|x|             BitNet b1.58

Every statistic runs per token (over the last axis) by default, so that step-by-step (KV-cache)
decoding gives each token the value the full forward gives it (quant/activation.py, "Causality").
The quantizers with learned scales are in quant/activation.py.
"""
from __future__ import annotations

import numpy as np

from minitbt.quant.base import (TIE_ULPS, QCodes, Quantizer, finite_input, int_codes, round_ties, sign_ties,
                                signed_levels, unsigned_levels)
from minitbt.tensor import Tensor

TINY = np.finfo(np.float32).smallest_subnormal   # kernels.quantize_rows_i8's smallest scale


class MinMaxQuantizer(Quantizer):
    """Dynamic ("min-max") quantization: the scale is a statistic of the data, not learned.

    Statistics run per token (over the last axis) by default, ``per_token=False`` over the whole tensor.
    signed, k >= 2 bits:  Qp = 2^(k-1) - 1,  X_c = clip(X, -c, c) (if ``clip``),
                          a = max|X_c| / Qp,  X_q = a * round(X_c / a)          (codes in [-Qp, Qp])
    signed, 1 bit:        a = mean|X|,  X_q = a * sign(X)                       (XNOR-Net's activation scale)
    unsigned, k bits:     Qp = 1, 2, 2^k - 1 (see ElasticQuantizer),  a = max(X) / Qp,
                          X_q = a * round(clip(X / a, 0, Qp))
    Backward: dX_q/dX = 1{|X| <= c} with a clip, 1{X >= 0} unsigned, else 1 (identity STE);
    the statistics are constants.
    Used as the non-learned activation quantizer of the TWN/BWN baselines (TernaryBERT's min-max).
    Source: Zhang et al., TernaryBERT, EMNLP 2020; Rastegari et al., XNOR-Net, 2016 (1 bit).
    """

    def __init__(self, bits: int = 8, signed: bool = True, clip: float = None, per_token: bool = True):
        super().__init__()
        self.precision, self.signed, self.clip, self.per_token = int(bits), bool(signed), clip, bool(per_token)
        self.qp = signed_levels(bits) if signed else unsigned_levels(bits)
        self.lo = -self.qp if signed else 0

    @property
    def row_local(self):              # per token: a row's codes depend on that row only
        return self.per_token

    def _axes(self, x):
        return (x.ndim - 1,) if self.per_token else tuple(range(x.ndim))

    def _quantize(self, x):
        xc = np.clip(x, -self.clip, self.clip) if self.clip is not None else x
        axes = self._axes(x)
        if self.signed and self.precision == 1:
            a = np.abs(xc).mean(axis=axes, keepdims=True)
            a = np.where(a > 0, a, 1).astype(x.dtype)
            return sign_ties(xc / a), a
        m = np.abs(xc).max(axis=axes, keepdims=True) if self.signed else xc.max(axis=axes, keepdims=True)
        a = np.where(m > 0, m / self.qp, 1).astype(x.dtype)
        q = np.clip(round_ties(xc / a, self.qp), self.lo, self.qp)
        return q, a

    def _inside(self, x):
        if self.clip is not None:
            inside = np.abs(x) <= self.clip
            return inside & (x >= 0) if not self.signed else inside
        return (x >= 0) if not self.signed else None

    def forward(self, x: Tensor) -> Tensor:
        xd = x.data
        q, a = self._quantize(xd)
        y = q * a + np.zeros((), xd.dtype)
        inside = self._inside(xd)

        def backward(g):
            return (g if inside is None else g * inside,)
        return Tensor.make(y.astype(xd.dtype, copy=False), (x,), backward, "minmax_quant")

    def codes(self, x) -> QCodes:
        xd = finite_input(x)
        fast = self._codes_i8(xd)
        if fast is not None:
            return fast
        q, a = self._quantize(xd)
        lo = -1 if (self.signed and self.precision == 1) else self.lo
        return QCodes(int_codes(q, lo, self.qp), a, np.zeros((), xd.dtype))

    def _codes_i8(self, xd):
        """codes() of a signed 2..8-bit per-token quantizer on float32 input, in one compiled call
        (kernels.quantize_rows_i8: these equations, float32 operation for operation, so the same
        codes); None where that does not apply (float64, 1 bit, per tensor, no compiled kernels)."""
        from minitbt import kernels                   # here: importing quant loads no kernels
        if (kernels._core is None or xd.dtype != np.float32 or not (self.signed and self.per_token)
                or not 2 <= self.precision <= 8 or xd.ndim == 0 or xd.size == 0
                or type(self)._quantize is not MinMaxQuantizer._quantize):
            return None
        tol = np.float32(TIE_ULPS * np.finfo(np.float32).eps) * np.float32(self.qp)   # round_ties' window, |u| <= Qp
        codes, a = kernels.quantize_rows_i8(np.ascontiguousarray(xd).reshape(-1, xd.shape[-1]),
                                            self.qp, self.clip, tol)
        zero = a == TINY                              # rows of zeros: scale 1, as _quantize gives them
        if zero.any():
            a[zero & ~codes.any(axis=1, keepdims=True)] = 1
        return QCodes(codes.reshape(xd.shape), a.reshape(*xd.shape[:-1], 1), np.zeros((), xd.dtype))

    def extra_repr(self):
        s = f"{self.precision}-bit, {'signed' if self.signed else 'unsigned'}"
        s += ", per token" if self.per_token else ", per tensor"
        return s + (f", clip={self.clip}" if self.clip is not None else "")


class SymmetricA8(MinMaxQuantizer):
    """TBT's "A8": 8-bit dynamic symmetric quantization after clipping to +-2.5.

        X_c = clip(X, -2.5, 2.5),  s = 127 / max|X_c|,  X_q = round(X_c s) / s   (step a = 1/s)
        backward: dX_q/dX = 1{|X| <= 2.5}

    TBT computes s per tensor; here s is **per token** by default (max over the last axis), a
    deviation needed so that step-by-step (KV-cache) decoding equals the full forward;
    ``per_token=False`` gives the paper's per-tensor form.
    Source: Liu et al., ACL 2023 (TBT); Zhang et al., TernaryBERT, 2020.
    """

    def __init__(self, clip: float = 2.5, per_token: bool = True, bits: int = 8):
        super().__init__(bits=bits, signed=True, clip=clip, per_token=per_token)


class PerTokenAbsMax(MinMaxQuantizer):
    """BitNet per-token absmax int8 activations:

        s_x = 127 / max|x| per token,  x_q = clip(round(x s_x), -128, 127),  X_q = x_q / s_x
        backward: identity STE

    Source: Ma et al., BitNet b1.58, 2024; Wang et al., bitnet.cpp, 2025.
    """

    def __init__(self, bits: int = 8):
        super().__init__(bits=bits, signed=True, clip=None, per_token=True)
