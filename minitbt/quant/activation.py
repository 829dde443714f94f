"""Activation quantizers with learned scales: fake quantization of the inputs of matmuls.
(Those whose scale is a statistic of the data, "min-max", are in quant/minmax.py.)

    class                 values                                   scale                          source
    ElasticQuantizer      signed {-a,0,a} / sign, k-bit; unsigned  learned a (LSQ gradient)       TBT (Liu et al. 2023)
                          {0,a,2a} / {0,a}, k-bit
    BiTElasticBinary      {0,a} or {-a,a}, learned offset b        learned a and b                BiT (Liu et al. 2022)
    PerChannelQuantizer   k-bit, one learned scale per channel      learned (LSQ)                  FQT (Prato et al. 2020)

Causality and step-by-step decoding. A decoder that runs one token at a time with a KV cache
must give each token the same quantized value as the full (B, T, d) forward. So every statistic
that depends on the data runs **per token**, over the last axis only: the centring mean of signed
activations (X' = X - mean over the last axis), the dynamic absmax, the minimum of the
"shift by the minimum" option. For the head states Q/K/V (B, H, T, d_h) that is per token and
head; for the attention probabilities (B, H, Tq, Tk) it is per query row, where masked keys are
exact zeros and so never change a maximum. Learned scales are data-independent once trained
(first-batch initialisation happens once). The per-tensor forms (``per_token=False``) mix
positions and batch elements: kept as options, they break incremental-decoding equality.
"""
from __future__ import annotations

import numpy as np

from minitbt.nn.module import Parameter
from minitbt.quant.base import (QCodes, finite_input, int_codes, round_ties, sign_ties, signed_levels,
                                unsigned_levels)
from minitbt.quant.scale import SCALE_EPS, LearnedScale, lsq_grad_factor, lsq_scale_grad   # noqa: F401
from minitbt.tensor import Tensor

BINARY_ZERO = ("plus", "zero")     # where an exact 0 goes at a signed 1-bit site: +a (sign(0) = +1) or 0
ELASTIC_INIT = ("levels", "code")  # first-batch rule for a: Qp of the levels in use, or the released code's


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _binary_levels(u, binary_zero):
    """Signed 1-bit codes of u: sign(u) in {-1, +1} with sign(0) = +1 ("plus"), or in {-1, 0, +1}
    with an exact 0 kept at 0 ("zero", torch.sign as the released TBT code uses it)."""
    return sign_ties(u, zero=binary_zero == "zero")


