"""Weight quantizers: ternary and binary (and k-bit) fake quantization of W with its STE.

W has shape (out, in) (rows = output features). "Per row" statistics run over the last
axis, one scale per output feature (or per word vector for an embedding); "per tensor"
statistics run over the whole matrix. Statistics are constants in the backward.

    class                 equation (forward)                                              backward            source
    TBTTernaryWeight      mu = mean W_r, a = 4/3 mean|W_r - mu|, a*round(clip((W-mu)/a,-1,1))  1{|(W-mu)/a|<1}  TBT (Liu et al. 2023)
    TBTBinaryWeight       mu = mean W_r, a = mean|W_r - mu|,     a*sign(W - mu)                 1{|(W-mu)/a|<1}  TBT
    TWNWeight             d = 0.7 mean|W|, a = mean(|W| : |W|>d), a*sign(W)*1{|W|>d}            identity         TWN (Li et al. 2016), TernaryBERT
    BWNWeight             a = mean|W|, a*sign(W) (BiT: a*sign(W - mean W))                      identity         XNOR-Net (Rastegari et al. 2016), BiT
    AbsMeanWeight         s = mean|W|, s*clip(round(W/s),-1,1)                                  identity         BitNet b1.58 (Ma et al. 2024)
    AbsMaxWeight          a = max|W_r| / (2^(k-1)-1), a*round(W/a)                              identity         symmetric k-bit (Q8BERT, TernaryBERT 8-bit)
    BinaryCodingWeight    W_r ~ sum_i a_i b_i, b_i in {-1,+1}^n (greedy + alternating)           identity         Chung et al. 2020 (Xu et al. 2018)
    LATWeight             a = ||b.d.w||_1/||b.d||_1, b = 1{|w| > a/2}, d = sqrt(v_hat)           identity         LAT (Hou & Kwok 2018), TernaryBERT
"""
from __future__ import annotations

import numpy as np

from minitbt.quant.base import PlaneCodes, QCodes, Quantizer, int_codes, reduce_axes, sign, signed_levels
from minitbt.quant.ste import ste_grad
from minitbt.tensor import Tensor

_EPS = 1e-8


def _safe(a: np.ndarray) -> np.ndarray:
    """A scale of exactly 0 (an all-zero row) would divide by zero: use 1 there (codes are 0 anyway)."""
    return np.where(a > _EPS, a, np.ones_like(a))


class WeightQuantizer(Quantizer):
    """Shared plumbing: ``_codes(W) -> (QCodes, ctx)`` is the quantizer's maths,
    ``_grad(g, ctx)`` its pseudo-gradient; ``forward`` wraps both in one Tensor.make op."""

    per_row: bool = True
    ste: str = "identity"

    @property
    def row_local(self):
        return self.per_row

    def _codes(self, w: np.ndarray):
        raise NotImplementedError

    def _grad(self, g: np.ndarray, ctx) -> np.ndarray:
        return g                                            # identity STE

    def forward(self, w: Tensor) -> Tensor:
        qc, ctx = self._codes(w.data)
        y = qc.dequantize().astype(w.data.dtype, copy=False)

        def backward(g):
            return (self._grad(g, ctx),)
        return Tensor.make(y, (w,), backward, type(self).__name__)

    def codes(self, w) -> QCodes:
        return self._codes(w.data if isinstance(w, Tensor) else np.asarray(w))[0]

    def extra_repr(self):
        return f"{self.precision}-bit, {'per row' if self.per_row else 'per tensor'}, ste={self.ste}"


class TBTTernaryWeight(WeightQuantizer):
    """TBT statistics-based ternary weights ("max-entropy isometric"), per output row r:

        mu = mean(W_r),  a = (4/3) * mean|W_r - mu|,  W_T = a * round(clip((W_r - mu) / a, -1, 1))
        backward: clipped STE dW_T/dW = 1{|(W - mu)/a| < 1}  (a, mu are statistics, not learned)

    Source: Liu et al., "Binary and Ternary Natural Language Generation", ACL 2023 (TBT).
    Released-code variant: ``centre=False`` (mu = 0), ``ste="identity"``.
    """

    precision = 2

    def __init__(self, per_row: bool = True, centre: bool = True, ste: str = "clipped"):
        super().__init__()
        ste_grad(ste)
        if ste not in ("clipped", "identity"):
            raise ValueError(f"TBT weights use the 'clipped' or 'identity' STE, got {ste!r}")
        self.per_row, self.centre, self.ste = per_row, centre, ste

    def _centred(self, w):
        axes = reduce_axes(w.ndim, self.per_row)
        mu = w.mean(axis=axes, keepdims=True) if self.centre else np.zeros((1,) * w.ndim, w.dtype)
        return w - mu, axes

    def _codes(self, w):
        wc, axes = self._centred(w)
        a = _safe((4.0 / 3.0) * np.abs(wc).mean(axis=axes, keepdims=True)).astype(w.dtype)
        u = wc / a
        q = np.rint(np.clip(u, -1, 1))
        return QCodes(int_codes(q, -1, 1), a, np.zeros((), w.dtype)), u

    def _grad(self, g, u):
        return g * (np.abs(u) < 1) if self.ste == "clipped" else g

    def extra_repr(self):
        return super().extra_repr() + f", centre={self.centre}"


