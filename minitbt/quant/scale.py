"""Learned scales: what every quantizer with a learned step ``a`` shares.

    first-batch initialisation   a = init(X) on the first call, recorded by the ``initialized`` buffer
    clamp in the forward         a_used = max(a, SCALE_EPS)        (as the released TBT/BiT code)
    LSQ gradient of a            dX_q/da = round(u) - u inside the clip range, the clip level outside
    LSQ gradient scale           dL/da <- g * dL/da,  g = 1 / sqrt(N * Qp)    (optional)

N is the number of elements the scale serves and Qp the top level. Esser et al. (LSQ, ICLR 2020)
introduce g so that a step's update is about as large, relative to the step, as a weight's update
relative to the weight; without it the gradient of one scale sums over N elements and grows like N.
With global-norm clipping that matters twice: the scales' gradients take most of the norm, and the
clip then shrinks every weight gradient (docs/methods.md section 8).

Used by the activation quantizers (TBT elastic, BiT, FQT per-channel) and the learned-scale weight
quantizer (ParetoQ's SEQ, ``learned_weight.py``).
"""
from __future__ import annotations

import numpy as np

from minitbt.nn.module import Parameter
from minitbt.quant.base import Quantizer

SCALE_EPS = 1e-5   # the smallest learned scale used in the forward


def lsq_scale_grad(g, q, u, inside):
    """d(a*q)/da in the LSQ form (Esser et al. 2020):  round(u) - u inside the clip range,
    the clip level (which equals q there) outside;  returns g * that."""
    return g * np.where(inside, q - u, q)


def lsq_grad_factor(n: int, qp: int) -> float:
    """LSQ's gradient scale g = 1 / sqrt(N * Qp) (Esser et al., ICLR 2020, section 2.2)."""
    return 1.0 / np.sqrt(max(int(n), 1) * max(qp, 1))


class LearnedScale(Quantizer):
    """A quantizer with a learned scale ``a`` (a Parameter) initialised on the first batch.

    Row-local once initialised: a row's codes depend on that row and the learned scale only, so a
    decoder's KV cache can keep each token's quantized K and V (nn/attention.py).

    The buffer ``initialized`` (saved in the state dict) records whether the first-batch
    initialisation has happened; ``init_scale`` (a float) skips it. Sub-classes give
    ``_init_value(x)``, the value of a computed from the first input.
    """

    row_local = True

    def _setup_scale(self, shape, init_scale, learn_scale=True):
        value = 1.0 if init_scale is None else init_scale
        self.scale = Parameter(np.full(shape, value, dtype=np.float32), requires_grad=learn_scale)
        self.register_buffer("initialized", np.array([init_scale is not None]))

    def _maybe_init(self, x: np.ndarray) -> None:
        if not bool(self.initialized[0]):
            a = np.asarray(self._init_value(x), dtype=np.float64)
            a = np.where(np.isfinite(a) & (a > SCALE_EPS), a, 1.0)
            self.scale.data[...] = a
            self.initialized[...] = True

    def _a(self, x):
        """The scale in use: max(a, SCALE_EPS), as the released TBT/BiT code clamps it
        (``torch.where(alpha > eps, alpha, eps)``). The optimizer can push a learned scale
        through zero (AdamW moves every parameter by about lr per step, and these scales are
        ~1e-2); unclamped, a negative scale on an unsigned quantizer maps every input to 0 and
        its gradient is 0 too, so it could never come back. The gradient goes to ``scale``
        unchanged (straight through the clamp), so a scale below SCALE_EPS can come back if the
        loss wants it (at 1-1-1 it does not: docs/results.md). Every learned-scale quantizer (TBT elastic, BiT,
        FQT per-channel, ParetoQ SEQ) reads its scale here."""
        return np.maximum(self.scale.data, SCALE_EPS).astype(x.dtype, copy=False)
