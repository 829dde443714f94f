"""Straight-through estimators (STE): the pseudo-gradients of non-differentiable quantizers.

A quantizer's true derivative is zero almost everywhere (round, sign are step functions).
The STE (Bengio et al. 2013; Hubara et al. 2016) replaces it in the backward by a surrogate
``dq/dx``; the forward stays exact. The three classic ones, as functions of the (normalised)
input u:

    identity      dq/du = 1                                      (Bengio et al. 2013)
    clipped       dq/du = 1{|u| < 1}                             (Hubara et al. 2016, "hard tanh")
    approx_sign   dq/du = 2 - 2|u|  for |u| < 1, else 0          (Bi-Real Net, Liu et al. 2018:
                  the derivative of the piecewise-quadratic   F(u) = 2u + u^2 (u<0), 2u - u^2 (u>=0))

``Sign(ste=...)`` is the plain binarizer y = sign(x) in {-1, +1} with any of the three, and
``custom_quantizer(forward_fn, grad_fn, precision)`` turns any pair of NumPy functions into
a quantizer: forward ``y = forward_fn(x)``, backward ``dL/dx = g * grad_fn(x)``.
"""
from __future__ import annotations

import numpy as np

from minitbt.quant.base import QCodes, Quantizer, int_codes, sign
from minitbt.tensor import Tensor


def identity_grad(u: np.ndarray) -> np.ndarray:
    """dq/du = 1 everywhere."""
    return np.ones_like(u)


def clipped_grad(u: np.ndarray, limit: float = 1.0) -> np.ndarray:
    """dq/du = 1{|u| < limit}."""
    return (np.abs(u) < limit).astype(u.dtype)


def approx_sign_grad(u: np.ndarray) -> np.ndarray:
    """dq/du = 2 - 2|u| for |u| < 1, else 0 (Bi-Real Net's ApproxSign)."""
    a = np.abs(u)
    return np.where(a < 1, 2 - 2 * a, 0).astype(u.dtype)


STE_GRADS = {"identity": identity_grad, "clipped": clipped_grad, "approx_sign": approx_sign_grad}


def ste_grad(name: str):
    """Look up an STE by name: "identity", "clipped" or "approx_sign"."""
    try:
        return STE_GRADS[name]
    except KeyError:
        raise ValueError(f"unknown STE {name!r}: use one of {sorted(STE_GRADS)}") from None


class Sign(Quantizer):
    """Binarizer without scale:  y = sign(x) in {-1, +1}  (sign(0) = +1).

    Backward:  dL/dx = g * STE(x),  STE in {"identity", "clipped" (default), "approx_sign"}.
    Source: BinaryConnect/BNN (Courbariaux, Hubara et al. 2016); ApproxSign: Bi-Real Net (Liu et al. 2018).
    """

    precision = 1

    def __init__(self, ste: str = "clipped"):
        super().__init__()
        self.ste = ste
        self._grad = ste_grad(ste)

    def forward(self, x: Tensor) -> Tensor:
        xd = x.data
        y = sign(xd)

        def backward(g):
            return (g * self._grad(xd),)
        return Tensor.make(y, (x,), backward, f"sign[{self.ste}]")

    def codes(self, x) -> QCodes:
        xd = x.data if isinstance(x, Tensor) else np.asarray(x)
        return QCodes(int_codes(sign(xd), -1, 1), np.ones((), xd.dtype), np.zeros((), xd.dtype))

    def extra_repr(self):
        return f"ste={self.ste}"


class ApproxSign(Sign):
    """y = sign(x); backward dL/dx = g * (2 - 2|x|) for |x| < 1, else 0 (Bi-Real Net, Liu et al. 2018)."""

    def __init__(self):
        super().__init__("approx_sign")

    def extra_repr(self):
        return ""


class CustomQuantizer(Quantizer):
    """A quantizer from two NumPy functions: y = forward_fn(x);  dL/dx = g * grad_fn(x).

    ``codes_fn(x) -> QCodes`` is optional; without it ``codes()`` raises.
    """

    def __init__(self, forward_fn, grad_fn, precision: int, name: str = "custom", codes_fn=None):
        super().__init__()
        self.forward_fn, self.grad_fn, self.codes_fn = forward_fn, grad_fn, codes_fn
        self.precision = int(precision)
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        xd = x.data
        y = np.asarray(self.forward_fn(xd), dtype=xd.dtype)
        if y.shape != xd.shape:
            raise ValueError(f"{self.name}: forward_fn changed the shape {xd.shape} -> {y.shape}")

        def backward(g):
            return ((g * self.grad_fn(xd)).astype(g.dtype, copy=False),)
        return Tensor.make(y, (x,), backward, self.name)

    def codes(self, x) -> QCodes:
        if self.codes_fn is None:
            raise NotImplementedError(f"{self.name}: built without codes_fn, so it has no integer codes")
        return self.codes_fn(x.data if isinstance(x, Tensor) else np.asarray(x))

    def extra_repr(self):
        return f"{self.name}, precision={self.precision}"


def custom_quantizer(forward_fn, grad_fn, precision: int, name: str = "custom", codes_fn=None) -> CustomQuantizer:
    """Make a quantizer from ``forward_fn(x) -> y`` and ``grad_fn(x) -> dy/dx`` (both NumPy).

    ``grad_fn`` may be one of this module's STEs or any elementwise function, e.g. a
    3-level quantizer with a clipped STE:

    >>> q = custom_quantizer(lambda x: np.clip(np.rint(x), -1, 1), clipped_grad, precision=2)
    """
    return CustomQuantizer(forward_fn, grad_fn, precision, name, codes_fn)
