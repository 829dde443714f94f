"""Reductions over axes: sum, mean, max, var (each with ``keepdims``)."""
import numpy as np

from minitbt.tensor import Tensor

make = Tensor.make


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axis)


def _expand(g, axes, keepdims):
    """Put back the reduced axes (size 1) so g broadcasts against the input."""
    return g if keepdims else np.expand_dims(g, axes)


def sum(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """y = sum of a over ``axis``;  dy/da = 1 (the gradient is broadcast back)."""
    axes = _axes(axis, a.data.ndim)
    shape = a.data.shape

    def backward(g):
        return (np.broadcast_to(_expand(g, axes, keepdims), shape).copy(),)
    return make(np.asarray(a.data.sum(axis=axes, keepdims=keepdims)), (a,), backward, "sum")


def mean(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """y = (1/n) sum of a over ``axis``;  dy/da = 1/n."""
    axes = _axes(axis, a.data.ndim)
    n = int(np.prod([a.data.shape[i] for i in axes])) if axes else 1
    shape = a.data.shape

    def backward(g):
        return (np.broadcast_to(_expand(g, axes, keepdims) / n, shape).copy(),)
    return make(np.asarray(a.data.mean(axis=axes, keepdims=keepdims)), (a,), backward, "mean")


def max(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """y = max of a over ``axis``; the gradient goes to the maxima, split evenly among ties."""
    axes = _axes(axis, a.data.ndim)
    y = a.data.max(axis=axes, keepdims=True)
    mask = a.data == y
    count = mask.sum(axis=axes, keepdims=True)

    def backward(g):
        return ((_expand(g, axes, keepdims) * mask / count).astype(a.data.dtype),)
    out = y if keepdims else np.squeeze(y, axis=axes)
    return make(np.asarray(out), (a,), backward, "max")


def var(a: Tensor, axis=None, keepdims: bool = False, unbiased: bool = False) -> Tensor:
    """y = (1/(n - c)) sum (a - mean a)^2, c = 1 if unbiased else 0;  dy/da = 2 (a - mean a)/(n - c)."""
    axes = _axes(axis, a.data.ndim)
    n = int(np.prod([a.data.shape[i] for i in axes])) if axes else 1
    d = n - 1 if unbiased else n
    centred = a.data - a.data.mean(axis=axes, keepdims=True)
    y = (centred * centred).sum(axis=axes, keepdims=keepdims) / d

    def backward(g):
        return (_expand(g, axes, keepdims) * (2.0 / d) * centred,)
    return make(np.asarray(y), (a,), backward, "var")
