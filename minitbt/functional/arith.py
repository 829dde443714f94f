"""Elementwise arithmetic, nonlinearities and matrix products.

Every op: forward on ndarrays, then ``backward(g)`` returning dL/d(input) for each input,
written right beside it (micrograd style). ``g`` is dL/d(output), same shape as the output.
Broadcasting is undone with ``unbroadcast`` so each gradient has its input's shape.
"""
import math

import numpy as np

from minitbt.tensor import Tensor
from minitbt.functional._util import as_tensor, unbroadcast

make = Tensor.make


# ---- binary arithmetic -------------------------------------------------------------------
def add(a, b) -> Tensor:
    """y = a + b;  dy/da = dy/db = 1."""
    a = as_tensor(a)
    b = as_tensor(b, like=a)
    sa, sb = a.data.shape, b.data.shape

    def backward(g):
        return unbroadcast(g, sa), unbroadcast(g, sb)
    return make(a.data + b.data, (a, b), backward, "add")


def sub(a, b) -> Tensor:
    """y = a - b;  dy/da = 1, dy/db = -1."""
    a = as_tensor(a)
    b = as_tensor(b, like=a)
    sa, sb = a.data.shape, b.data.shape

    def backward(g):
        return unbroadcast(g, sa), unbroadcast(-g, sb)
    return make(a.data - b.data, (a, b), backward, "sub")


def mul(a, b) -> Tensor:
    """y = a * b;  dy/da = b, dy/db = a."""
    a = as_tensor(a)
    b = as_tensor(b, like=a)
    ad, bd = a.data, b.data

    def backward(g):
        ga = unbroadcast(g * bd, ad.shape) if a.requires_grad else None
        gb = unbroadcast(g * ad, bd.shape) if b.requires_grad else None
        return ga, gb
    return make(ad * bd, (a, b), backward, "mul")


def div(a, b) -> Tensor:
    """y = a / b;  dy/da = 1/b, dy/db = -a/b^2."""
    a = as_tensor(a)
    b = as_tensor(b, like=a)
    ad, bd = a.data, b.data

    def backward(g):
        ga = unbroadcast(g / bd, ad.shape) if a.requires_grad else None
        gb = unbroadcast(-g * ad / (bd * bd), bd.shape) if b.requires_grad else None
        return ga, gb
    return make(ad / bd, (a, b), backward, "div")


def neg(a: Tensor) -> Tensor:
    """y = -a."""
    return make(-a.data, (a,), lambda g: (-g,), "neg")


def pow(a: Tensor, p: float) -> Tensor:
    """y = a^p for a constant exponent p;  dy/da = p a^(p-1)."""
    if isinstance(p, Tensor):
        raise TypeError("pow takes a constant exponent; use exp(p * log(a)) for a tensor exponent")
    ad = a.data

    def backward(g):
        return (g * p * ad ** (p - 1),)
    return make(ad ** p, (a,), backward, "pow")


# ---- unary functions ----------------------------------------------------------------------
def exp(a: Tensor) -> Tensor:
    """y = e^a;  dy/da = y."""
    y = np.exp(a.data)
    return make(y, (a,), lambda g: (g * y,), "exp")


def log(a: Tensor) -> Tensor:
    """y = ln a;  dy/da = 1/a."""
    ad = a.data
    return make(np.log(ad), (a,), lambda g: (g / ad,), "log")


def sqrt(a: Tensor) -> Tensor:
    """y = sqrt(a);  dy/da = 1 / (2 y)."""
    y = np.sqrt(a.data)
    return make(y, (a,), lambda g: (g / (2 * y),), "sqrt")


def abs(a: Tensor) -> Tensor:
    """y = |a|;  dy/da = sign(a) (0 at 0)."""
    ad = a.data
    return make(np.abs(ad), (a,), lambda g: (g * np.sign(ad),), "abs")


def tanh(a: Tensor) -> Tensor:
    """y = tanh a;  dy/da = 1 - y^2."""
    y = np.tanh(a.data)
    return make(y, (a,), lambda g: (g * (1 - y * y),), "tanh")


def sigmoid(a: Tensor) -> Tensor:
    """y = 1 / (1 + e^-a);  dy/da = y (1 - y)."""
    y = 0.5 * (1 + np.tanh(0.5 * a.data))  # stable for large |a|
    return make(y, (a,), lambda g: (g * y * (1 - y),), "sigmoid")


