"""Helpers shared by the ops: wrapping constants and undoing broadcasting."""
import numpy as np

from minitbt.tensor import Tensor


def as_tensor(x, like: Tensor = None) -> Tensor:
    """Wrap a constant (scalar or array) as a Tensor that needs no gradient.

    Python scalars take the dtype of ``like`` so float32 stays float32 and float64 stays float64.
    """
    if isinstance(x, Tensor):
        return x
    if like is not None and np.isscalar(x):
        return Tensor(np.asarray(x, dtype=like.data.dtype))
    return Tensor(x)


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``g`` over the axes that broadcasting added or stretched, back to ``shape``.

    If y = f(a) with a broadcast from ``shape`` to g.shape, then dL/da is the sum of
    dL/dy over every copy of a: the leading new axes and the axes where shape has 1.
    """
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    assert g.shape == shape, f"unbroadcast produced {g.shape}, expected {shape}"
    return g
