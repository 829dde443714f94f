"""What a quantizer is, in PyTorch: minitbt.quant.base translated, and the base class every
translation shares.

    minitbt                                   minitbt.torch
    forward = ONE Tensor.make op              forward = ONE torch.autograd.Function
    backward written beside it (NumPy)        backward written beside it (torch)
    statistics are constants (no gradient)    computed inside Function.forward, so no graph reaches them
    learned scale a: a Parameter + the        the same: nn.Parameter ``scale`` + the buffer ``initialized``
    ``initialized`` buffer (first batch)      (a converted, initialised model never re-initialises)

The tie rules (``round_ties``, ``sign_ties``, minitbt's TIE_ULPS) are minitbt's, so the codes agree
value for value: a value within 256 ulps of a decision boundary is snapped onto it first.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import torch
from torch import nn

from minitbt.quant.base import TIE_ULPS

TORCH_DTYPES = {np.float16: torch.float16, np.float32: torch.float32, np.float64: torch.float64}


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


def lsq_scale_grad(g, q, u, inside):
    """g * d(a q)/da in the LSQ form (Esser et al. 2020): round(u) - u inside the clip range,
    the clip level (= q there) outside."""
    return g * torch.where(inside, q - u, q)


def lsq_grad_factor(n: int, qp: int) -> float:
    """LSQ's gradient scale g = 1 / sqrt(N * Qp)."""
    return 1.0 / math.sqrt(max(int(n), 1) * max(qp, 1))


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