def relu(a: Tensor) -> Tensor:
    """y = max(a, 0);  dy/da = 1{a > 0}."""
    ad = a.data
    y = np.maximum(ad, 0)
    return make(y, (a,), lambda g: (g * (ad > 0),), "relu")


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(a: Tensor, approximate: str = "tanh") -> Tensor:
    """Gaussian error linear unit (Hendrycks & Gimpel 2016).

    exact ("none"):  y = x Phi(x) = x/2 (1 + erf(x/sqrt 2));   dy/dx = Phi(x) + x phi(x)
    "tanh":          y = x/2 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
                     dy/dx = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3*0.044715 x^2)
    The exact form calls math.erf per element: accurate, but slower; BART uses it.
    """
    x = a.data
    if approximate == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
        y = 0.5 * x * (1 + t)

        def backward(g):
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du),)
    elif approximate == "none":
        cdf = (0.5 * (1 + _erf(x / math.sqrt(2.0)))).astype(x.dtype)
        y = x * cdf

        def backward(g):
            pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
            return (g * (cdf + x * pdf),)
    else:
        raise ValueError(f"gelu approximate must be 'tanh' or 'none', got {approximate!r}")
    return make(y, (a,), backward, "gelu")


def where(cond, a, b) -> Tensor:
    """y = a where cond else b (cond: a boolean array, not differentiable)."""
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    a = as_tensor(a)
    b = as_tensor(b, like=a)

    def backward(g):
        ga = unbroadcast(np.where(cond, g, 0).astype(g.dtype), a.data.shape) if a.requires_grad else None
        gb = unbroadcast(np.where(cond, 0, g).astype(g.dtype), b.data.shape) if b.requires_grad else None
        return ga, gb
    return make(np.where(cond, a.data, b.data), (a, b), backward, "where")


def masked_fill(a: Tensor, mask, value: float) -> Tensor:
    """y = value where mask else a;  dy/da = 1{not mask} (mask broadcasts to a)."""
    mask = np.asarray(mask.data if isinstance(mask, Tensor) else mask, dtype=bool)
    y = np.where(mask, np.asarray(value, dtype=a.data.dtype), a.data)

    def backward(g):
        return (np.where(mask, 0, g).astype(g.dtype),)
    return make(y, (a,), backward, "masked_fill")


# ---- matrix products ------------------------------------------------------------------------
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Batched matrix product y = a @ b over the last two axes (leading axes broadcast).

    dL/da = g @ b^T,  dL/db = a^T @ g  (then summed over broadcast batch axes).
    Both operands need at least two dimensions.
    """
    a = as_tensor(a)
    b = as_tensor(b)
    if a.data.ndim < 2 or b.data.ndim < 2:
        raise ValueError(f"matmul needs operands with >= 2 dims, got shapes {a.shape} and {b.shape}")
    ad, bd = a.data, b.data

    def backward(g):
        ga = unbroadcast(g @ np.swapaxes(bd, -1, -2), ad.shape) if a.requires_grad else None
        gb = unbroadcast(np.swapaxes(ad, -1, -2) @ g, bd.shape) if b.requires_grad else None
        return ga, gb
    return make(ad @ bd, (a, b), backward, "matmul")


def linear(x: Tensor, weight: Tensor, bias: Tensor = None) -> Tensor:
    """y = x W^T + b, with W of shape (out, in) (rows = output features) and x (..., in).

    Computed as one 2-D GEMM over all leading axes:
    dL/dx = g W,  dL/dW = g^T x,  dL/db = sum of g over all but the last axis.
    """
    xd, wd = x.data, weight.data
    if xd.shape[-1] != wd.shape[1]:
        raise ValueError(f"linear: input has {xd.shape[-1]} features, weight expects {wd.shape[1]} "
                         f"(x {xd.shape}, W {wd.shape})")
    lead = xd.shape[:-1]
    x2 = xd.reshape(-1, wd.shape[1])                       # (N, in)
    # W^T as a view: OpenBLAS reads the transposed operand directly. (Copying it to a contiguous
    # W^T first was measured slower on every shape here, e.g. 768x256 @ 256x8000: 46 vs 39 GMAC/s,
    # 3000x128 @ 128x8000: 40 vs 39 GMAC/s, AMD EPYC, OpenBLAS 0.3.31, 1 thread; and it cost a
    # copy of every weight per step.)
    y = x2 @ wd.T                                          # (N, out)
    if bias is not None:
        y += bias.data
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        g2 = g.reshape(-1, wd.shape[0])                    # (N, out)
        gx = (g2 @ wd).reshape(xd.shape) if x.requires_grad else None
        gw = g2.T @ x2 if weight.requires_grad else None   # (out, in)
        if bias is None:
            return gx, gw
        return gx, gw, g2.sum(axis=0)
    return make(y.reshape(*lead, wd.shape[0]), parents, backward, "linear")