class ElasticQuantizer(LearnedScale):
    """TBT elastic activation quantizer: one learned scale a per quantized tensor.

    signed (centred per token first, X' = X - mean_last_axis(X)):
        1 bit:   X_q = a * sign(X')                               codes {-1, +1}
        k bits:  X_q = a * round(clip(X'/a, -Qp, Qp)),  Qp = 2^(k-1) - 1  (2 bits: ternary {-a,0,a})
    unsigned (post-ReLU, softmax probabilities):
        X_q = a * round(clip(X/a, 0, Qp)),  Qp = 1 (1 bit {0,a}), 2 (2 bits {0,a,2a}), 2^k - 1 (k >= 3)

    Backward (u = X'/a, "inside" = strictly within the clip range; 1-bit signed: |u| < 1):
        dX_q/dX = 1{inside}                     (straight-through; the centring mean is a statistic)
        dX_q/da = round(u) - u inside, the clip level (-Qp, Qp, 0) outside   (LSQ form);
                  signed binary: sign(X')
    Source: Liu et al., "Binary and Ternary Natural Language Generation", ACL 2023 (TBT); the
    scale gradient is LSQ's (Esser et al., ICLR 2020).

    Initialisation on the first call (any mode), ``init="levels"`` (default):
        a = 2 mean|X'| / sqrt(Qp) (signed),  a = 4 mean|X| / sqrt(Qp) (unsigned),  Qp of the levels above;
    ``init="code"``, the released code's rule (its ``AlphaInit.initialize_wrapper``), on X as given:
        a = 2 mean|X| / sqrt(max(1, 2^(k-1) - 1)) (signed),  a = 4 mean|X| / sqrt(2^k - 1) (unsigned).
    The two differ for unsigned 2 bits only (sqrt(2) against sqrt(3): "levels" is sqrt(1.5) times
    "code"), and where centring or shift_min changes X. The paper gives no rule. ``init_scale=`` fixes a.
    Released-code options: ``centre=False``; ``lsq_grad_scale=True`` multiplies dL/da by
    1/sqrt(N Qp), N = number of elements of X; ``shift_min=True`` (unsigned only) quantizes
    X - m with m = min over the last axis (per token) and adds m back: X_q = a*round(clip((X-m)/a, 0, Qp)) + m.
    On attention probabilities the masked keys (exact zeros) would enter that minimum and break
    step-by-step decoding equality, so quantize_model uses it on the FFN input only.
    ``binary_zero="zero"`` (signed 1 bit): an exact X' = 0 gives X_q = 0 (code 0), as torch.sign in
    the released code, instead of +a; such codes no longer fit one bit (pack_model refuses them).
    ``learn_scale=False`` freezes a.
    """

    def __init__(self, bits: int = 2, signed: bool = True, centre: bool = True, lsq_grad_scale: bool = False,
                 shift_min: bool = False, init_scale: float = None, learn_scale: bool = True,
                 init: str = "levels", binary_zero: str = "plus"):
        super().__init__()
        if shift_min and signed:
            raise ValueError("shift_min applies to unsigned quantizers only")
        self.precision, self.signed = int(bits), bool(signed)
        self.centre = bool(centre) and self.signed
        self.lsq_grad_scale, self.shift_min = bool(lsq_grad_scale), bool(shift_min)
        self.init = _choice("init", init, ELASTIC_INIT)
        self.binary_zero = _choice("binary_zero", binary_zero, BINARY_ZERO)
        self.qp = signed_levels(bits) if signed else unsigned_levels(bits)
        self.lo = -self.qp if signed else 0
        self._setup_scale((1,), init_scale, learn_scale)

    # the input the levels apply to, and what is added back after scaling
    def _shifted(self, x):
        if self.centre:
            return x - x.mean(axis=-1, keepdims=True), np.zeros((), x.dtype)
        if self.shift_min:
            m = x.min(axis=-1, keepdims=True)
            return x - m, m
        return x, np.zeros((), x.dtype)

    def _init_value(self, x):
        k = 2.0 if self.signed else 4.0
        if self.init == "code":                                  # Qp as AlphaInit computes it, X as given
            qp = max(1, 2 ** (self.precision - 1) - 1) if self.signed else 2 ** self.precision - 1
            return k * np.abs(x).mean() / np.sqrt(qp)
        xs, _ = self._shifted(x)
        return k * np.abs(xs).mean() / np.sqrt(self.qp)

    def _quantize(self, x):
        """(q, a, offset, dq/da, inside): the codes as floats and what the backward needs, from
        kernels.fake_quantize (one compiled pass in float32; its reference is the equations above
        with round_ties / sign_ties)."""
        from minitbt.kernels.quantize import fake_quantize   # here: importing quant loads no kernels
        xs, offset = self._shifted(x)
        a = self._a(x)
        if self.signed and self.precision == 1:
            mode = self.binary_zero   # "plus": sign(0) = +1; "zero": an exact 0 stays 0
        else:
            mode = "levels"
        q, dqda, inside = fake_quantize(xs, a, self.lo, self.qp, mode)
        return q, a, offset, dqda, inside

    def forward(self, x: Tensor) -> Tensor:
        xd = x.data
        self._maybe_init(xd)
        q, a, offset, dqda, inside = self._quantize(xd)
        y = q * a + offset
        gscale = lsq_grad_factor(xd.size, self.qp) if self.lsq_grad_scale else 1.0

        def backward(g):
            gx = g * inside
            ga = (g * dqda).sum()      # dq/da: round(u) - u inside, the clip level outside; sign(X') at 1 bit
            return gx, np.full(self.scale.data.shape, ga * gscale, dtype=self.scale.data.dtype)
        return Tensor.make(y.astype(xd.dtype, copy=False), (x, self.scale), backward, "elastic_quant")

    def codes(self, x) -> QCodes:
        xd = finite_input(x)
        self._maybe_init(xd)
        q, a, offset, _, _ = self._quantize(xd)
        return QCodes(int_codes(q, self.lo, self.qp), a, offset)

    def extra_repr(self):
        s = f"{self.precision}-bit, {'signed' if self.signed else 'unsigned'}"
        if self.signed:
            s += f", centre={self.centre}"
        if self.lsq_grad_scale:
            s += ", lsq_grad_scale"
        if self.shift_min:
            s += ", shift_min"
        if self.init != "levels":
            s += f", init={self.init}"
        if self.signed and self.precision == 1 and self.binary_zero != "plus":
            s += f", binary_zero={self.binary_zero}"
        if not self.scale.requires_grad:
            s += ", fixed scale"
        return s


