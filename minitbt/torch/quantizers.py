"""minitbt's quantizers translated to PyTorch: the same equations, the same pseudo-gradients.

Each class below is a translation of the minitbt class of the same name (minitbt/quant/weight.py,
minitbt/quant/activation.py), written from the equations in its docstring:

    minitbt                                   here
    forward = ONE Tensor.make op              forward = ONE torch.autograd.Function
    backward written beside it (NumPy)        backward written beside it (torch)
    statistics are constants (no gradient)    computed inside Function.forward, so no graph reaches them
    learned scale a: a Parameter + the        the same: nn.Parameter ``scale`` + the buffer ``initialized``
    ``initialized`` buffer (first batch)      (a converted, initialised model never re-initialises)

    class                 forward                                                  backward (STE)
    TBTTernaryWeight      mu = mean W_r, a = 4/3 mean|W_r - mu|,                   1{|(W-mu)/a| < 1} (clipped)
                          a * round(clip((W - mu)/a, -1, 1))                       or identity
    TBTBinaryWeight       mu = mean W_r, a = mean|W_r - mu|, a * sign(W - mu)      1{|(W-mu)/a| < 1} or identity
    TWNWeight             d = 0.7 mean|W|, a = mean(|W| : |W| > d), a sign(W) 1{|W|>d}   identity
    BWNWeight             a = mean|W|, a * sign(W) (centre: sign(W - mean W))      identity
    AbsMeanWeight         s = mean|W|, s * clip(round(W/s), -1, 1)                 identity
    AbsMaxWeight          a = max|W_r| / Qp, a * round(W/a)                        identity
    ElasticQuantizer      a * round(clip(X'/a, lo, Qp)), a * sign(X')  (learned a) 1{inside}; LSQ for a
    BiTElasticBinary      a * round(clip((X-b)/a, 0, 1)), a * sign(X - b)         1{inside}; LSQ for a; -1{inside} for b
    MinMaxQuantizer       a = max|X_c| / Qp per token, a * round(X_c/a)            1{|X| <= c}, 1{X >= 0}, or 1
    SymmetricA8           MinMaxQuantizer(8 bits, signed, clip 2.5)                1{|X| <= 2.5}
    PerTokenAbsMax        MinMaxQuantizer(k bits, signed, no clip)                 identity

Sources: TBT (Liu et al., ACL 2023), BiT (Liu et al., NeurIPS 2022), TWN (Li et al. 2016),
XNOR-Net (Rastegari et al. 2016), TernaryBERT (Zhang et al., EMNLP 2020), BitNet b1.58
(Ma et al. 2024), LSQ (Esser et al., ICLR 2020). The tie rules (``round_ties``, ``sign_ties``) and
the constants (TIE_ULPS, SCALE_EPS) are minitbt's, so the codes agree value for value.

``TRANSLATIONS`` maps each minitbt class to its translation; ``translate(q)`` converts one
quantizer and raises NotImplementedError for a class (or an option) that has none.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import torch
from torch import nn

from minitbt.quant import activation as mA
from minitbt.quant import weight as mW
from minitbt.quant.activation import SCALE_EPS      # the smallest learned scale used in the forward
from minitbt.quant.base import TIE_ULPS, signed_levels, unsigned_levels
from minitbt.quant.weight import _EPS               # a statistic scale below this is an all-zero row: use 1
from minitbt.tensor import Tensor

TORCH_DTYPES = {np.float16: torch.float16, np.float32: torch.float32, np.float64: torch.float64}


# ---- minitbt.quant.base, translated ------------------------------------------------------------
def _tie_tol(u: torch.Tensor, span) -> torch.Tensor:
    """TIE_ULPS ulps of max(span, |u|): the window in which a value counts as a tie."""
    return TIE_ULPS * torch.finfo(u.dtype).eps * torch.clamp(u.abs(), min=span)


def round_ties(u: torch.Tensor, span: float = 1) -> torch.Tensor:
    """round(u) (half to even), a value within the tie window of a half-integer snapped onto it first."""
    b = torch.floor(u) + 0.5
    return torch.round(torch.where((u - b).abs() < _tie_tol(u, span), b, u))


def sign_ties(u: torch.Tensor, zero: bool = False) -> torch.Tensor:
    """sign(u) in {-1, +1} (sign(0) = +1), |u| inside the tie window counted as 0;
    ``zero=True``: in {-1, 0, +1}, 0 inside the window."""
    one = torch.ones_like(u)
    tie = u.abs() < _tie_tol(u, 1)
    if zero:
        return torch.where(tie, torch.zeros_like(u), torch.where(u > 0, one, -one))
    return torch.where((u >= 0) | tie, one, -one)


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, -1 elsewhere (binary weight codes never take 0)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def reduce_dims(ndim: int, per_row: bool) -> tuple:
    """The axes a statistic runs over: the last one (per row / per token) or all of them."""
    return (ndim - 1,) if per_row else tuple(range(ndim))


def _safe(a: torch.Tensor) -> torch.Tensor:
    """A scale of exactly 0 (an all-zero row) would divide by zero: use 1 there (codes are 0 anyway)."""
    return torch.where(a > _EPS, a, torch.ones_like(a))


def lsq_scale_grad(g, q, u, inside):
    """g * d(a q)/da in the LSQ form (Esser et al. 2020): round(u) - u inside the clip range,
    the clip level (= q there) outside."""
    return g * torch.where(inside, q - u, q)


def lsq_grad_factor(n: int, qp: int) -> float:
    """LSQ's gradient scale g = 1 / sqrt(N * Qp)."""
    return 1.0 / math.sqrt(max(int(n), 1) * max(qp, 1))


