"""Tests of the quantizers in minitbt.quant: straight-through estimators, weight quantizers
(forward = equation, backward = STE), integer codes of every quantizer, per-token (causal)
statistics, ties. The activation quantizers: test_quant_activation.py.

Every reference below is written out independently from the equations of docs/methods.md with plain
NumPy; nothing calls the package's own helpers to compute an expected value.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import minitbt.quant as Q
from minitbt import Tensor
from quant_helpers import FAST, fwd_bwd, mat_shapes, rand, seeds


# ---- straight-through estimators ------------------------------------------------------
@FAST
@given(arrays(np.float64, st.integers(1, 30), elements=st.floats(-3, 3)))
def test_ste_functions(u):
    assert np.array_equal(Q.identity_grad(u), np.ones_like(u))
    assert np.array_equal(Q.clipped_grad(u), (np.abs(u) < 1).astype(float))
    expect = np.array([2 - 2 * abs(v) if abs(v) < 1 else 0.0 for v in u])
    np.testing.assert_allclose(Q.approx_sign_grad(u), expect)


@pytest.mark.parametrize("ste", ["identity", "clipped", "approx_sign"])
def test_sign_forward_backward(ste):
    x = np.array([-2.0, -0.7, -0.2, 0.0, 0.3, 0.9, 1.5])
    G = np.arange(1.0, 8.0)
    y, gx = fwd_bwd(Q.Sign(ste), x, G)
    assert np.array_equal(y, [-1, -1, -1, 1, 1, 1, 1])
    local = {"identity": np.ones(7), "clipped": [0, 1, 1, 1, 1, 1, 0],
             "approx_sign": [0, 2 - 1.4, 2 - 0.4, 2, 2 - 0.6, 2 - 1.8, 0]}[ste]
    np.testing.assert_allclose(gx, G * np.asarray(local))
    assert Q.ApproxSign().ste == "approx_sign" and Q.Sign().precision == 1


def test_custom_quantizer():
    fwd = lambda x: np.clip(np.round(2 * x), -2, 2) / 2         # 5 levels, step 1/2
    grad = lambda x: (np.abs(x) <= 1).astype(x.dtype) * 0.5
    q = Q.custom_quantizer(fwd, grad, precision=3, name="half_steps")
    x = np.array([-1.6, -0.3, 0.1, 0.26, 0.8, 1.2])
    y, gx = fwd_bwd(q, x, np.ones(6))
    assert np.array_equal(y, [-1, -0.5, 0, 0.5, 1, 1])
    assert np.array_equal(gx, [0, 0.5, 0.5, 0.5, 0.5, 0])
    assert q.precision == 3
    with pytest.raises(NotImplementedError):
        q.codes(x)
    q2 = Q.custom_quantizer(fwd, grad, 3, codes_fn=lambda x: Q.QCodes(np.clip(np.round(2 * x), -2, 2).astype(np.int8),
                                                                      np.array(0.5), np.array(0.0)))
    assert np.array_equal(q2.codes(x).dequantize(), y)


# ---- weight quantizers: forward = equation, backward = STE ----------------------------
def ref_tbt(W, bits, centre=True, per_row=True):
    ax = -1 if per_row else None
    mu = W.mean(axis=ax, keepdims=True) if centre else 0.0
    Wc = W - mu
    if bits == 2:
        a = 4.0 / 3.0 * np.abs(Wc).mean(axis=ax, keepdims=True)
        Wq = a * np.round(np.clip(Wc / a, -1, 1))
    else:
        a = np.abs(Wc).mean(axis=ax, keepdims=True)
        Wq = a * np.where(Wc >= 0, 1.0, -1.0)
    return Wq, np.abs(Wc / a) < 1, a


@FAST
@given(seeds, mat_shapes, st.sampled_from([1, 2]), st.booleans(), st.booleans(), st.sampled_from(["clipped", "identity"]))
def test_tbt_weights(seed, shape, bits, centre, per_row, ste):
    W = rand(seed, shape, 0.1)
    cls = Q.TBTTernaryWeight if bits == 2 else Q.TBTBinaryWeight
    q = cls(per_row=per_row, centre=centre, ste=ste)
    G = rand(seed + 1, shape)
    y, gw = fwd_bwd(q, W, G)
    Wq, inside, a = ref_tbt(W, bits, centre, per_row)
    np.testing.assert_allclose(y, Wq, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(gw, G * inside if ste == "clipped" else G)
    levels = set(np.unique(np.round(y / a, 9)).tolist())
    assert levels <= ({-1.0, 0.0, 1.0} if bits == 2 else {-1.0, 1.0})
    assert q.precision == bits


@FAST
@given(seeds, mat_shapes, st.booleans())
def test_twn(seed, shape, per_row):
    W = rand(seed, shape, 0.1)
    ax = -1 if per_row else None
    delta = 0.7 * np.abs(W).mean(axis=ax, keepdims=True)
    keep = np.abs(W) > delta
    a = (np.abs(W) * keep).sum(axis=ax, keepdims=True) / keep.sum(axis=ax, keepdims=True)
    G = rand(seed + 1, shape)
    y, gw = fwd_bwd(Q.TWNWeight(per_row=per_row), W, G)
    np.testing.assert_allclose(y, a * np.sign(W) * keep, rtol=1e-12)
    np.testing.assert_array_equal(gw, G)


@FAST
@given(seeds, mat_shapes, st.booleans(), st.booleans())
def test_bwn_and_bit_weights(seed, shape, per_row, centre):
    W = rand(seed, shape, 0.1)
    ax = -1 if per_row else None
    a = np.abs(W).mean(axis=ax, keepdims=True)
    s = np.where((W - W.mean(axis=ax, keepdims=True) if centre else W) >= 0, 1.0, -1.0)
    y, gw = fwd_bwd(Q.BWNWeight(per_row=per_row, centre=centre), W, np.ones(shape))
    np.testing.assert_allclose(y, a * s, rtol=1e-12)
    np.testing.assert_array_equal(gw, np.ones(shape))


@FAST
@given(seeds, mat_shapes)
def test_bitnet_absmean(seed, shape):
    W = rand(seed, shape, 0.1)
    s = np.abs(W).mean()
    y, gw = fwd_bwd(Q.AbsMeanWeight(), W, np.ones(shape))
    np.testing.assert_allclose(y, s * np.clip(np.round(W / s), -1, 1), rtol=1e-12)
    np.testing.assert_array_equal(gw, np.ones(shape))


@FAST
@given(seeds, mat_shapes, st.sampled_from([3, 4, 8]))
def test_absmax_weight(seed, shape, bits):
    W = rand(seed, shape, 0.1)
    Qp = 2 ** (bits - 1) - 1
    a = np.abs(W).max(axis=-1, keepdims=True) / Qp
    y, _ = fwd_bwd(Q.AbsMaxWeight(bits), W, np.ones(shape))
    np.testing.assert_allclose(y, a * np.round(W / a), rtol=1e-12)
    assert np.abs(Q.AbsMaxWeight(bits).codes(W).codes).max() == Qp


def greedy_binary_coding(w, k):
    r, out = w.copy(), np.zeros_like(w)
    for _ in range(k):
        a = np.abs(r).mean(axis=-1, keepdims=True)
        b = np.where(r >= 0, 1.0, -1.0)
        out += a * b
        r -= a * b
    return out


@FAST
@given(seeds, mat_shapes, st.sampled_from([1, 2, 3]))
def test_binary_coding(seed, shape, k):
    W = rand(seed, shape, 0.1)
    q = Q.BinaryCodingWeight(k)
    G = rand(seed + 1, shape)
    y, gw = fwd_bwd(q, W, G)
    np.testing.assert_array_equal(gw, G)                        # identity STE
    c = q.codes(W)
    assert c.codes.shape == (k,) + shape and set(np.unique(c.codes)) <= {-1, 1}
    assert c.scale.shape == (k, shape[0], 1)
    greedy = greedy_binary_coding(W, k)
    if k == 1:
        np.testing.assert_allclose(y, greedy, rtol=1e-12)      # one bit: mean|w| * sign(w) per row
    else:                                                       # refinement never does worse than greedy
        err = ((W - y) ** 2).sum(axis=-1)
        assert np.all(err <= ((W - greedy) ** 2).sum(axis=-1) + 1e-12)


def test_binary_coding_more_bits_fit_better():
    W = rand(0, (8, 64), 0.1)
    errs = [np.linalg.norm(W - Q.BinaryCodingWeight(k)(Tensor(W)).data) for k in (1, 2, 3, 4)]
    assert errs == sorted(errs, reverse=True) and errs[3] < 0.3 * errs[0]
    greedy = np.linalg.norm(W - Q.BinaryCodingWeight(4, iters=0)(Tensor(W)).data)
    assert errs[3] < 0.8 * greedy                               # the alternating refinement pays


def ref_lat(W, d, iters=3):
    aw = np.abs(W)
    keep = aw > 0.7 * aw.mean()
    a = aw[keep].mean()
    for _ in range(iters):
        b = aw > a / 2
        a = (b * d * aw).sum() / (b * d).sum()
    return a * np.sign(W) * (aw > a / 2)


def test_lat_weights():
    W = rand(3, (6, 10), 0.1)
    twn = Q.TWNWeight()(Tensor(W)).data
    q = Q.LATWeight()
    np.testing.assert_array_equal(q(Tensor(W)).data, twn)        # no curvature -> TWN
    d = np.abs(rand(4, W.shape)) + 0.1
    q.set_curvature(d)
    np.testing.assert_allclose(q(Tensor(W)).data, ref_lat(W, d), rtol=1e-12)
    q.set_curvature(np.zeros_like(W))                             # all-zero curvature (before step 1) -> TWN
    np.testing.assert_array_equal(q(Tensor(W)).data, twn)
    q2 = Q.LATWeight(curvature=lambda: d)                         # a provider callable
    np.testing.assert_allclose(q2(Tensor(W)).data, ref_lat(W, d), rtol=1e-12)
    assert not np.allclose(ref_lat(W, d), twn)
    _, gw = fwd_bwd(q2, W, np.ones(W.shape))
    np.testing.assert_array_equal(gw, np.ones(W.shape))


# ---- codes: integers * scale + offset == the fake-quantized forward, exactly --------------
QUANTIZERS = [
    ("tbt2", lambda: Q.TBTTernaryWeight(), "w"), ("tbt1", lambda: Q.TBTBinaryWeight(), "w"),
    ("tbt2code", lambda: Q.TBTTernaryWeight(centre=False, ste="identity"), "w"),
    ("twn", lambda: Q.TWNWeight(), "w"), ("twn_row", lambda: Q.TWNWeight(per_row=True), "w"),
    ("bwn", lambda: Q.BWNWeight(), "w"), ("bit_w", lambda: Q.BWNWeight(centre=True), "w"),
    ("absmean", lambda: Q.AbsMeanWeight(), "w"), ("absmax4", lambda: Q.AbsMaxWeight(4), "w"),
    ("bcq3", lambda: Q.BinaryCodingWeight(3), "w"), ("lat", lambda: Q.LATWeight(), "w"),
    ("sign", lambda: Q.Sign(), "x"),
    ("el_s2", lambda: Q.ElasticQuantizer(2, True), "x"), ("el_s1", lambda: Q.ElasticQuantizer(1, True), "x"),
    ("el_s4", lambda: Q.ElasticQuantizer(4, True), "x"), ("el_u2", lambda: Q.ElasticQuantizer(2, False), "p"),
    ("el_u1", lambda: Q.ElasticQuantizer(1, False), "p"),
    ("el_u2_shift", lambda: Q.ElasticQuantizer(2, False, shift_min=True), "x"),
    ("bit_s", lambda: Q.BiTElasticBinary(True), "x"), ("bit_u", lambda: Q.BiTElasticBinary(False), "p"),
    ("mm2", lambda: Q.MinMaxQuantizer(2), "x"), ("mm1", lambda: Q.MinMaxQuantizer(1), "x"),
    ("mm_u2", lambda: Q.MinMaxQuantizer(2, signed=False), "p"), ("a8", lambda: Q.SymmetricA8(), "x"),
    ("a8_tensor", lambda: Q.SymmetricA8(per_token=False), "x"), ("int8", lambda: Q.PerTokenAbsMax(), "x"),
    ("fqt", lambda: Q.PerChannelQuantizer(8, 4), "x"), ("fqt_u", lambda: Q.PerChannelQuantizer(None, 8, False), "p"),
    ("seq2", lambda: Q.SEQWeight(2, rows=6), "w"), ("seq1", lambda: Q.SEQWeight(1, rows=6), "w"),
    ("el_s1_zero", lambda: Q.ElasticQuantizer(1, True, binary_zero="zero"), "x"),
    ("el_u2_code", lambda: Q.ElasticQuantizer(2, False, init="code"), "p"),
    ("bit_s_zero", lambda: Q.BiTElasticBinary(True, binary_zero="zero", lsq_grad_scale=True), "x"),
    ("mm_u8", lambda: Q.MinMaxQuantizer(8, signed=False, clip=2.5), "p"),
]


@pytest.mark.parametrize("name,make,kind", QUANTIZERS, ids=[q[0] for q in QUANTIZERS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_codes_reconstruct_forward(name, make, kind, dtype):
    q = make().to_dtype(dtype)
    x = rand(7, (6, 8) if kind == "w" else (2, 3, 8), 0.1 if kind == "w" else 1.0)
    if kind == "p":
        x = np.abs(x)
    x = x.astype(dtype)
    y = q(Tensor(x)).data
    c = q.codes(x)
    assert c.codes.dtype.kind == "i"
    assert y.dtype == dtype
    assert np.array_equal(c.dequantize(), y), name
    n_levels = len(np.unique(c.codes))
    assert n_levels <= 2 ** q.precision if not isinstance(q, Q.BinaryCodingWeight) else True
    doc = type(q).__doc__
    assert doc and any(str(y) in doc for y in range(2013, 2026)), f"{name}: docstring must cite its source"


# ---- per-token statistics: a token's code does not depend on the other tokens ------------
CAUSAL = [q for q in QUANTIZERS if q[2] != "w" and q[0] not in ("a8_tensor",)]


@pytest.mark.parametrize("name,make,kind", CAUSAL, ids=[q[0] for q in CAUSAL])
def test_activation_quantizers_are_per_token(name, make, kind):
    q = make().to_dtype(np.float64)
    x = rand(11, (2, 6, 8))
    if kind == "p":
        x = np.abs(x)
    full = q(Tensor(x)).data                                   # (also initialises learned scales)
    for t in range(6):
        np.testing.assert_allclose(q(Tensor(x[:, t:t + 1])).data, full[:, t:t + 1], rtol=1e-13, atol=1e-15)


def test_per_tensor_a8_mixes_positions():
    x = rand(12, (1, 4, 8))
    x[0, 0] *= 10                                               # one loud token changes everyone's scale
    q = Q.SymmetricA8(per_token=False, clip=None)
    assert not np.allclose(q(Tensor(x)).data[:, 1:2], q(Tensor(x[:, 1:2])).data)


def test_exact_ties_do_not_flip_with_last_bit_noise():
    """Quantized networks make exact ties (here sum of +a and -a); ulp noise must not flip the code."""
    x = np.full((1, 4), 0.3)                                    # a token whose centred values are exactly 0
    noisy = x.copy()
    noisy[0, 1] = np.nextafter(0.3, 1.0)                        # ... and the same token one ulp away
    q = Q.ElasticQuantizer(1, signed=True, init_scale=1.0).to_dtype(np.float64)
    assert np.array_equal(q(Tensor(x)).data, q(Tensor(noisy)).data)
    assert np.array_equal(q(Tensor(x)).data, np.ones((1, 4)))  # sign(0) = +1
    m = Q.MinMaxQuantizer(2)                                    # ternary: u = 0.5 exactly at half the max
    z = np.array([[0.5, -0.25, 0.25, 0.1]])
    z2 = z.copy()
    z2[0, 1:3] *= 1 + 1e-15                                     # the two ties, off by a few ulps
    assert np.array_equal(m(Tensor(z)).data, m(Tensor(z2)).data)
    assert np.array_equal(m(Tensor(z)).data, [[0.5, 0, 0, 0]])  # the tie itself rounds half to even


@pytest.mark.parametrize("signed", [False, True])
def test_learned_scale_below_zero_is_clamped_and_can_recover(signed):
    """A learned scale pushed through zero by the optimizer: the forward uses max(a, SCALE_EPS)
    (so an unsigned quantizer does not map everything to 0), the scale still gets a gradient, and
    one SGD step on a loss that wants a larger scale moves it back up."""
    from minitbt.quant.activation import SCALE_EPS, ElasticQuantizer
    q = ElasticQuantizer(bits=1, signed=signed, init_scale=0.1)
    q.scale.data[...] = -0.004                            # what AdamW did to 5 of 9 attention quantizers
    x = Tensor(np.random.default_rng(0).uniform(0.0, 0.2, (3, 8)), requires_grad=True)
    y = q(x)
    levels = np.unique(np.abs(y.data))
    allowed = [SCALE_EPS] if signed else [0.0, SCALE_EPS]       # the levels with a = SCALE_EPS
    assert np.isclose(levels[:, None], allowed, rtol=1e-6, atol=0).any(axis=1).all(), levels
    assert np.any(y.data != 0)                            # unsigned: inputs above eps/2 give eps, not 0
    target = np.sign(y.data) * 0.1                        # outputs of size 0.1 want a = 0.1
    ((y - Tensor(target)) ** 2).sum().backward()
    before = q.scale.data.copy()
    from minitbt.optim import SGD
    SGD([q.scale], lr=1e-3).step()
    assert q.scale.grad is not None and np.all(q.scale.grad < 0)
    assert np.all(q.scale.data > before)


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]), zero=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_sign_ties_is_its_definition(dtype, zero, seed):
    """sign_ties's two-pass form equals its definition: |u| below the tie window _tie_tol(u, 1)
    counts as 0 (then +1, or 0 with zero=True), on values at and around the window's edges."""
    from minitbt.quant.base import _tie_tol, sign_ties
    rng = np.random.default_rng(seed)
    c = 256 * np.finfo(dtype).eps
    edges = np.array([0.0, -0.0, c, -c, np.nextafter(c, 0), -np.nextafter(c, 0), 1.0, -1.0, np.inf, -np.inf, np.nan])
    u = np.concatenate([rng.normal(size=500), rng.uniform(-3 * c, 3 * c, 500), edges]).astype(dtype)
    tie = np.abs(u) < _tie_tol(u, 1)
    want = np.where(tie, 0.0, np.where(u > 0, 1.0, -1.0)) if zero else np.where((u >= 0) | tie, 1.0, -1.0)
    got = sign_ties(u, zero=zero)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want.astype(dtype))