class BiTElasticBinary(LearnedScale):
    """BiT elastic binary activation with learned scale a and learned offset b (two-set binarization).

        non-negative (signed=False):  X_B = a * round(clip((X - b)/a, 0, 1))   in {0, a}
        signed:                       X_B = a * sign(X - b)                    in {-a, a}

    Backward (u = (X - b)/a; inside = 0 <= u < 1 for {0,a}, |u| < 1 for {-a,a}):
        dX_B/dX = 1{inside},  dX_B/db = -1{inside},
        dX_B/da = round(u) - u inside, the clip level (0 or 1) outside (LSQ form); signed: sign(X - b)
    Initialisation on the first call: a = mean|X|, b = 0.
    ``lsq_grad_scale=True`` multiplies dL/da (not dL/db: BiT's offset is a plain learned bias) by
    1/sqrt(N), N = number of elements of X (Qp = 1), as BiT's and TBT's released code do.
    ``binary_zero="zero"`` (signed): X = b exactly gives 0 instead of +a (torch.sign in that code).
    Source: Liu et al., "BiT: Robustly Binarized Multi-distilled Transformer", NeurIPS 2022.
    """

    precision = 1

    def __init__(self, signed: bool = True, init_scale: float = None, lsq_grad_scale: bool = False,
                 binary_zero: str = "plus"):
        super().__init__()
        self.signed, self.lsq_grad_scale = bool(signed), bool(lsq_grad_scale)
        self.binary_zero = _choice("binary_zero", binary_zero, BINARY_ZERO)
        self._setup_scale((1,), init_scale)
        self.offset = Parameter(np.zeros(1, dtype=np.float32))

    def _init_value(self, x):
        return np.abs(x).mean()

    def _quantize(self, x):
        a, b = self._a(x), self.offset.data.astype(x.dtype, copy=False)
        u = (x - b) / a
        if self.signed:
            q = _binary_levels(u, self.binary_zero)
            inside = np.abs(u) < 1
        else:
            q = np.clip(round_ties(u), 0, 1)
            inside = (u >= 0) & (u < 1)
        return q, a, u, inside

    def forward(self, x: Tensor) -> Tensor:
        xd = x.data
        self._maybe_init(xd)
        q, a, u, inside = self._quantize(xd)
        y = q * a + np.zeros((), xd.dtype)
        gscale = lsq_grad_factor(xd.size, 1) if self.lsq_grad_scale else 1.0

        def backward(g):
            gx = g * inside
            ga = ((g * q).sum() if self.signed else lsq_scale_grad(g, q, u, inside).sum()) * gscale
            gb = -gx.sum()
            shape, dt = self.scale.data.shape, self.scale.data.dtype
            return gx, np.full(shape, ga, dtype=dt), np.full(shape, gb, dtype=dt)
        return Tensor.make(y.astype(xd.dtype, copy=False), (x, self.scale, self.offset), backward, "bit_binary")

    def codes(self, x) -> QCodes:
        xd = finite_input(x)
        self._maybe_init(xd)
        q, a, _, _ = self._quantize(xd)
        return QCodes(int_codes(q, -1, 1), a, np.zeros((), xd.dtype))

    def extra_repr(self):
        s = "{-a, a}, learned offset" if self.signed else "{0, a}, learned offset"
        if self.lsq_grad_scale:
            s += ", lsq_grad_scale"
        if self.signed and self.binary_zero != "plus":
            s += f", binary_zero={self.binary_zero}"
        return s


