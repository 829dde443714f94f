"""Check a backward pass against central finite differences, and explain any mismatch.

For a function y = fn(x_1, ..., x_k) with any output shape we check the scalar
L = sum(y * R) with a fixed random projection R (so every output element matters and
no two gradient errors can cancel by symmetry). Its gradient from backward() is compared
with the central difference, element by element, in float64:

    dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)        error O(eps^2)

An element passes when |analytic - numeric| <= atol + rtol * |numeric|.

    >>> import numpy as np, minitbt as mt
    >>> x = mt.Tensor(np.random.rand(3, 4), requires_grad=True)     # float64
    >>> gradcheck(lambda x: (x * x).sum(axis=1), [x])
    True
"""
from __future__ import annotations

import numpy as np

from minitbt.tensor import Tensor, no_grad


def _graph_ops(out: Tensor) -> list:
    """The distinct op names of the graph behind ``out``, output first."""
    ops, seen, stack = [], set(), [out]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t._op and t._op not in ops:
            ops.append(t._op)
        stack.extend(t._parents)
    return ops


def _hint(analytic: np.ndarray, numeric: np.ndarray, ops: list) -> str:
    """Guess, from the pattern of the error over the whole input, what went wrong."""
    ops_txt = ", ".join(repr(o) for o in ops) or "(none)"
    a, n = analytic.ravel(), numeric.ravel()
    big = np.abs(n) > 1e-3 * max(np.abs(n).max(), 1e-12)
    if not np.isfinite(n).all():
        return "the numeric gradient is not finite: fn is not defined around these inputs (log or sqrt of <= 0?)."
    if np.all(a == 0) and np.any(n != 0):
        return ("no gradient reached this input: the backward of some op returned None or zeros for it, "
                "or the graph was cut (detach(), no_grad(), or a NumPy operation on .data). Ops in the graph: "
                + ops_txt + ".")
    if big.any():
        ratio = a[big] / n[big]
        r0 = np.median(ratio)
        if np.allclose(ratio, r0, rtol=1e-3) and abs(r0 - 1) > 1e-3:
            if np.isclose(r0, -1, rtol=1e-3):
                return "the analytic gradient has the wrong sign everywhere: a backward forgot a minus sign."
            return (f"the analytic gradient is {r0:.4g} times the numeric one everywhere: a backward misses or "
                    f"repeats a constant factor (1/n of a mean, 2 of a square, a scale like 1/sqrt(d)). Ops: {ops_txt}.")
    return (f"the backward of op {ops[0]!r} (the last op) or of one of the ops before it ({ops_txt}) returned a wrong "
            "gradient. Check each op on its own with gradcheck to find it. If fn has kinks (relu or abs at 0, "
            "max with ties, a mask at a boundary), move the inputs away from them.")


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0) -> bool:
    """Compare the gradients that backward() gives for ``fn(*inputs)`` with central differences.

    inputs: minitbt Tensors in float64; those with requires_grad=True are checked.
    Returns True; raises AssertionError with an explanation (which input, which element,
    analytic and numeric values, and a hint) at the first input that fails.
    Leaves each input's data and .grad as they were.
    """
    inputs = list(inputs)
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"gradcheck: input {i} is a {type(x).__name__}, not a minitbt Tensor")
        if x.requires_grad and x.data.dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {x.data.dtype}; use float64 "
                            "(in float32 the finite differences are dominated by rounding error)")
    checked = [i for i, x in enumerate(inputs) if x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")

    saved_grads = [x.grad for x in inputs]
    for x in inputs:
        x.grad = None
    try:
        out = fn(*inputs)
        if not isinstance(out, Tensor):
            raise TypeError(f"gradcheck: fn must return a minitbt Tensor, got {type(out).__name__}")
        R = np.random.default_rng(seed).standard_normal(out.data.shape)   # the fixed projection
        with no_grad():
            again = fn(*inputs).data
        if not np.array_equal(again, out.data):
            raise AssertionError("gradcheck: fn gave different outputs for the same inputs, so finite "
                                 "differences mean nothing. Is there dropout with a moving random generator? "
                                 "Give it a fresh np.random.default_rng(seed) on every call.")
        if not out.requires_grad:
            raise AssertionError("gradcheck: the output does not require grad: the graph was cut "
                                 "(no_grad(), detach() or an operation on .data) before it reached the output.")
        (out * Tensor(R)).sum().backward()
        ops = _graph_ops(out)
        analytic = {i: (np.zeros_like(inputs[i].data) if inputs[i].grad is None else inputs[i].grad.copy())
                    for i in checked}

        def L():
            with no_grad():
                return float((fn(*inputs).data * R).sum())

        for i in checked:
            x = inputs[i].data
            numeric = np.zeros_like(x)
            for idx in np.ndindex(x.shape):
                v = x[idx]
                x[idx] = v + eps
                up = L()
                x[idx] = v - eps
                down = L()
                x[idx] = v
                numeric[idx] = (up - down) / (2 * eps)
            err = np.abs(analytic[i] - numeric) - (atol + rtol * np.abs(numeric))
            if np.any(err > 0) or not np.isfinite(numeric).all():
                worst = np.unravel_index(int(np.nanargmax(np.where(np.isfinite(err), err, np.inf))), x.shape)
                n_bad = int(np.sum(~(err <= 0)))
                raise AssertionError(
                    f"gradcheck failed for input {i} (shape {x.shape}) at element {tuple(int(j) for j in worst)}: "
                    f"analytic {analytic[i][worst]:.6g}, numeric {numeric[worst]:.6g} "
                    f"({n_bad} of {x.size} elements out of tolerance atol={atol}, rtol={rtol}).\n"
                    f"Hint: {_hint(analytic[i], numeric, ops)}")
    finally:
        for x, g in zip(inputs, saved_grads):
            x.grad = g
    return True
