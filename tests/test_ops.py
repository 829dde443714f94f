"""A float64 central-difference gradient check for every op in minitbt.functional: elementwise
arithmetic, matrix products, reductions, shapes and indexing. Normalisation, dropout, losses and
attention: test_ops_nn.py.

Shapes come from hypothesis (broadcasting included); values are drawn away from the points
where an op is not differentiable (relu and abs at 0, ties of max, log/sqrt at 0).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

from minitbt import Tensor
from minitbt import functional as F
from minitbt.gradcheck import gradcheck
from ops_helpers import SETTINGS, T, seeds, small_shapes

pairs = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3)


def away_from_zero(rng, shape, lo=0.2, hi=1.5):
    """Values with |x| in [lo, hi] and random signs: no kink of relu/abs within eps."""
    return Tensor(np.asarray(rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape), np.float64),
                  requires_grad=True)


def distinct(rng, shape):
    """Values spaced 0.1 apart in random order: max has no ties."""
    n = int(np.prod(shape))
    return Tensor((rng.permutation(n) * 0.1 - 0.05 * n + rng.uniform(0, 0.01, n)).reshape(shape), requires_grad=True)


# ---- elementwise arithmetic, with broadcasting -----------------------------------------------------
@SETTINGS
@given(shapes=pairs, seed=seeds, op=st.sampled_from(["add", "sub", "mul", "div"]))
def test_binary_ops_broadcast(shapes, seed, op):
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    a = T(rng, sa)
    b = away_from_zero(rng, sb, 0.5, 2.0) if op == "div" else T(rng, sb)
    assert gradcheck(getattr(F, op), [a, b])


@SETTINGS
@given(shapes=pairs, seed=seeds)
def test_operators_with_constants(shapes, seed):
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    a = away_from_zero(rng, sa, 0.5, 2.0)
    c = rng.uniform(0.5, 2.0, sb)                               # a constant array, broadcast
    assert gradcheck(lambda a: 2.0 - a * c + c / a - (-a) / 3.0 + 1.5 / a, [a])


@SETTINGS
@given(shape=small_shapes, seed=seeds, op=st.sampled_from(["neg", "exp", "tanh", "sigmoid", "relu", "abs"]))
def test_unary_ops(shape, seed, op):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, shape, 0.1, 2.0) if op in ("relu", "abs") else T(rng, shape, -2, 2)
    assert gradcheck(getattr(F, op), [x])


@SETTINGS
@given(shape=small_shapes, seed=seeds, op=st.sampled_from(["log", "sqrt"]))
def test_log_sqrt(shape, seed, op):
    x = T(np.random.default_rng(seed), shape, 0.3, 3.0)
    assert gradcheck(getattr(F, op), [x])


@SETTINGS
@given(shape=small_shapes, seed=seeds, p=st.sampled_from([2, 3, -1, 0.5, 1.7, -2.5]))
def test_pow(shape, seed, p):
    x = T(np.random.default_rng(seed), shape, 0.3, 2.0)       # positive base for fractional p
    assert gradcheck(lambda x: x ** p, [x])


def test_pow_integer_exponent_negative_base():
    x = Tensor(np.array([-1.5, -0.4, 0.7]), requires_grad=True)
    assert gradcheck(lambda x: F.pow(x, 3), [x])
    with pytest.raises(TypeError, match="constant exponent"):
        F.pow(x, x)


@SETTINGS
@given(shape=small_shapes, seed=seeds, approximate=st.sampled_from(["tanh", "none"]))
def test_gelu(shape, seed, approximate):
    x = T(np.random.default_rng(seed), shape, -3, 3)
    assert gradcheck(lambda x: F.gelu(x, approximate), [x])


def test_gelu_values():
    x = np.linspace(-4, 4, 9)
    from math import erf, sqrt
    np.testing.assert_allclose(F.gelu(Tensor(x), "none").data, [v * 0.5 * (1 + erf(v / sqrt(2))) for v in x])
    np.testing.assert_allclose(F.gelu(Tensor(x), "tanh").data, F.gelu(Tensor(x), "none").data, atol=2e-3)
    with pytest.raises(ValueError):
        F.gelu(Tensor(x), "erf")


@SETTINGS
@given(shapes=mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3), seed=seeds)
def test_where(shapes, seed):
    rng = np.random.default_rng(seed)
    sc, sa, sb = shapes.input_shapes
    cond = rng.random(sc) < 0.5
    assert gradcheck(lambda a, b: F.where(cond, a, b), [T(rng, sa), T(rng, sb)])


@SETTINGS
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=4), seed=seeds, data=st.data())
def test_masked_fill(shape, seed, data):
    rng = np.random.default_rng(seed)
    mshape = tuple(n if data.draw(st.booleans()) else 1 for n in shape)[data.draw(st.integers(0, len(shape))):]
    mask = rng.random(mshape) < 0.4
    y = F.masked_fill(T(rng, shape), mask, -7.0)
    assert np.all(y.data[np.broadcast_to(mask, shape)] == -7.0)
    assert gradcheck(lambda a: F.masked_fill(a, mask, -7.0), [T(rng, shape)])


# ---- matrix products ----------------------------------------------------------------------------------
@SETTINGS
@given(batch=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3),
       nkm=st.tuples(*[st.integers(1, 4)] * 3), seed=seeds)
def test_matmul_batched_broadcast(batch, nkm, seed):
    rng = np.random.default_rng(seed)
    (ba, bb), (n, k, m) = batch.input_shapes, nkm
    a, b = T(rng, (*ba, n, k)), T(rng, (*bb, k, m))
    assert gradcheck(F.matmul, [a, b])


def test_matmul_needs_two_dims():
    with pytest.raises(ValueError, match=">= 2 dims"):
        F.matmul(Tensor(np.ones(3)), Tensor(np.ones((3, 2))))


@SETTINGS
@given(lead=array_shapes(min_dims=0, max_dims=2, max_side=3), io=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       bias=st.booleans(), seed=seeds)
def test_linear(lead, io, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = T(rng, (*lead, io[0])), T(rng, (io[1], io[0]))
    inputs = [x, w] + ([T(rng, (io[1],))] if bias else [])
    ref = x.data @ w.data.T + (inputs[2].data if bias else 0)
    np.testing.assert_allclose(F.linear(*inputs).data, ref)
    assert gradcheck(F.linear, inputs)


def test_linear_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"input has 3 features, weight expects 4"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((5, 4))))


# ---- reductions ----------------------------------------------------------------------------------------
axes_strategy = st.sampled_from([None, 0, -1, (0, -1), 1])


@SETTINGS
@given(shape=array_shapes(min_dims=2, max_dims=3, max_side=4), axis=axes_strategy, keepdims=st.booleans(),
       op=st.sampled_from(["sum", "mean", "max", "var"]), seed=seeds)
def test_reductions(shape, axis, keepdims, op, seed):
    rng = np.random.default_rng(seed)
    x = distinct(rng, shape) if op == "max" else T(rng, shape)
    fn = getattr(F, op)
    ref = getattr(np, op)(x.data, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(fn(x, axis=axis, keepdims=keepdims).data, ref)
    assert gradcheck(lambda x: fn(x, axis=axis, keepdims=keepdims), [x])


def test_var_unbiased_and_max_ties_split_evenly():
    x = Tensor(np.array([[1.0, 2.0, 4.0]]), requires_grad=True)
    np.testing.assert_allclose(F.var(x, axis=1, unbiased=True).data, np.var(x.data, axis=1, ddof=1))
    assert gradcheck(lambda x: F.var(x, axis=1, unbiased=True), [x])
    y = Tensor(np.array([3.0, 1.0, 3.0]), requires_grad=True)
    F.max(y).backward()
    np.testing.assert_allclose(y.grad, [0.5, 0.0, 0.5])


# ---- shapes and indexing ------------------------------------------------------------------------------
@SETTINGS
@given(shape=array_shapes(min_dims=1, max_dims=4, max_side=3), seed=seeds, data=st.data())
def test_reshape_permute_transpose(shape, seed, data):
    rng = np.random.default_rng(seed)
    x = T(rng, shape)
    perm = data.draw(st.permutations(range(len(shape))))
    perm = [p - len(shape) if data.draw(st.booleans()) else p for p in perm]    # negative axes too
    assert gradcheck(lambda x: x.reshape(-1, 1), [x])
    np.testing.assert_array_equal(x.permute(*perm).data, np.transpose(x.data, perm))
    assert gradcheck(lambda x: x.permute(*perm), [x])
    if len(shape) >= 2:
        d0, d1 = data.draw(st.sampled_from([(0, -1), (-2, -1), (1, 0)]))
        np.testing.assert_array_equal(F.transpose(x, d0, d1).data, np.swapaxes(x.data, d0, d1))
        assert gradcheck(lambda x: F.transpose(x, d0, d1), [x])


@SETTINGS
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=3), n=st.integers(1, 3), seed=seeds, data=st.data())
def test_concatenate_stack(shape, n, seed, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = [data.draw(st.integers(1, 3)) for _ in range(n)]
    parts = []
    for s in sizes:
        sh = list(shape)
        sh[axis] = s
        parts.append(T(rng, sh))
    assert gradcheck(lambda *p: F.concatenate(p, axis=axis), parts)
    same = [T(rng, shape) for _ in range(n)]
    new_axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    np.testing.assert_array_equal(F.stack(same, axis=new_axis).data, np.stack([t.data for t in same], new_axis))
    assert gradcheck(lambda *p: F.stack(p, axis=new_axis), same)


@SETTINGS
@given(n=st.integers(2, 6), seed=seeds, data=st.data())
def test_split(n, seed, data):
    rng = np.random.default_rng(seed)
    x = T(rng, (3, n))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, n - 1), min_size=1, max_size=3))))
    parts = F.split(x, cuts, axis=-1)
    assert [p.shape[1] for p in parts] == np.diff([0, *cuts, n]).tolist()
    w = [rng.standard_normal(p.shape) for p in parts]
    assert gradcheck(lambda x: F.concatenate([p * wi for p, wi in zip(F.split(x, cuts, axis=1), w)], axis=1), [x])
    assert gradcheck(lambda x: F.split(x, 3, axis=0)[1], [x])
    with pytest.raises(ValueError, match="equal parts"):
        F.split(T(rng, (5, 2)), 2, axis=0)


@pytest.mark.parametrize("index", [
    (slice(None), 1), (slice(1, None), slice(None, None, -1)), (Ellipsis, 0), (None, 1), 2,
    [0, 0, 2, 0],                                                # fancy, with repeats
    (np.array([1, 1, 0]), np.array([2, 2, 1])),                 # pairs, with a repeated pair
    (slice(None), [3, 3, 0]),
    np.array([True, False, True]),                               # boolean mask
])
def test_getitem(index):
    rng = np.random.default_rng(0)
    x = T(rng, (3, 4))
    np.testing.assert_array_equal(x[index].data, x.data[index])
    assert gradcheck(lambda x: x[index], [x])


def test_getitem_repeated_index_sums_gradients():
    x = Tensor(np.zeros(3), requires_grad=True)
    x[[1, 1, 1, 2]].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 1])


@SETTINGS
@given(V=st.integers(1, 6), d=st.integers(1, 4), ids_shape=array_shapes(min_dims=1, max_dims=2, max_side=5),
       seed=seeds)
def test_embedding_repeated_ids(V, d, ids_shape, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, ids_shape)                          # repeats are likely
    w = T(rng, (V, d))
    np.testing.assert_array_equal(F.embedding(ids, w).data, w.data[ids])
    assert gradcheck(lambda w: F.embedding(ids, w), [w])
    G = rng.standard_normal((*ids_shape, d))
    w.grad = None
    F.embedding(ids, w).backward(G)
    expect = np.zeros((V, d))
    np.add.at(expect, ids.ravel(), G.reshape(-1, d))
    np.testing.assert_allclose(w.grad, expect)


def test_embedding_errors():
    w = Tensor(np.ones((4, 2)), requires_grad=True)
    with pytest.raises(IndexError, match="vocabulary size 4"):
        F.embedding(np.array([0, 4]), w)
    with pytest.raises(TypeError, match="integers"):
        F.embedding(np.array([0.0]), w)