class PerChannelQuantizer(LearnedScale):
    """FQT per-channel uniform quantizer with learned scales s_c (one per last-axis channel):

        signed:    X_q = s_c * round(clip(X/s_c, -Qp, Qp)),  Qp = 2^(k-1) - 1
        unsigned:  X_q = s_c * round(clip(X/s_c, 0, 2^k - 1))    (ReLU outputs, softmax probabilities)
        backward:  dX_q/dX = 1{inside};  dX_q/ds_c = round(u) - u inside, the clip level outside (LSQ),
                   summed over every axis but the channel axis.
    ``channels=None`` gives one learned scale for the whole tensor (for inputs whose last axis
    varies in length, such as attention probabilities). Initialisation on the first call:
    s_c = max|X_c| / Qp (min-max over the first batch). ``lsq_grad_scale=True`` multiplies dL/ds_c by
    LSQ's 1/sqrt(N Qp), N = the elements one scale serves (X.size / C, or X.size with one scale).
    Source: Prato et al., "Fully Quantized Transformer for Machine Translation", Findings of EMNLP 2020;
    learned-scale gradient from LSQ (Esser et al. 2020).
    """

    def __init__(self, channels: int = None, bits: int = 8, signed: bool = True, init_scale: float = None,
                 lsq_grad_scale: bool = False):
        super().__init__()
        self.channels, self.precision, self.signed = channels, int(bits), bool(signed)
        self.lsq_grad_scale = bool(lsq_grad_scale)
        self.qp = signed_levels(bits) if signed else 2 ** bits - 1
        self.lo = -self.qp if signed else 0
        self._setup_scale((channels if channels else 1,), init_scale)

    def _init_value(self, x):
        axes = tuple(range(x.ndim - 1)) if self.channels else None
        m = np.abs(x).max(axis=axes)
        return m / self.qp

    def _quantize(self, x):
        if self.channels and x.shape[-1] != self.channels:
            raise ValueError(f"PerChannelQuantizer: expected {self.channels} channels, got {x.shape[-1]}")
        a = self._a(x)
        u = x / a
        q = np.clip(round_ties(u, self.qp), self.lo, self.qp)
        inside = (u > self.lo) & (u < self.qp)
        return q, a, u, inside

    def forward(self, x: Tensor) -> Tensor:
        xd = x.data
        self._maybe_init(xd)
        q, a, u, inside = self._quantize(xd)
        y = q * a + np.zeros((), xd.dtype)
        served = xd.size // self.channels if self.channels else xd.size     # elements per scale
        gscale = lsq_grad_factor(served, self.qp) if self.lsq_grad_scale else 1.0

        def backward(g):
            gs = lsq_scale_grad(g, q, u, inside)
            gs = gs.reshape(-1, gs.shape[-1]).sum(axis=0) if self.channels else np.full(1, gs.sum())
            return g * inside, (gs * gscale).astype(self.scale.data.dtype)
        return Tensor.make(y.astype(xd.dtype, copy=False), (x, self.scale), backward, "per_channel_quant")

    def codes(self, x) -> QCodes:
        xd = finite_input(x)
        self._maybe_init(xd)
        q, a, _, _ = self._quantize(xd)
        return QCodes(int_codes(q, self.lo, self.qp), a, np.zeros((), xd.dtype))

    def extra_repr(self):
        ch = f"{self.channels} channels" if self.channels else "one scale"
        s = f"{self.precision}-bit, {'signed' if self.signed else 'unsigned'}, {ch}"
        return s + (", lsq_grad_scale" if self.lsq_grad_scale else "")