# ---- the base class ----------------------------------------------------------------------------
class Quantizer(nn.Module):
    """Base class: ``minitbt_class`` is the minitbt quantizer this translates, ``OPTIONS`` the
    constructor arguments the translation implements. ``to_minitbt()`` builds the minitbt quantizer
    with the same options (without its state), so ``describe()`` reads exactly as minitbt's."""

    minitbt_class = None
    OPTIONS: tuple = ()
    precision = 32
    row_local = False

    def __init__(self, **options):
        super().__init__()
        self.options = options

    @classmethod
    def from_minitbt(cls, q) -> "Quantizer":
        """The translation of the minitbt quantizer ``q``: its options, and its state (learned scale,
        offset, ``initialized`` flag) in the dtype minitbt holds it in."""
        accepted = inspect.signature(cls.minitbt_class.__init__).parameters
        tq = cls(**{name: _read_option(q, name) for name in cls.OPTIONS if name in accepted})
        state = q.state_dict()
        floats = [arr.dtype for arr in state.values() if arr.dtype.kind == "f"]
        if floats:
            tq.to(TORCH_DTYPES[floats[0].type])
        tq.load_state_dict({name: torch.from_numpy(np.array(arr)) for name, arr in state.items()})
        return tq

    def to_minitbt(self):
        accepted = inspect.signature(self.minitbt_class.__init__).parameters
        return self.minitbt_class(**{k: v for k, v in self.options.items() if k in accepted})

    def describe(self) -> str:
        return self.to_minitbt().describe()

    def extra_repr(self) -> str:
        return self.to_minitbt().extra_repr()


def _read_option(q, name):
    """A constructor argument of a minitbt quantizer, read back from the instance."""
    if name == "bits":
        return q.precision
    if name == "learn_scale":
        return bool(q.scale.requires_grad)
    if name == "init_scale":
        return None                          # the scale itself is copied with the state
    if name == "init":
        return getattr(q, "init", "levels")
    if name == "binary_zero":
        return getattr(q, "binary_zero", "plus")
    return getattr(q, name)


# ---- weight quantizers (minitbt/quant/weight.py) -------------------------------------------------
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


# ---- activation quantizers with a learned scale (minitbt/quant/activation.py, scale.py) ----------
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

    minitbt_class = mA.MinMaxQuantizer
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

    minitbt_class = mA.SymmetricA8
    OPTIONS = ("clip", "per_token", "bits")

    def __init__(self, clip: float = 2.5, per_token: bool = True, bits: int = 8):
        super().__init__(bits=bits, signed=True, clip=clip, per_token=per_token)
        self.options = dict(clip=clip, per_token=per_token, bits=bits)


class PerTokenAbsMax(MinMaxQuantizer):
    """Translation of minitbt's PerTokenAbsMax (BitNet b1.58): s_x = 127 / max|x| per token,
    X_q = round(x s_x) / s_x;  backward identity."""

    minitbt_class = mA.PerTokenAbsMax
    OPTIONS = ("bits",)

    def __init__(self, bits: int = 8):
        super().__init__(bits=bits, signed=True, clip=None, per_token=True)
        self.options = dict(bits=bits)


# ---- minitbt class -> translation ---------------------------------------------------------------
TRANSLATIONS = {cls.minitbt_class: cls for cls in (
    TBTTernaryWeight, TBTBinaryWeight, TWNWeight, BWNWeight, AbsMeanWeight, AbsMaxWeight,
    ElasticQuantizer, BiTElasticBinary, MinMaxQuantizer, SymmetricA8, PerTokenAbsMax)}

# instance attributes that are state or plumbing, not options
_NOT_OPTIONS = {"training", "_buffer_names", "scale", "offset", "initialized"}


def translate(q):
    """The PyTorch translation of the minitbt quantizer ``q`` (None stays None), with its state.

    Raises NotImplementedError for a class without a translation (the exact class: a subclass is
    another quantizer) and for an option the translation does not implement: the minitbt quantizer
    rebuilt from the translated options must equal ``q`` attribute for attribute."""
    if q is None:
        return None
    cls = TRANSLATIONS.get(type(q))
    if cls is None:
        names = ", ".join(sorted(c.__name__ for c in TRANSLATIONS))
        raise NotImplementedError(f"{type(q).__name__} ({q.describe()}) has no PyTorch translation in "
                                  f"minitbt.torch; translated: {names}")
    tq = cls.from_minitbt(q)
    rebuilt = tq.to_minitbt()
    for name in sorted((set(vars(q)) | set(vars(rebuilt))) - _NOT_OPTIONS):
        mine, theirs = vars(q).get(name, "<absent>"), vars(rebuilt).get(name, "<absent>")
        if isinstance(mine, np.ndarray) or (callable(mine) and callable(theirs)):
            continue
        if type(mine) is not type(theirs) or (not isinstance(mine, Tensor) and mine != theirs):
            raise NotImplementedError(f"{type(q).__name__}: option {name}={mine!r} has no PyTorch translation "
                                      f"in minitbt.torch (translated options: {', '.join(cls.OPTIONS)})")
    if getattr(q, "scale", None) is not None and q.scale.requires_grad != tq.scale.requires_grad:
        raise NotImplementedError(f"{type(q).__name__}: learn_scale={q.scale.requires_grad} not translated")
    return tq
