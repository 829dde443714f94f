"""Tensor: an ndarray plus the graph that produced it, and reverse-mode autodiff.

A Tensor holds ``data`` (a NumPy array, float32 by default), an optional ``grad``
and, when it was produced by a differentiable op while gradients are enabled, its
``_parents`` and a ``_backward`` closure. ``_backward(g)`` receives dL/d(out) and
returns one gradient per parent (``None`` where a parent needs none).

``backward()`` orders the graph with an *iterative* depth-first topological sort
(deep graphs never hit Python's recursion limit), then walks it in reverse,
summing gradients. Leaf tensors (``requires_grad=True`` and no parents) keep their
gradient in ``.grad`` and accumulate it across calls, as in PyTorch; intermediate
gradients are freed as soon as they have been used.

The ops themselves live in ``minitbt/functional.py``, each forward beside its backward.
"""
from __future__ import annotations

import contextlib

import numpy as np

_GRAD_ENABLED = [True]  # a one-element list: the grad-mode switch used by no_grad()


def is_grad_enabled() -> bool:
    return _GRAD_ENABLED[0]


@contextlib.contextmanager
def no_grad():
    """Context manager: ops inside build no graph (inference, optimizer updates)."""
    prev = _GRAD_ENABLED[0]
    _GRAD_ENABLED[0] = False
    try:
        yield
    finally:
        _GRAD_ENABLED[0] = prev


def _as_array(data, dtype=None) -> np.ndarray:
    """Floats become float32 unless already float64 (kept for gradient checks); ints stay ints."""
    if isinstance(data, Tensor):
        data = data.data
    arr = np.asarray(data, dtype=dtype)
    if dtype is None:
        if arr.dtype == np.float64 and not isinstance(data, np.ndarray):
            arr = arr.astype(np.float32)  # Python floats and lists -> float32
        elif arr.dtype.kind in "fc" and arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float32)  # float16 storage and friends -> float32
        elif arr.dtype == np.bool_:
            arr = arr.astype(np.float32)
    return arr


class Tensor:
    """An n-dimensional array that records the ops applied to it.

    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_op", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._parents = ()
        self._backward = None
        self._op = ""

    # ---- construction of op outputs -------------------------------------------------
    @staticmethod
    def make(data: np.ndarray, parents: tuple, backward, op: str = "") -> "Tensor":
        """Wrap an op's output; record the graph only if some parent needs a gradient."""
        out = Tensor.__new__(Tensor)
        out.data = data
        out.grad = None
        out._op = op
        if _GRAD_ENABLED[0] and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = parents
            out._backward = backward
        else:
            out.requires_grad = False
            out._parents = ()
            out._backward = None
        return out

    # ---- reverse-mode autodiff --------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Compute d(self)/d(leaf) for every leaf in the graph; accumulate into leaf.grad."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar, got shape {self.data.shape}")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.data.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"gradient shape {grad.shape} does not match tensor shape {self.data.shape}")

        # Iterative DFS post-order: a node comes after everything it depends on.
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for p in node._parents:
                if p.requires_grad and id(p) not in visited:
                    stack.append((p, False))

        # grads[id(node)] = [dL/d(node), owned]. A gradient returned by an op's backward may be
        # shared (add hands the same g to both inputs; reshape returns a view of g), so it is
        # never written to. Once two gradients meet, their sum is a fresh array that only this
        # loop knows ("owned"): later contributions are added into it in place.
        grads = {id(self): [grad, False]}
        for node in reversed(order):
            entry = grads.pop(id(node), None)
            if entry is None:
                continue
            g, owned = entry
            if node._backward is None:  # a leaf: accumulate like PyTorch
                if node.grad is None:
                    node.grad = g if owned else g.copy()
                else:
                    node.grad = node.grad + g
                continue
            for p, pg in zip(node._parents, node._backward(g)):
                if pg is None or not p.requires_grad:
                    continue
                assert pg.shape == p.data.shape, f"{node._op}: grad shape {pg.shape} != input shape {p.data.shape}"
                acc = grads.get(id(p))
                if acc is None:
                    grads[id(p)] = [pg, False]
                elif acc[1] and acc[0].dtype == np.result_type(acc[0], pg):
                    acc[0] += pg                                   # in place, into our own buffer
                else:
                    grads[id(p)] = [acc[0] + pg, True]

    # ---- conveniences -----------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def zero_grad(self) -> None:
        self.grad = None

    def __repr__(self):
        rg = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=8)}{rg})"

    # Operators are attached in minitbt/functional.py (F.add, F.mul, ...) so that every
    # op, forward and backward, is defined in exactly one place.


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)
