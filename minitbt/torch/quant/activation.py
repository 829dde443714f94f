"""Activation quantizers, translated from minitbt/quant/activation.py (and scale.py): fake
quantization of the inputs of matmuls, with learned or dynamic scales.

    class                 forward                                                  backward (STE)
    ElasticQuantizer      a * round(clip(X'/a, lo, Qp)), a * sign(X')  (learned a) 1{inside}; LSQ for a
    BiTElasticBinary      a * round(clip((X-b)/a, 0, 1)), a * sign(X - b)         1{inside}; LSQ for a; -1{inside} for b
    MinMaxQuantizer       a = max|X_c| / Qp per token, a * round(X_c/a)            1{|X| <= c}, 1{X >= 0}, or 1
    SymmetricA8           MinMaxQuantizer(8 bits, signed, clip 2.5)                1{|X| <= 2.5}
    PerTokenAbsMax        MinMaxQuantizer(k bits, signed, no clip)                 identity

Every statistic of the data runs per token (the last axis), as in minitbt, so step-by-step decoding
with the KV cache gives each token the value of the full forward. A learned scale is used as
max(a, SCALE_EPS), its gradient passed to a unchanged.
Sources: TBT (Liu et al., ACL 2023), BiT (Liu et al., NeurIPS 2022), LSQ (Esser et al., ICLR 2020),
TernaryBERT (Zhang et al. 2020), XNOR-Net (Rastegari et al. 2016), BitNet b1.58 (Ma et al. 2024).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from minitbt.quant import activation as mA
from minitbt.quant import minmax as mM
from minitbt.quant.activation import SCALE_EPS      # the smallest learned scale used in the forward
from minitbt.quant.base import signed_levels, unsigned_levels
from minitbt.torch.quant.base import (Quantizer, lsq_grad_factor, lsq_scale_grad, reduce_dims, round_ties,
                                      sign_ties)


class LearnedScale(Quantizer):
    """Translation of minitbt's LearnedScale: a learned scale ``a`` (nn.Parameter) initialised on the
    first batch, the buffer ``initialized`` saying whether that has happened, and the clamp
    a_used = max(a, SCALE_EPS) whose gradient goes to ``a`` unchanged (straight through)."""

    def _setup_scale(self, shape, init_scale, learn_scale=True):
        value = 1.0 if init_scale is None else init_scale
        self.scale = nn.Parameter(torch.full(shape, float(value)), requires_grad=learn_scale)
        self.register_buffer("initialized", torch.tensor([init_scale is not None]))

    @torch.no_grad()
    def _maybe_init(self, x):
        if not bool(self.initialized[0]):
            a = self._init_value(x).double()                 # minitbt computes the rule in float64
            a = torch.where(torch.isfinite(a) & (a > SCALE_EPS), a, torch.ones_like(a))
            self.scale.copy_(a.expand_as(self.scale))
            self.initialized.fill_(True)

    def _a(self, x):
        return torch.clamp(self.scale.detach(), min=SCALE_EPS).to(x.dtype)


class _ElasticOp(torch.autograd.Function):
    """ElasticQuantizer.forward: y = q a + offset; backward dL/dX = g 1{inside},
    dL/da = sum(g q) (signed binary) or sum(g (round(u) - u) inside, g q outside), times the LSQ factor."""

    @staticmethod
    def forward(ctx, x, scale, quantizer):
        q, a, offset, u, inside = quantizer._quantize(x)
        binary_signed = quantizer.signed and quantizer.precision == 1
        ctx.gscale = lsq_grad_factor(x.numel(), quantizer.qp) if quantizer.lsq_grad_scale else 1.0
        ctx.binary_signed = binary_signed
        ctx.save_for_backward(q, u, inside, scale)
        return q * a + offset

    @staticmethod
    def backward(ctx, g):
        q, u, inside, scale = ctx.saved_tensors
        gx = g * inside
        ga = (g * q).sum() if ctx.binary_signed else lsq_scale_grad(g, q, u, inside).sum()
        return gx, (ga * ctx.gscale).to(scale.dtype).expand_as(scale).clone(), None


class ElasticQuantizer(LearnedScale):
    """Translation of minitbt's ElasticQuantizer (TBT elastic activations, learned a; LSQ gradient):

        signed (centred per token first, X' = X - mean_last_axis(X)):
            1 bit:   X_q = a * sign(X')                     k bits:  X_q = a * round(clip(X'/a, -Qp, Qp))
        unsigned:    X_q = a * round(clip(X/a, 0, Qp))      (shift_min: of X - min_token(X), min added back)
        backward (u = X'/a):  dX_q/dX = 1{inside}  (1-bit signed: |u| < 1; else lo < u < Qp)
                              dX_q/da = sign(X') (1-bit signed), else round(u) - u inside, the clip level outside
        first call: a = 2 mean|X'| / sqrt(Qp) (signed), 4 mean|X| / sqrt(Qp) (unsigned)  [init="levels"]
                    init="code": on X as given, Qp = max(1, 2^(k-1) - 1) signed, 2^k - 1 unsigned
    """

    minitbt_class = mA.ElasticQuantizer
    OPTIONS = ("bits", "signed", "centre", "lsq_grad_scale", "shift_min", "init_scale", "learn_scale",
               "init", "binary_zero")

    def __init__(self, bits: int = 2, signed: bool = True, centre: bool = True, lsq_grad_scale: bool = False,
                 shift_min: bool = False, init_scale: float = None, learn_scale: bool = True,
                 init: str = "levels", binary_zero: str = "plus"):
        super().__init__(bits=bits, signed=signed, centre=centre, lsq_grad_scale=lsq_grad_scale,
                         shift_min=shift_min, init_scale=init_scale, learn_scale=learn_scale, init=init,
                         binary_zero=binary_zero)
        self.precision, self.signed = int(bits), bool(signed)
        self.centre = bool(centre) and self.signed
        self.lsq_grad_scale, self.shift_min = bool(lsq_grad_scale), bool(shift_min)
        self.init, self.binary_zero = init, binary_zero
        self.qp = signed_levels(bits) if signed else unsigned_levels(bits)
        self.lo = -self.qp if signed else 0
        self._setup_scale((1,), init_scale, learn_scale)

    def _shifted(self, x):
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        if self.centre:
            return x - x.mean(dim=-1, keepdim=True), zero
        if self.shift_min:
            m = x.amin(dim=-1, keepdim=True)
            return x - m, m
        return x, zero

    def _init_value(self, x):
        k = 2.0 if self.signed else 4.0
        if self.init == "code":
            qp = max(1, 2 ** (self.precision - 1) - 1) if self.signed else 2 ** self.precision - 1
            return (k * x.abs().mean()).double() / math.sqrt(qp)
        xs, _ = self._shifted(x)
        return (k * xs.abs().mean()).double() / math.sqrt(self.qp)

    def _quantize(self, x):
        xs, offset = self._shifted(x)
        a = self._a(x)
        u = xs / a
        if self.signed and self.precision == 1:
            q = sign_ties(u, zero=self.binary_zero == "zero")
            inside = u.abs() < 1
        else:
            q = torch.clamp(round_ties(u, self.qp), self.lo, self.qp)
            inside = (u > self.lo) & (u < self.qp)
        return q, a, offset, u, inside

    def forward(self, x):
        self._maybe_init(x.detach())
        return _ElasticOp.apply(x, self.scale, self)


class _BiTOp(torch.autograd.Function):
    """BiTElasticBinary.forward: y = q a; backward dL/dX = g 1{inside}, dL/db = -sum(g 1{inside}),
    dL/da = sum(g q) (signed) or the LSQ form (unsigned), times the LSQ factor if asked."""

    @staticmethod
    def forward(ctx, x, scale, offset, quantizer):
        q, a, u, inside = quantizer._quantize(x)
        ctx.gscale = lsq_grad_factor(x.numel(), 1) if quantizer.lsq_grad_scale else 1.0
        ctx.signed = quantizer.signed
        ctx.save_for_backward(q, u, inside, scale)
        return q * a

    @staticmethod
    def backward(ctx, g):
        q, u, inside, scale = ctx.saved_tensors
        gx = g * inside
        ga = ((g * q).sum() if ctx.signed else lsq_scale_grad(g, q, u, inside).sum()) * ctx.gscale
        gb = -gx.sum()
        return gx, ga.to(scale.dtype).expand_as(scale).clone(), gb.to(scale.dtype).expand_as(scale).clone(), None


class BiTElasticBinary(LearnedScale):
    """Translation of minitbt's BiTElasticBinary (BiT two-set binarization, Liu et al. 2022):

        non-negative:  X_B = a * round(clip((X - b)/a, 0, 1))  in {0, a};   signed: a * sign(X - b)  in {-a, a}
        backward (u = (X - b)/a; inside = 0 <= u < 1, or |u| < 1 signed):
            dX_B/dX = 1{inside},  dX_B/db = -1{inside},  dX_B/da = LSQ form (unsigned), sign(X - b) (signed)
        first call: a = mean|X|, b = 0
    """

    minitbt_class = mA.BiTElasticBinary
    OPTIONS = ("signed", "init_scale", "lsq_grad_scale", "binary_zero")
    precision = 1

    def __init__(self, signed: bool = True, init_scale: float = None, lsq_grad_scale: bool = False,
                 binary_zero: str = "plus"):
        super().__init__(signed=signed, init_scale=init_scale, lsq_grad_scale=lsq_grad_scale,
                         binary_zero=binary_zero)
        self.signed, self.lsq_grad_scale, self.binary_zero = bool(signed), bool(lsq_grad_scale), binary_zero
        self._setup_scale((1,), init_scale)
        self.offset = nn.Parameter(torch.zeros(1))

    def _init_value(self, x):
        return x.abs().mean().double()

    def _quantize(self, x):
        a, b = self._a(x), self.offset.detach().to(x.dtype)
        u = (x - b) / a
        if self.signed:
            q = sign_ties(u, zero=self.binary_zero == "zero")
            inside = u.abs() < 1
        else:
            q = torch.clamp(round_ties(u), 0, 1)
            inside = (u >= 0) & (u < 1)
        return q, a, u, inside

    def forward(self, x):
        self._maybe_init(x.detach())
        return _BiTOp.apply(x, self.scale, self.offset, self)


# ---- dynamic ("min-max") activation quantizers ----------------------------------------------------
class _MinMaxOp(torch.autograd.Function):
    """MinMaxQuantizer.forward: y = q a (a a statistic); backward dL/dX = g * inside (or g)."""

    @staticmethod
    def forward(ctx, x, quantizer):
        q, a = quantizer._quantize(x)
        inside = quantizer._inside(x)
        ctx.save_for_backward(inside)
        return q * a

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return (g if inside is None else g * inside), None


class MinMaxQuantizer(Quantizer):
    """Translation of minitbt's MinMaxQuantizer (TernaryBERT's min-max; XNOR-Net at 1 bit). Per token
    (last axis) by default, per tensor with ``per_token=False``; X_c = clip(X, -c, c) if ``clip``:

        signed, k >= 2:  a = max|X_c| / Qp,  X_q = a * round(X_c / a)       (Qp = 2^(k-1) - 1)
        signed, 1 bit:   a = mean|X_c|,      X_q = a * sign(X_c / a)
        unsigned:        a = max(X_c) / Qp,  X_q = a * clip(round(X_c / a), 0, Qp)
        backward: 1{|X| <= c} with a clip (and X >= 0 unsigned), 1{X >= 0} unsigned, else identity
    """

    minitbt_class = mM.MinMaxQuantizer
    OPTIONS = ("bits", "signed", "clip", "per_token")

    def __init__(self, bits: int = 8, signed: bool = True, clip: float = None, per_token: bool = True):
        super().__init__(bits=bits, signed=signed, clip=clip, per_token=per_token)
        self.precision, self.signed, self.clip, self.per_token = int(bits), bool(signed), clip, bool(per_token)
        self.qp = signed_levels(bits) if signed else unsigned_levels(bits)
        self.lo = -self.qp if signed else 0

    def _quantize(self, x):
        xc = torch.clamp(x, -self.clip, self.clip) if self.clip is not None else x
        dims = reduce_dims(x.ndim, self.per_token)
        if self.signed and self.precision == 1:
            a = xc.abs().mean(dim=dims, keepdim=True)
            a = torch.where(a > 0, a, torch.ones_like(a))
            return sign_ties(xc / a), a
        m = xc.abs().amax(dim=dims, keepdim=True) if self.signed else xc.amax(dim=dims, keepdim=True)
        a = torch.where(m > 0, m / self.qp, torch.ones_like(m))
        return torch.clamp(round_ties(xc / a, self.qp), self.lo, self.qp), a

    def _inside(self, x):
        if self.clip is not None:
            inside = x.abs() <= self.clip
            return inside & (x >= 0) if not self.signed else inside
        return (x >= 0) if not self.signed else None

    def forward(self, x):
        return _MinMaxOp.apply(x, self)


class SymmetricA8(MinMaxQuantizer):
    """Translation of minitbt's SymmetricA8 (TBT's A8): X_c = clip(X, -2.5, 2.5), s = 127 / max|X_c|
    per token, X_q = round(X_c s) / s;  backward 1{|X| <= 2.5}."""

    minitbt_class = mM.SymmetricA8
    OPTIONS = ("clip", "per_token", "bits")

    def __init__(self, clip: float = 2.5, per_token: bool = True, bits: int = 8):
        super().__init__(bits=bits, signed=True, clip=clip, per_token=per_token)
        self.options = dict(clip=clip, per_token=per_token, bits=bits)


class PerTokenAbsMax(MinMaxQuantizer):
    """Translation of minitbt's PerTokenAbsMax (BitNet b1.58): s_x = 127 / max|x| per token,
    X_q = round(x s_x) / s_x;  backward identity."""

    minitbt_class = mM.PerTokenAbsMax
    OPTIONS = ("bits",)

    def __init__(self, bits: int = 8):
        super().__init__(bits=bits, signed=True, clip=None, per_token=True)
        self.options = dict(bits=bits)
