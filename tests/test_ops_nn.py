"""A float64 central-difference gradient check for every op in minitbt.functional: normalisation,
dropout, losses, attention and the copy mixture; and float32 kept float32. The other ops:
test_ops.py.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

import minitbt as mt
from minitbt import Tensor
from minitbt import functional as F
from minitbt.gradcheck import gradcheck
from ops_helpers import SETTINGS, T, seeds, small_shapes


# ---- normalisation, dropout, losses ------------------------------------------------------------------
@SETTINGS
@given(shape=small_shapes, seed=seeds, data=st.data())
def test_softmax_log_softmax(shape, seed, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = T(rng, shape, -3, 3)
    np.testing.assert_allclose(F.softmax(x, axis).data.sum(axis), 1.0)
    np.testing.assert_allclose(np.exp(F.log_softmax(x, axis).data), F.softmax(x, axis).data)
    assert gradcheck(lambda x: F.softmax(x, axis), [x])
    assert gradcheck(lambda x: F.log_softmax(x, axis), [x])


def test_softmax_is_stable_for_large_inputs():
    y = F.softmax(Tensor(np.array([1000.0, 1000.0, -1000.0])))
    np.testing.assert_allclose(y.data, [0.5, 0.5, 0.0])


@SETTINGS
@given(shape=array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=5), seed=seeds,
       affine=st.sampled_from(["both", "weight", "none"]))
def test_layer_norm(shape, seed, affine):
    rng = np.random.default_rng(seed)
    d = shape[-1]
    x = T(rng, shape, -2, 2)
    params = {"both": [T(rng, (d,)), T(rng, (d,))], "weight": [T(rng, (d,))], "none": []}[affine]
    y = F.layer_norm(x, *params).data
    if affine == "none":
        np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    assert gradcheck(lambda x, *p: F.layer_norm(x, *p), [x, *params])


@SETTINGS
@given(shape=small_shapes, seed=seeds, p=st.sampled_from([0.1, 0.5]))
def test_dropout(shape, seed, p):
    x = T(np.random.default_rng(seed), shape)
    y = F.dropout(x, p, True, np.random.default_rng(seed))
    kept = y.data != 0
    np.testing.assert_allclose(y.data[kept], x.data[kept] / (1 - p))
    assert F.dropout(x, p, False, np.random.default_rng(0)) is x
    assert gradcheck(lambda x: F.dropout(x, p, True, np.random.default_rng(seed)), [x])


def test_dropout_rate():
    x = Tensor(np.ones(100_000, np.float32))
    y = F.dropout(x, 0.3, True, np.random.default_rng(1))
    assert y.dtype == np.float32
    assert abs((y.data == 0).mean() - 0.3) < 0.01
    assert abs(y.data.mean() - 1.0) < 0.02


@SETTINGS
@given(N=st.integers(1, 6), C=st.integers(2, 5), seed=seeds, smoothing=st.sampled_from([0.0, 0.1, 0.3]))
def test_cross_entropy(N, C, seed, smoothing):
    rng = np.random.default_rng(seed)
    z = T(rng, (N, C), -3, 3)
    t = rng.integers(0, C, N)
    t[rng.random(N) < 0.3] = -1                                   # ignored rows (padding)
    loss = F.cross_entropy(z, t, ignore_index=-1, label_smoothing=smoothing)
    # reference: -sum_c q_c log p_c averaged over the kept rows
    logp = z.data - np.log(np.exp(z.data).sum(1, keepdims=True))
    keep = t != -1
    q = np.full((N, C), smoothing / C)
    q[np.arange(N), np.where(keep, t, 0)] += 1 - smoothing
    ref = -(q * logp).sum(1)[keep].sum() / max(keep.sum(), 1)
    np.testing.assert_allclose(loss.data, ref)
    assert gradcheck(lambda z: F.cross_entropy(z, t, ignore_index=-1, label_smoothing=smoothing), [z])


def test_cross_entropy_errors_and_all_ignored():
    z = Tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(IndexError, match="out of range"):
        F.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"logits \(N, C\)"):
        F.cross_entropy(z, np.array([0, 1, 2]))
    loss = F.cross_entropy(z, np.array([-100, -100]))
    loss.backward()
    assert loss.item() == 0.0 and np.all(z.grad == 0)


@SETTINGS
@given(N=st.integers(1, 5), C=st.integers(2, 5), seed=seeds, temperature=st.sampled_from([1.0, 2.0]),
       masked=st.booleans())
def test_soft_cross_entropy(N, C, seed, temperature, masked):
    rng = np.random.default_rng(seed)
    z = T(rng, (N, C), -2, 2)
    p = rng.dirichlet(np.ones(C), N)
    mask = rng.random(N) < 0.7 if masked else None
    assert gradcheck(lambda z: F.soft_cross_entropy(z, p, mask, temperature), [z])
    unnormalised = p * 0.7                                         # the backward is exact for any target
    assert gradcheck(lambda z: F.soft_cross_entropy(z, unnormalised, mask, temperature), [z])


@SETTINGS
@given(shape=small_shapes, seed=seeds)
def test_mse_loss(shape, seed):
    rng = np.random.default_rng(seed)
    target = rng.standard_normal(shape)
    x = T(rng, shape)
    np.testing.assert_allclose(F.mse_loss(x, target).data, ((x.data - target) ** 2).mean())
    assert gradcheck(lambda x: F.mse_loss(x, target), [x])


@SETTINGS
@given(B=st.integers(1, 2), H=st.integers(1, 2), Tq=st.integers(1, 4), Tk=st.integers(1, 4),
       d=st.integers(1, 4), seed=seeds, masking=st.sampled_from(["none", "padding", "causal", "both"]))
def test_scaled_dot_product_attention(B, H, Tq, Tk, d, seed, masking):
    rng = np.random.default_rng(seed)
    q, k, v = T(rng, (B, H, Tq, d)), T(rng, (B, H, Tk, d)), T(rng, (B, H, Tk, d))
    pad = np.zeros((B, Tk), bool)
    pad[:, Tk - 1] = Tk > 1 and rng.random() < 0.8              # hide the last key (never all keys)
    causal = mt.nn.causal_mask(Tq, Tk, offset=max(Tk - Tq, 0))
    mask = {"none": None, "padding": pad[:, None, None, :], "causal": causal,
            "both": pad[:, None, None, :] | causal}[masking]
    # reference, written out
    s = q.data @ np.swapaxes(k.data, -1, -2) / np.sqrt(d)
    if mask is not None:
        s = np.where(mask, -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(F.scaled_dot_product_attention(q, k, v, mask).data, p @ v.data, atol=1e-12)
    assert gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask), [q, k, v])


@SETTINGS
@given(B=st.integers(1, 2), T_=st.integers(1, 3), S=st.integers(1, 4), V=st.integers(1, 6), seed=seeds)
def test_copy_mixture(B, T_, S, V, seed):
    """The pointer-generator: p = g softmax(z) + (1 - g) (attention mass on each source token)."""
    rng = np.random.default_rng(seed)
    z, u, s = T(rng, (B, T_, V)), T(rng, (B, T_, 1)), T(rng, (B, T_, S))
    ids = rng.integers(0, V, (B, S))                              # repeats: one word's mass adds up
    a = np.exp(s.data) / np.exp(s.data).sum(-1, keepdims=True)
    g = 1 / (1 + np.exp(-u.data))
    q = np.exp(z.data) / np.exp(z.data).sum(-1, keepdims=True)
    want = g * q
    for b in range(B):                                             # the copy term, written out
        for t in range(T_):
            for j in range(S):
                want[b, t, ids[b, j]] += (1 - g[b, t, 0]) * a[b, t, j]
    y = F.copy_mixture(z, u, F.softmax(s), ids)
    np.testing.assert_allclose(np.exp(y.data), want, rtol=1e-12)
    np.testing.assert_allclose(np.exp(y.data).sum(-1), 1.0, rtol=1e-12)   # still a distribution
    assert gradcheck(lambda z, u, s: F.copy_mixture(z, u, F.softmax(s), ids), [z, u, s])
    raw = Tensor(rng.uniform(0.1, 1.0, (B, T_, S)), requires_grad=True)   # any positive attention
    assert gradcheck(lambda a: F.copy_mixture(z, u, a, ids), [raw])


def test_copy_mixture_shape_error():
    z, u, a = Tensor(np.zeros((1, 2, 5))), Tensor(np.zeros((1, 2, 1))), Tensor(np.ones((1, 2, 3)) / 3)
    with pytest.raises(ValueError, match="copy_mixture"):
        F.copy_mixture(z, u, a, np.zeros((1, 4), int))


# ---- float32 stays float32 ----------------------------------------------------------------------------
def _f32_cases(rng):
    x = Tensor(rng.uniform(0.5, 1.5, (3, 4)).astype(np.float32), requires_grad=True)
    f64 = rng.uniform(size=(3, 4))                                 # float64 constants must not upcast
    t = np.array([0, 1, -100])
    return x, [
        lambda x: x * 2.0 - 1.0 / x + x ** 2 + 3.0, lambda x: F.gelu(x, "none") + F.gelu(x, "tanh"),
        lambda x: F.sigmoid(x) * F.tanh(x) + F.relu(x) + F.abs(x) + F.sqrt(x) + F.log(x) + F.exp(x),
        lambda x: F.max(x, 1) + F.var(x, 1) + F.mean(x, 1), lambda x: F.layer_norm(x),
        lambda x: F.softmax(x) + F.log_softmax(x), lambda x: F.dropout(x, 0.3, True, np.random.default_rng(0)),
        lambda x: F.cross_entropy(x, t, label_smoothing=0.1), lambda x: F.mse_loss(x, f64),
        lambda x: F.soft_cross_entropy(x, f64 / f64.sum(1, keepdims=True)),
        lambda x: F.embedding(np.array([0, 2, 2]), x), lambda x: x[[0, 0]] + x[1:, ::2].sum(),
        lambda x: F.where(f64 > 0.5, x, 0.0) + F.masked_fill(x, f64 > 0.5, 1.0),
        lambda x: F.scaled_dot_product_attention(x[None, None], x[None, None], x[None, None],
                                                 np.array([False, False, True])),
        lambda x: F.concatenate([x, x], 1) @ F.stack([x, x], 0).reshape(8, 3),
        lambda x: F.copy_mixture(x[None], x[None, :, :1], F.softmax(x[None]), np.array([[0, 1, 1, 3]])),
    ]


def test_float32_in_float32_out_forward_and_backward():
    """No op silently upcasts float32 to float64: check every output and every gradient."""
    x, cases = _f32_cases(np.random.default_rng(0))
    seen = []
    orig = mt.Tensor.make

    def checking_make(data, parents, backward, op=""):
        assert data.dtype == np.float32, f"forward of {op} gave {data.dtype}"

        def bw(g):
            out = backward(g)
            for gi in out:
                assert gi is None or gi.dtype == np.float32, f"backward of {op} gave {gi.dtype}"
            seen.append(op)
            return out
        return orig(data, parents, bw, op)
    import minitbt.functional.arith as A
    import minitbt.functional.nn as N
    import minitbt.functional.reduce as R
    import minitbt.functional.shape as S
    mods = (A, N, R, S)
    try:
        for m in mods:
            m.make = checking_make
        for fn in cases:
            y = fn(x)
            (y.sum() if y.size > 1 else y).backward()
            assert x.grad.dtype == np.float32
    finally:
        for m in mods:
            m.make = orig
    assert {"gelu", "layer_norm", "cross_entropy", "attention", "embedding", "mse_loss"} <= set(seen)