class TBTBinaryWeight(TBTTernaryWeight):
    """TBT statistics-based binary weights, per output row r:

        mu = mean(W_r),  a = mean|W_r - mu|,  W_B = a * sign(W_r - mu)
        backward: clipped STE dW_B/dW = 1{|(W - mu)/a| < 1}

    Source: Liu et al., ACL 2023 (TBT). Released-code variant: ``centre=False``, ``ste="identity"``.
    """

    precision = 1

    def _codes(self, w):
        wc, axes = self._centred(w)
        a = _safe(np.abs(wc).mean(axis=axes, keepdims=True)).astype(w.dtype)
        return QCodes(int_codes(sign(wc), -1, 1), a, np.zeros((), w.dtype)), wc / a


class TWNWeight(WeightQuantizer):
    """Ternary weight networks (threshold 0.7):

        delta = 0.7 * mean|W|,  a = mean(|W| over |W| > delta),  W_T = a * sign(W) * 1{|W| > delta}
        backward: identity STE

    Per tensor for linear layers, per row (``per_row=True``) for the word embedding, as in TernaryBERT.
    Source: Li et al., "Ternary Weight Networks", 2016; Zhang et al., TernaryBERT, EMNLP 2020.
    """

    precision = 2

    def __init__(self, per_row: bool = False):
        super().__init__()
        self.per_row = per_row

    def _codes(self, w):
        axes = reduce_axes(w.ndim, self.per_row)
        aw = np.abs(w)
        delta = 0.7 * aw.mean(axis=axes, keepdims=True)
        keep = aw > delta
        n = np.maximum(keep.sum(axis=axes, keepdims=True), 1)
        a = _safe((aw * keep).sum(axis=axes, keepdims=True) / n).astype(w.dtype)
        q = np.sign(w) * keep
        return QCodes(int_codes(q, -1, 1), a, np.zeros((), w.dtype)), None


class BWNWeight(WeightQuantizer):
    """Binary weights with a mean-magnitude scale:

        a = mean|W|,  W_B = a * sign(W)            (XNOR-Net / BWN, Rastegari et al. 2016)
        centre=True:  W_B = a * sign(W - mean(W))  (BiT, Liu et al. NeurIPS 2022; a stays mean|W|)
        backward: identity STE

    Per tensor for linear layers, per row (``per_row=True``) for embeddings (BiT).
    """

    precision = 1

    def __init__(self, per_row: bool = False, centre: bool = False):
        super().__init__()
        self.per_row, self.centre = per_row, centre

    def _codes(self, w):
        axes = reduce_axes(w.ndim, self.per_row)
        a = _safe(np.abs(w).mean(axis=axes, keepdims=True)).astype(w.dtype)
        wc = w - w.mean(axis=axes, keepdims=True) if self.centre else w
        return QCodes(int_codes(sign(wc), -1, 1), a, np.zeros((), w.dtype)), None

    def extra_repr(self):
        return super().extra_repr() + f", centre={self.centre}"


class AbsMeanWeight(WeightQuantizer):
    """BitNet b1.58 absmean ternary weights (per tensor):

        s = mean|W|,  W_q = clip(round(W / s), -1, 1),  W_T = s * W_q
        backward: identity STE

    Source: Ma et al., "The Era of 1-bit LLMs: All Large Language Models are in 1.58 Bits", 2024.
    """

    precision = 2

    def __init__(self, per_row: bool = False):
        super().__init__()
        self.per_row = per_row

    def _codes(self, w):
        axes = reduce_axes(w.ndim, self.per_row)
        s = np.maximum(np.abs(w).mean(axis=axes, keepdims=True), 1e-5).astype(w.dtype)
        q = np.clip(np.rint(w / s), -1, 1)
        return QCodes(int_codes(q, -1, 1), s, np.zeros((), w.dtype)), None


class AbsMaxWeight(WeightQuantizer):
    """Symmetric uniform k-bit weights (k >= 2), per row by default:

        Qp = 2^(k-1) - 1,  a = max|W_r| / Qp,  W_q = a * round(W / a)   (codes in [-Qp, Qp])
        backward: identity STE (nothing is clipped)

    The quantizer the presets use for weights of 3 bits and more (e.g. "8-8-8").
    Source: Zafrir et al., Q8BERT, 2019; Zhang et al., TernaryBERT, 2020 (8-bit weights).
    """

    def __init__(self, bits: int = 8, per_row: bool = True):
        super().__init__()
        if bits < 2:
            raise ValueError("AbsMaxWeight needs bits >= 2 (use a binary quantizer for 1 bit)")
        self.precision, self.per_row = int(bits), per_row
        self.qp = signed_levels(bits)

    def _codes(self, w):
        axes = reduce_axes(w.ndim, self.per_row)
        a = _safe(np.abs(w).max(axis=axes, keepdims=True) / self.qp).astype(w.dtype)
        q = np.clip(np.rint(w / a), -self.qp, self.qp)
        return QCodes(int_codes(q, -self.qp, self.qp), a, np.zeros((), w.dtype)), None


