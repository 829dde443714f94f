"""Shape ops: reshape, transpose/permute, concatenate/stack/split, indexing, embedding lookup."""
import numpy as np

from minitbt.tensor import Tensor
from minitbt.functional._util import as_tensor

make = Tensor.make


def reshape(a: Tensor, *shape) -> Tensor:
    """Same elements, new shape; the gradient is reshaped back."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    old = a.data.shape
    return make(a.data.reshape(shape), (a,), lambda g: (g.reshape(old),), "reshape")


def permute(a: Tensor, *axes) -> Tensor:
    """Reorder axes; the gradient is permuted by the inverse permutation."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = tuple(int(ax) % a.data.ndim for ax in axes)   # permute(-1, 0) works, and so does its inverse
    inv = tuple(int(i) for i in np.argsort(axes))
    return make(a.data.transpose(axes), (a,), lambda g: (g.transpose(inv),), "permute")


def transpose(a: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
    """Swap two axes (by default the last two)."""
    return make(np.swapaxes(a.data, dim0, dim1), (a,), lambda g: (np.swapaxes(g, dim0, dim1),), "transpose")


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join along an existing axis; the gradient is split back at the same offsets."""
    tensors = [as_tensor(t) for t in tensors]
    offsets = np.cumsum([t.data.shape[axis] for t in tensors])[:-1]

    def backward(g):
        return tuple(np.split(g, offsets, axis=axis))
    return make(np.concatenate([t.data for t in tensors], axis=axis), tuple(tensors), backward, "concatenate")


def stack(tensors, axis: int = 0) -> Tensor:
    """Join along a new axis; the gradient is unstacked."""
    tensors = [as_tensor(t) for t in tensors]

    def backward(g):
        return tuple(np.moveaxis(g, axis, 0))
    return make(np.stack([t.data for t in tensors], axis=axis), tuple(tensors), backward, "stack")


def split(a: Tensor, sections, axis: int = 0):
    """np.split semantics: an int (equal parts) or a list of split indices. Returns a list."""
    n = a.data.shape[axis]
    if isinstance(sections, int):
        if n % sections:
            raise ValueError(f"split: axis of size {n} does not divide into {sections} equal parts")
        bounds = list(range(0, n + 1, n // sections))
    else:
        bounds = [0, *sections, n]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        index = [slice(None)] * a.data.ndim
        index[axis] = slice(lo, hi)
        out.append(getitem(a, tuple(index)))
    return out


def _is_basic(index) -> bool:
    """True for slices/ints/None/Ellipsis only: the gradient can be assigned, no scatter-add."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


def getitem(a: Tensor, index) -> Tensor:
    """y = a[index]: slicing or fancy-index gather.

    Backward: zeros of a's shape with g written back at ``index``; for fancy indices that
    may repeat, the copies are summed with np.add.at (scatter-add).
    """
    if isinstance(index, Tensor):
        index = index.data
    if isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    basic = _is_basic(index)
    shape, dtype = a.data.shape, a.data.dtype

    def backward(g):
        ga = np.zeros(shape, dtype=dtype)
        if basic:
            ga[index] = g
        else:
            np.add.at(ga, index, g)
        return (ga,)
    return make(a.data[index], (a,), backward, "getitem")


def embedding(ids, weight: Tensor) -> Tensor:
    """Row lookup y[..., :] = W[ids[...], :];  dL/dW[v] = sum of g over the positions where ids == v.

    ids: integer array of any shape; weight: (V, d). Out-of-range ids raise a clear error.
    """
    ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding ids must be integers, got dtype {ids.dtype}")
    V, d = weight.data.shape
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise IndexError(f"embedding id out of range: ids span [{ids.min()}, {ids.max()}], vocabulary size {V}")

    def backward(g):
        # Scatter-add (repeated ids sum), done as sort + segment sums: faster than np.add.at.
        gw = np.zeros((V, d), dtype=weight.data.dtype)
        flat = ids.reshape(-1)
        if flat.size:
            order = np.argsort(flat, kind="stable")
            sid = flat[order]                                      # ids, sorted
            starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])   # first row of each id
            gw[sid[starts]] = np.add.reduceat(g.reshape(-1, d)[order], starts, axis=0)
        return (gw,)
    return make(weight.data[ids], (weight,), backward, "embedding")
