"""Weight quantizers, translated from minitbt/quant/weight.py: ternary and binary (and k-bit) fake
quantization of W with its STE. W has shape (out, in); "per row" statistics run over the last axis.

    class                 forward                                                  backward (STE)
    TBTTernaryWeight      mu = mean W_r, a = 4/3 mean|W_r - mu|,                   1{|(W-mu)/a| < 1} (clipped)
                          a * round(clip((W - mu)/a, -1, 1))                       or identity
    TBTBinaryWeight       mu = mean W_r, a = mean|W_r - mu|, a * sign(W - mu)      1{|(W-mu)/a| < 1} or identity
    TWNWeight             d = 0.7 mean|W|, a = mean(|W| : |W| > d), a sign(W) 1{|W|>d}   identity
    BWNWeight             a = mean|W|, a * sign(W) (centre: sign(W - mean W))      identity
    AbsMeanWeight         s = mean|W|, s * clip(round(W/s), -1, 1)                 identity
    AbsMaxWeight          a = max|W_r| / Qp, a * round(W/a)                        identity

Sources: TBT (Liu et al., ACL 2023), TWN (Li et al. 2016), XNOR-Net (Rastegari et al. 2016), BiT
(Liu et al., NeurIPS 2022), BitNet b1.58 (Ma et al. 2024), Q8BERT / TernaryBERT (Zhang et al. 2020).
"""
from __future__ import annotations

import torch

from minitbt.quant import weight as mW
from minitbt.quant.base import signed_levels
from minitbt.quant.weight import _EPS               # a statistic scale below this is an all-zero row: use 1
from minitbt.torch.quant.base import Quantizer, reduce_dims, sign


def _safe(a: torch.Tensor) -> torch.Tensor:
    """A scale of exactly 0 (an all-zero row) would divide by zero: use 1 there (codes are 0 anyway)."""
    return torch.where(a > _EPS, a, torch.ones_like(a))


class _WeightQuantOp(torch.autograd.Function):
    """minitbt's WeightQuantizer.forward: y = codes * scale from ``_codes(W)``, and the pseudo-gradient
    ``_grad(g, ctx)`` beside it. The statistics are computed here, outside any graph: constants."""

    @staticmethod
    def forward(ctx, w, quantizer):
        q, a, saved = quantizer._codes(w)
        ctx.quantizer = quantizer
        ctx.save_for_backward(saved)
        return q * a

    @staticmethod
    def backward(ctx, g):
        (saved,) = ctx.saved_tensors
        return ctx.quantizer._grad(g, saved), None


class WeightQuantizer(Quantizer):
    """Translation of minitbt.quant.weight.WeightQuantizer: ``_codes(W) -> (codes, scale, ctx)`` is
    the maths, ``_grad(g, ctx)`` the pseudo-gradient (identity unless a class says otherwise)."""

    @property
    def row_local(self):
        return self.per_row

    def _codes(self, w):
        raise NotImplementedError

    def _grad(self, g, saved):
        return g                                             # identity STE

    def forward(self, w):
        return _WeightQuantOp.apply(w, self)


class TBTTernaryWeight(WeightQuantizer):
    """Translation of minitbt's TBTTernaryWeight (TBT, Liu et al. 2023), per output row r:

        mu = mean(W_r),  a = (4/3) mean|W_r - mu|,  W_T = a * round(clip((W_r - mu)/a, -1, 1))
        backward: dW_T/dW = 1{|(W - mu)/a| < 1} (ste="clipped"), or 1 (ste="identity")
    """

    minitbt_class = mW.TBTTernaryWeight
    OPTIONS = ("per_row", "centre", "ste")
    precision = 2

    def __init__(self, per_row: bool = True, centre: bool = True, ste: str = "clipped"):
        super().__init__(per_row=per_row, centre=centre, ste=ste)
        self.per_row, self.centre, self.ste = per_row, centre, ste

    def _centred(self, w):
        dims = reduce_dims(w.ndim, self.per_row)
        mu = w.mean(dim=dims, keepdim=True) if self.centre else torch.zeros((1,) * w.ndim, dtype=w.dtype,
                                                                            device=w.device)
        return w - mu, dims

    def _codes(self, w):
        wc, dims = self._centred(w)
        a = _safe((4.0 / 3.0) * wc.abs().mean(dim=dims, keepdim=True))
        u = wc / a
        return torch.round(torch.clamp(u, -1, 1)), a, u

    def _grad(self, g, u):
        return g * (u.abs() < 1) if self.ste == "clipped" else g


