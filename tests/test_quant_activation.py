"""Tests of the activation quantizers in minitbt.quant (quant/activation.py): forward value sets
and equations, pseudo-gradients including the learned scale and offset, initialisation.

Every reference below is written out independently from the equations of docs/methods.md with plain
NumPy; nothing calls the package's own helpers to compute an expected value.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minitbt.quant as Q
from minitbt import Tensor
from minitbt.quant.scale import SCALE_EPS
from quant_helpers import FAST, act_shapes, f64, fwd_bwd, rand, seeds


# ---- activation quantizers -------------------------------------------------------------
def ref_elastic(x, a, bits, signed, centre=True, shift_min=False):
    """(X_q, dX_q/dX, dX_q/da) from docs/methods.md section 1, written out."""
    off = 0.0
    if signed:
        xs = x - x.mean(axis=-1, keepdims=True) if centre else x
        u = xs / a
        if bits == 1:
            q = np.where(xs >= 0, 1.0, -1.0)
            return a * q, (np.abs(u) < 1).astype(float), q
        lo, hi = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    else:
        if shift_min:
            off = x.min(axis=-1, keepdims=True)
        xs = x - off
        u = xs / a
        lo, hi = 0, {1: 1, 2: 2}.get(bits, 2 ** bits - 1)
    q = np.round(np.clip(u, lo, hi))
    inside = (u > lo) & (u < hi)
    dq_da = np.where(inside, q - u, np.where(u <= lo, lo, hi))
    return a * q + off, inside.astype(float), dq_da


@FAST
@given(seeds, act_shapes, st.sampled_from([1, 2, 3, 4]), st.booleans(), st.booleans(), st.booleans(),
       st.floats(0.2, 2.0))
def test_elastic_quantizer(seed, shape, bits, signed, centre, lsq, a):
    a = float(np.float32(a))                                   # the scale Parameter is stored in float32
    x = rand(seed, shape)
    if not signed:
        x = np.abs(x) * (rand(seed + 2, shape) > -0.5)          # non-negative with some zeros
    q = f64(Q.ElasticQuantizer(bits, signed, centre=centre, lsq_grad_scale=lsq, init_scale=a))
    G = rand(seed + 1, shape)
    y, gx = fwd_bwd(q, x, G)
    ry, dx, da = ref_elastic(x, a, bits, signed, centre)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(gx, G * dx)
    Qp = 1 if (signed and bits == 1) else (2 ** (bits - 1) - 1 if signed else {1: 1, 2: 2}.get(bits, 2 ** bits - 1))
    gs = 1 / np.sqrt(x.size * Qp) if lsq else 1.0
    np.testing.assert_allclose(q.scale.grad, [(G * da).sum() * gs], rtol=1e-10, atol=1e-12)
    assert q.precision == bits
    levels = np.unique(np.round(y / a, 9))
    assert len(levels) <= (2 if bits == 1 else 2 * Qp + 1 if signed else Qp + 1)


@pytest.mark.parametrize("bits,signed,binary_zero", [(1, True, "plus"), (1, True, "zero"), (2, True, "plus"),
                                                      (8, True, "plus"), (1, False, "plus"), (2, False, "plus")])
def test_elastic_float32_compiled_equals_numpy(monkeypatch, bits, signed, binary_zero):
    """In float32 the elastic quantizer's forward runs the compiled kernels.fake_quantize; the
    output, dL/dx and dL/da are bit for bit those of the NumPy reference (kernels._core = None),
    exact ties of the levels included."""
    from minitbt import kernels
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((5, 7, 37)).astype(np.float32)
    x[0] = (rng.integers(-4, 4, x[0].shape) + np.float32(0.5)) * np.float32(0.25)   # ties of u = x / 0.25
    if not signed:
        x = np.abs(x)
    G = rng.standard_normal(x.shape).astype(np.float32)

    def run():
        q = Q.ElasticQuantizer(bits, signed, centre=False, lsq_grad_scale=True, init_scale=0.25,
                               binary_zero=binary_zero)
        y, gx = fwd_bwd(q, x, G)
        return y, gx, q.scale.grad
    compiled = run()
    monkeypatch.setattr(kernels, "_core", None)
    for c, n in zip(compiled, run()):
        assert c.dtype == n.dtype == np.float32 and np.array_equal(c.view(np.uint32), n.view(np.uint32))


@FAST
@given(seeds, act_shapes, st.sampled_from([1, 2, 3]), st.floats(0.2, 2.0))
def test_elastic_shift_min(seed, shape, bits, a):
    a = float(np.float32(a))
    x = rand(seed, shape)
    q = f64(Q.ElasticQuantizer(bits, signed=False, shift_min=True, init_scale=a))
    G = rand(seed + 1, shape)
    y, gx = fwd_bwd(q, x, G)
    ry, dx, da = ref_elastic(x, a, bits, False, shift_min=True)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(gx, G * dx)
    np.testing.assert_allclose(q.scale.grad, [(G * da).sum()], rtol=1e-10, atol=1e-12)
    c = q.codes(x)
    assert np.array_equal(c.offset, x.min(axis=-1, keepdims=True))


def test_elastic_first_batch_init():
    x = rand(0, (2, 5, 8))
    xc = x - x.mean(axis=-1, keepdims=True)
    for bits, signed, expect in [(2, True, 2 * np.abs(xc).mean()), (4, True, 2 * np.abs(xc).mean() / np.sqrt(7)),
                                 (1, True, 2 * np.abs(xc).mean()), (2, False, 4 * np.abs(x).mean() / np.sqrt(2)),
                                 (1, False, 4 * np.abs(x).mean())]:
        q = Q.ElasticQuantizer(bits, signed)
        assert not q.initialized[0]
        q(Tensor(x))
        assert q.initialized[0]
        np.testing.assert_allclose(q.scale.data, [expect], rtol=1e-6)
        q.scale.data[...] = 0.5
        q(Tensor(2 * x))                                          # initialised once only
        assert q.scale.data[0] == 0.5
    q = Q.ElasticQuantizer(2, True, init_scale=0.3)
    q(Tensor(x))
    assert q.initialized[0] and np.isclose(q.scale.data[0], 0.3)
    assert "initialized" in dict(q.named_buffers())
    frozen = Q.ElasticQuantizer(2, True, learn_scale=False)
    assert frozen.scale.requires_grad is False


def ref_bit(x, a, b, signed):
    u = (x - b) / a
    if signed:
        q = np.where(x - b >= 0, 1.0, -1.0)
        inside = np.abs(u) < 1
        da = q
    else:
        q = np.round(np.clip(u, 0, 1))
        inside = (u >= 0) & (u < 1)
        da = np.where(inside, q - u, np.where(u < 0, 0.0, 1.0))
    return a * q, inside.astype(float), da, -inside.astype(float)


@FAST
@given(seeds, act_shapes, st.booleans(), st.floats(0.2, 2.0), st.floats(-0.5, 0.5))
def test_bit_elastic_binary(seed, shape, signed, a, b):
    a = float(np.float32(a))
    x = rand(seed, shape)
    q = f64(Q.BiTElasticBinary(signed, init_scale=a))
    q.offset.data[...] = b                                     # already float64 here
    G = rand(seed + 1, shape)
    y, gx = fwd_bwd(q, x, G)
    ry, dx, da, db = ref_bit(x, a, b, signed)
    np.testing.assert_allclose(y, ry, rtol=1e-12)
    np.testing.assert_array_equal(gx, G * dx)
    np.testing.assert_allclose(q.scale.grad, [(G * da).sum()], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q.offset.grad, [(G * db).sum()], rtol=1e-10, atol=1e-12)
    assert set(np.unique(np.round(y / a, 9))) <= ({-1.0, 1.0} if signed else {0.0, 1.0})


def test_bit_init():
    x = rand(1, (3, 4))
    q = Q.BiTElasticBinary(signed=False)
    q(Tensor(x))
    np.testing.assert_allclose(q.scale.data, [np.abs(x).mean()], rtol=1e-6)
    assert q.offset.data[0] == 0


@FAST
@given(seeds, act_shapes, st.sampled_from([2, 3, 8]), st.booleans(), st.sampled_from([None, 1.5]))
def test_minmax_signed(seed, shape, bits, per_token, clip):
    x = rand(seed, shape)
    q = Q.MinMaxQuantizer(bits, signed=True, clip=clip, per_token=per_token)
    G = rand(seed + 1, shape)
    y, gx = fwd_bwd(q, x, G)
    xc = np.clip(x, -clip, clip) if clip else x
    m = np.abs(xc).max(axis=-1 if per_token else None, keepdims=True)
    a = m / (2 ** (bits - 1) - 1)
    np.testing.assert_allclose(y, a * np.round(xc / a), rtol=1e-12)
    np.testing.assert_array_equal(gx, G * (np.abs(x) <= clip) if clip else G)


@FAST
@given(seeds, act_shapes, st.sampled_from([1, 2, 4]))
def test_minmax_unsigned_and_binary(seed, shape, bits):
    x = np.abs(rand(seed, shape))
    y, _ = fwd_bwd(Q.MinMaxQuantizer(bits, signed=False), x, np.ones(shape))
    Qp = {1: 1, 2: 2}.get(bits, 2 ** bits - 1)
    a = x.max(axis=-1, keepdims=True) / Qp
    np.testing.assert_allclose(y, a * np.round(np.clip(x / a, 0, Qp)), rtol=1e-12)
    xs = rand(seed, shape)
    y1, _ = fwd_bwd(Q.MinMaxQuantizer(1, signed=True), xs, np.ones(shape))
    np.testing.assert_allclose(y1, np.abs(xs).mean(axis=-1, keepdims=True) * np.where(xs >= 0, 1, -1), rtol=1e-12)


@FAST
@given(seeds, act_shapes)
def test_symmetric_a8(seed, shape):
    x = rand(seed, shape, 1.5)
    G = rand(seed + 1, shape)
    for per_token in (True, False):
        y, gx = fwd_bwd(Q.SymmetricA8(per_token=per_token), x, G)
        xc = np.clip(x, -2.5, 2.5)
        s = 127 / np.abs(xc).max(axis=-1 if per_token else None, keepdims=True)
        np.testing.assert_allclose(y, np.round(xc * s) / s, rtol=1e-12)
        np.testing.assert_array_equal(gx, G * (np.abs(x) <= 2.5))


@FAST
@given(seeds, act_shapes)
def test_bitnet_per_token_int8(seed, shape):
    x = rand(seed, shape, 3.0)
    q = Q.PerTokenAbsMax()
    G = rand(seed + 1, shape)
    y, gx = fwd_bwd(q, x, G)
    s = 127 / np.abs(x).max(axis=-1, keepdims=True)
    xq = np.clip(np.round(x * s), -128, 127)
    np.testing.assert_allclose(y, xq / s, rtol=1e-12)
    np.testing.assert_array_equal(q.codes(x).codes, xq)
    np.testing.assert_array_equal(gx, G)


@FAST
@given(seeds, act_shapes, st.sampled_from([4, 8]), st.booleans(), st.booleans())
def test_per_channel_fqt(seed, shape, bits, signed, per_channel):
    x = rand(seed, shape)
    if not signed:
        x = np.maximum(x, 0)
    C = shape[-1]
    q = f64(Q.PerChannelQuantizer(C if per_channel else None, bits, signed))
    q(Tensor(x))                                              # first-batch init: max|x_c| / Qp
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    m = np.abs(x).reshape(-1, C).max(axis=0) if per_channel else np.abs(x).max()
    init = np.where(m / hi > SCALE_EPS, m / hi, 1.0)          # a scale at or below the clamp starts at 1
    np.testing.assert_allclose(q.scale.data, init * np.ones(q.scale.shape), rtol=1e-12)
    s = np.abs(rand(seed + 3, q.scale.shape)) * 0.05 + 0.01   # a scale that clips some values
    q.scale.data[...] = s
    G = rand(seed + 1, shape)
    y, gx = fwd_bwd(q, x, G)
    u = x / s
    qq = np.round(np.clip(u, lo, hi))
    inside = (u > lo) & (u < hi)
    np.testing.assert_allclose(y, s * qq, rtol=1e-12)
    np.testing.assert_array_equal(gx, G * inside)
    ds = G * np.where(inside, qq - u, np.where(u <= lo, lo, hi))
    ds = ds.reshape(-1, C).sum(axis=0) if per_channel else [ds.sum()]
    np.testing.assert_allclose(q.scale.grad, ds, rtol=1e-9, atol=1e-9)
