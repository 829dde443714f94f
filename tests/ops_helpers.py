"""Shared by the gradient-check tests of minitbt.functional (test_ops.py, test_ops_nn.py)."""
import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from minitbt import Tensor

SETTINGS = settings(max_examples=15, deadline=None)
seeds = st.integers(0, 2**32 - 1)
small_shapes = array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def T(rng, shape, lo=-1.0, hi=1.0):
    """A float64 leaf with values uniform in [lo, hi)."""
    return Tensor(np.asarray(rng.uniform(lo, hi, shape), np.float64), requires_grad=True)
