"""Weight quantizers with a learned scale: ParetoQ's stretched elastic quant (SEQ).

The statistics-based weights of weight.py compute their scale from W at every step. Here the
scale a of each output row is a Parameter, initialised from W on the first call and then learned
with an LSQ gradient (Esser et al., ICLR 2020), like the activation scales of activation.py.
"""
from __future__ import annotations

import numpy as np

from minitbt.quant.base import QCodes, int_codes, sign
from minitbt.quant.scale import LearnedScale, lsq_grad_factor
from minitbt.tensor import Tensor


class SEQWeight(LearnedScale):
    """ParetoQ weights with a learned scale a_r per output row r (W of shape (rows, in), u = W/a_r):

        ternary (bits=2), stretched elastic quant, n = 1.5, c = 0.99:
            W_q = (a_r / n) * round(n * clip(u, -c, c))          levels {-2/3, 0, +2/3} * a_r
            the three bins [-1, -1/3), [-1/3, 1/3), [1/3, 1] of u have equal width ("stretched"),
            unlike TBT's {-a, 0, a} with bins of width 1/2, 1, 1/2 (round(clip(u, -1, 1)))
        binary (bits=1):  W_q = a_r * sign(W)                    levels {-1, +1} * a_r

    Backward (inside: |u| <= c ternary, |u| <= 1 binary):
        dW_q/dW   = 1{inside}                                             (straight-through)
        dW_q/da_r = q/n - u inside, q/n outside (the level at the clip)   ternary, q = round(n clip(u))
                  = sign(W)                                              binary
        then dL/da_r is multiplied by LSQ's g = 1/sqrt(N), N = W.size (Qp = 1), as ParetoQ's code does.
    Initialisation on the first call: a_r = max|W_r| (ternary), mean|W_r| (binary).
    ``codes(W)``: codes in {-1, 0, +1}, scale a_r / n per row (ternary) or a_r (binary).

    Source: Liu et al., "ParetoQ: Scaling Laws in Extremely Low-bit LLM Quantization", NeurIPS 2025
    (docs/methods.md section 8). One deviation from ParetoQ's released code: outside the clip its
    gradient of a is +-1 (the clip bound of u), here it is the level reached there, +-1/n, the
    derivative of the forward with the codes held (the LSQ rule every other learned scale here uses).
    """

    N_LEVELS = 1.5      # n: ternary codes {-1, 0, 1} at u in {-2/3, 0, 2/3}
    CLIP = 0.99         # c: round(n * c) = 1, so the outer level is 1/n

    row_local = False   # the scale is indexed by row: QuantEmbedding quantizes the whole table
    per_row = True

    def __init__(self, bits: int = 2, rows: int = None, init_scale: float = None):
        super().__init__()
        if bits not in (1, 2):
            raise ValueError(f"SEQWeight is ternary (bits=2) or binary (bits=1), got bits={bits!r}")
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
            raise ValueError(f"SEQWeight needs the number of rows of its weight (one scale each), got {rows!r}")
        self.precision, self.rows = int(bits), int(rows)
        self._setup_scale((self.rows,), init_scale)          # 1-D: AdamW gives it no weight decay

    def _init_value(self, w):
        return np.abs(w).max(axis=-1) if self.precision == 2 else np.abs(w).mean(axis=-1)

    def _quantize(self, w):
        if w.ndim != 2 or w.shape[0] != self.rows:
            raise ValueError(f"SEQWeight: expected a ({self.rows}, in) weight, got shape {w.shape}")
        a = self._a(w)[:, None]                                                # (rows, 1)
        u = w / a                                                              # (rows, in)
        if self.precision == 1:
            return sign(w), a, u, np.abs(u) <= 1
        q = np.rint(np.clip(u, -self.CLIP, self.CLIP) * self.N_LEVELS)        # {-1, 0, 1}
        return q, a / np.asarray(self.N_LEVELS, w.dtype), u, np.abs(u) <= self.CLIP

    def forward(self, w: Tensor) -> Tensor:
        wd = w.data
        self._maybe_init(wd)
        q, step, u, inside = self._quantize(wd)
        y = q * step                                                           # (rows, in)
        gscale = lsq_grad_factor(wd.size, 1)
        binary = self.precision == 1

        def backward(g):
            if binary:
                da = q
            else:
                level = q / self.N_LEVELS
                da = np.where(inside, level - u, level)
            ga = (g * da).sum(axis=-1) * gscale                                # (rows,)
            return (g * inside).astype(g.dtype, copy=False), ga.astype(self.scale.data.dtype)
        return Tensor.make(y.astype(wd.dtype, copy=False), (w, self.scale), backward, "seq_weight")

    def codes(self, w) -> QCodes:
        wd = w.data if isinstance(w, Tensor) else np.asarray(w)
        self._maybe_init(wd)
        q, step, _, _ = self._quantize(wd)
        return QCodes(int_codes(q, -1, 1), step, np.zeros((), wd.dtype))

    def extra_repr(self):
        kind = "ternary, stretched levels {-2/3, 0, 2/3}a" if self.precision == 2 else "binary"
        return f"{self.precision}-bit, {kind}, learned scale per row ({self.rows})"