class BinaryCodingWeight(WeightQuantizer):
    """k-bit binary-coding quantization, per row:  W_r ~ sum_{i=1..k} a_i b_i,  b_i in {-1, +1}^n.

        greedy:       r = W_r;  for i: a_i = mean|r|, b_i = sign(r), r <- r - a_i b_i
        alternating:  a = argmin ||W_r - B^T a||^2 (least squares, B = [b_1..b_k]),
                      then re-pick every element's b (the nearest of the 2^k sums +-a_1 +- ... +- a_k)
        backward: identity STE

    ``codes()`` returns PlaneCodes: codes (k, *W.shape) in {-1,+1}, scale (k, ..., 1).
    Source: Chung et al., "Extremely Low Bit Transformer Quantization for On-Device NMT",
    Findings of EMNLP 2020; alternating refinement from Xu et al., ICLR 2018.
    """

    per_row = True

    def __init__(self, bits: int = 2, iters: int = 2):
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"binary coding supports 1..8 bits, got {bits}")
        self.precision, self.iters = int(bits), int(iters)

    def _codes(self, w):
        k = self.precision
        r = w.astype(np.float64)
        planes, scales = [], []
        for _ in range(k):                                      # greedy
            a = np.abs(r).mean(axis=-1, keepdims=True)
            b = sign(r)
            planes.append(b)
            scales.append(a)
            r = r - a * b
        B = np.stack(planes)                                    # (k, ..., n)
        A = np.stack(scales)                                    # (k, ..., 1)
        w64 = w.astype(np.float64)
        combos = np.array(np.meshgrid(*[[-1.0, 1.0]] * k, indexing="ij")).reshape(k, -1).T  # (2^k, k)
        for _ in range(self.iters if k > 1 else 0):            # alternating refinement
            Bm = np.moveaxis(B, 0, -2)                          # (..., k, n)
            M = Bm @ np.swapaxes(Bm, -1, -2)                    # (..., k, k)
            rhs = Bm @ w64[..., None]                           # (..., k, 1)
            A = np.moveaxis(np.linalg.pinv(M) @ rhs, -2, 0)     # (k, ..., 1)
            best = np.full(w.shape, np.inf)
            for c in combos:                                    # nearest of the 2^k sums
                val = np.tensordot(c, A, axes=1)                # (..., 1)
                err = np.abs(w64 - val)
                better = err < best
                best = np.where(better, err, best)
                B = np.where(better[None], c.reshape((k,) + (1,) * w.ndim), B)
        return PlaneCodes(int_codes(B, -1, 1), A.astype(w.dtype), np.zeros((), w.dtype)), None

    def extra_repr(self):
        return f"{self.precision}-bit, per row, iters={self.iters}"


class LATWeight(WeightQuantizer):
    """Loss-aware ternarization, with a diagonal curvature d (Adam's sqrt(v_hat)):

        a = ||b * d * W||_1 / ||b * d||_1,   b = 1{|W| > a/2}          (iterated from the TWN solution)
        W_T = a * sign(W) * b;   backward: identity STE

    d comes from ``set_curvature(d)`` (the trainer calls it, e.g. with optimizer.second_moment(W))
    or from the ``curvature`` callable given at construction; while neither gives a non-zero d of
    W's shape (e.g. before the first optimizer step) it falls back to TWN.
    Per tensor for linear layers, per row for the embedding (TernaryBERT).
    Source: Hou & Kwok, "Loss-aware Weight Quantization", ICLR 2018; Zhang et al., TernaryBERT, 2020.
    """

    precision = 2
    row_local = False   # the curvature is aligned with the whole matrix

    def __init__(self, curvature=None, per_row: bool = False, iters: int = 3):
        super().__init__()
        self.per_row, self.iters = per_row, int(iters)
        self.curvature = curvature
        self._d = None

    def set_curvature(self, d) -> None:
        self._d = None if d is None else np.asarray(d)

    def current_curvature(self, shape):
        d = self._d if self._d is not None else (self.curvature() if callable(self.curvature) else None)
        if d is None or np.shape(d) != shape or not np.any(d):
            return None
        return np.asarray(d)

    def _codes(self, w):
        twn, _ = TWNWeight(self.per_row)._codes(w)
        d = self.current_curvature(w.shape)
        if d is None:
            return twn, None
        axes = reduce_axes(w.ndim, self.per_row)
        aw = np.abs(w).astype(np.float64)
        a = twn.scale.astype(np.float64)
        for _ in range(self.iters):
            bd = (aw > a / 2) * d
            den = bd.sum(axis=axes, keepdims=True)
            a = np.where(den > 0, (bd * aw).sum(axis=axes, keepdims=True) / np.maximum(den, 1e-30), a)
        q = np.sign(w) * (aw > a / 2)
        return QCodes(int_codes(q, -1, 1), _safe(a).astype(w.dtype), np.zeros((), w.dtype)), None