class TBTBinaryWeight(TBTTernaryWeight):
    """Translation of minitbt's TBTBinaryWeight (TBT), per output row r:

        mu = mean(W_r),  a = mean|W_r - mu|,  W_B = a * sign(W_r - mu)
        backward: dW_B/dW = 1{|(W - mu)/a| < 1} (clipped) or 1 (identity)
    """

    minitbt_class = mW.TBTBinaryWeight
    precision = 1

    def _codes(self, w):
        wc, dims = self._centred(w)
        a = _safe(wc.abs().mean(dim=dims, keepdim=True))
        return sign(wc), a, wc / a


class TWNWeight(WeightQuantizer):
    """Translation of minitbt's TWNWeight (Li et al. 2016; TernaryBERT):

        delta = 0.7 mean|W|,  a = mean(|W| over |W| > delta),  W_T = a * sign(W) * 1{|W| > delta}
        backward: identity
    """

    minitbt_class = mW.TWNWeight
    OPTIONS = ("per_row",)
    precision = 2

    def __init__(self, per_row: bool = False):
        super().__init__(per_row=per_row)
        self.per_row = per_row

    def _codes(self, w):
        dims = reduce_dims(w.ndim, self.per_row)
        aw = w.abs()
        delta = 0.7 * aw.mean(dim=dims, keepdim=True)
        keep = aw > delta
        n = torch.clamp(keep.sum(dim=dims, keepdim=True), min=1)
        a = _safe((aw * keep).sum(dim=dims, keepdim=True) / n)
        return torch.sign(w) * keep, a, None


class BWNWeight(WeightQuantizer):
    """Translation of minitbt's BWNWeight (XNOR-Net's BWN; BiT with centre=True):

        a = mean|W|,  W_B = a * sign(W)   (centre: a * sign(W - mean W), a still mean|W|)
        backward: identity
    """

    minitbt_class = mW.BWNWeight
    OPTIONS = ("per_row", "centre")
    precision = 1

    def __init__(self, per_row: bool = False, centre: bool = False):
        super().__init__(per_row=per_row, centre=centre)
        self.per_row, self.centre = per_row, centre

    def _codes(self, w):
        dims = reduce_dims(w.ndim, self.per_row)
        a = _safe(w.abs().mean(dim=dims, keepdim=True))
        wc = w - w.mean(dim=dims, keepdim=True) if self.centre else w
        return sign(wc), a, None


class AbsMeanWeight(WeightQuantizer):
    """Translation of minitbt's AbsMeanWeight (BitNet b1.58, Ma et al. 2024):

        s = max(mean|W|, 1e-5),  W_T = s * clip(round(W / s), -1, 1);   backward: identity
    """

    minitbt_class = mW.AbsMeanWeight
    OPTIONS = ("per_row",)
    precision = 2

    def __init__(self, per_row: bool = False):
        super().__init__(per_row=per_row)
        self.per_row = per_row

    def _codes(self, w):
        dims = reduce_dims(w.ndim, self.per_row)
        s = torch.clamp(w.abs().mean(dim=dims, keepdim=True), min=1e-5)
        return torch.clamp(torch.round(w / s), -1, 1), s, None


class AbsMaxWeight(WeightQuantizer):
    """Translation of minitbt's AbsMaxWeight (symmetric k-bit; Q8BERT, TernaryBERT):

        Qp = 2^(k-1) - 1,  a = max|W_r| / Qp,  W_q = a * clip(round(W / a), -Qp, Qp);   backward: identity
    """

    minitbt_class = mW.AbsMaxWeight
    OPTIONS = ("bits", "per_row")

    def __init__(self, bits: int = 8, per_row: bool = True):
        super().__init__(bits=bits, per_row=per_row)
        self.precision, self.per_row = int(bits), per_row
        self.qp = signed_levels(bits)

    def _codes(self, w):
        dims = reduce_dims(w.ndim, self.per_row)
        a = _safe(w.abs().amax(dim=dims, keepdim=True) / self.qp)
        return torch.clamp(torch.round(w / a), -self.qp, self.qp), a, None
