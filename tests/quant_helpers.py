"""Shared by the quantizer tests (test_quant.py, test_quant_activation.py): random inputs,
hypothesis strategies, and a forward + backward helper."""
import os

import numpy as np
from hypothesis import settings, strategies as st

from minitbt import Tensor

FAST = settings(max_examples=int(os.environ.get("QUANT_EXAMPLES", 25)), deadline=None)   # raise to hunt edge cases


def rand(seed, shape, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


seeds = st.integers(0, 2 ** 31 - 1)
mat_shapes = st.tuples(st.integers(1, 6), st.integers(2, 12))
act_shapes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(2, 10))


def fwd_bwd(q, x, G):
    """y = q(x), then y.backward(G); returns (y, dL/dx)."""
    t = Tensor(x, requires_grad=True)
    y = q(t)
    y.backward(G)
    return y.data, t.grad


def f64(q):
    """Learned scales in float64 too, for exact gradient checks."""
    return q.to_dtype(np.float64)
