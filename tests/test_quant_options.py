"""The recipe options that align minitbt with the released TBT code (docs/quantization.md, "Released
code vs paper: the options") and the ParetoQ SEQ weights: each option's equation, that it reaches
its quantizers, that it survives a checkpoint, its pseudo-gradient against central differences,
and what the packed runtime does with it.

The gradient checks use minitbt.gradcheck on ``y - y.detach() + S``: the analytic gradient is the
quantizer's own backward, the numeric one the central difference of S, the quantizer's equation with
each round/sign offset and clip decision frozen at the checked point (the definition of a
straight-through estimator), and LSQ's gradient scale g written as a_eff = a0 + g (a - a0).
"""
import numpy as np
import pytest

import minitbt.quant as Q
from minitbt import Tensor, nn, no_grad
from minitbt.gradcheck import gradcheck
from minitbt.quant.activation import ElasticQuantizer
from minitbt.quant.minmax import MinMaxQuantizer


def tiny(seed=0, **kw):
    cfg = dict(vocab_size=40, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1,
               max_len=24, dropout=0.0, seed=seed)
    cfg.update(kw)
    return nn.Seq2SeqTransformer(nn.TransformerConfig(**cfg))


def batch(seed=0, B=3, S=7, T=6, V=40):
    rng = np.random.default_rng(seed)
    src = rng.integers(3, V, (B, S))
    src[0, 5:] = 0                                            # a padded source
    return src, rng.integers(3, V, (B, T))


def ste_check(q, inputs, surrogate):
    """gradcheck of q's backward (q applied to inputs[0]) against central differences of surrogate(*arrays)."""
    def fn(x, *params):
        y = q(x)
        return y - y.detach() + Tensor(surrogate(x.data, *(p.data for p in params)))
    return gradcheck(fn, inputs, eps=1e-7, atol=1e-6, rtol=1e-5)


def lsq_form(v, a, lo, hi, r0):
    """a * (clip(v/a, lo, hi) + r0): a*round(clip(v/a)) with the rounding offset r0 frozen."""
    return a * (np.clip(v / a, lo, hi) + r0)


# ---- parsing and validation --------------------------------------------------------------------
def test_parse_options_types_and_errors():
    opts = Q.QuantRecipe.parse_options(" lsq_grad_scale=1, binary_zero=zero ,a8_clip=none,elastic_init=code,"
                                       "centre=false,a8_unsigned=minmax,weights=seq,")
    assert opts == {"lsq_grad_scale": True, "binary_zero": "zero", "a8_clip": None, "elastic_init": "code",
                    "centre": False, "a8_unsigned": "minmax", "weights": "seq"}
    assert Q.QuantRecipe.parse_options("") == {} and Q.QuantRecipe.parse_options("a8_clip=3")["a8_clip"] == 3.0
    for bad in ("lsq_grad_scale", "nosuch=1", "act_bits=2", "method=bit", "lsq_grad_scale=maybe", "a8_clip=x"):
        with pytest.raises(ValueError):
            Q.QuantRecipe.parse_options(bad)
    for field, value in (("elastic_init", "paper"), ("a8_unsigned", "asym"), ("binary_zero", "minus"),
                         ("weights", "nope")):
        with pytest.raises(ValueError, match=field if field != "weights" else "weight family"):
            Q.QuantRecipe.parse("2-2-2", **{field: value})


def test_defaults_are_the_documented_ones_and_tbt_code_sets_every_code_choice():
    """The defaults: the paper's choices except LSQ's scale-gradient factor (the pilot's winner,
    docs/quantization.md); tbt-code: every released-code choice."""
    fp = tiny()
    plain = Q.describe(Q.quantize_model(fp, "1-1-1"))
    explicit = Q.describe(Q.quantize_model(fp, "1-1-1", elastic_init="levels", a8_unsigned="symmetric",
                                           binary_zero="plus", lsq_grad_scale=True))
    assert plain == explicit
    assert plain != Q.describe(Q.quantize_model(fp, "1-1-1", lsq_grad_scale=False))
    r = Q.QuantRecipe.parse("tbt-code-1-1-1")
    assert (r.centre, r.weight_ste, r.lsq_grad_scale, r.shift_min, r.elastic_init, r.a8_unsigned, r.binary_zero) \
        == (False, "identity", True, True, "code", "minmax", "zero")
    assert Q.QuantRecipe.parse("tbt-code-1-1-1", binary_zero="plus").binary_zero == "plus"   # overridable


def test_options_reach_their_quantizers():
    fp = tiny()
    m = Q.quantize_model(fp, "1-1-1", lsq_grad_scale=True, elastic_init="code", binary_zero="zero")
    attn = m.encoder[0].self_attn
    for q in (attn.q_quant, attn.q_proj.input_quantizer, attn.p_quant, m.encoder[0].ffn.fc2.input_quantizer):
        assert isinstance(q, ElasticQuantizer) and q.lsq_grad_scale and q.init == "code" and q.binary_zero == "zero"
    bit = Q.quantize_model(fp, "bit-1-1-1", lsq_grad_scale=True, binary_zero="zero").encoder[0].self_attn
    assert isinstance(bit.p_quant, Q.BiTElasticBinary) and not bit.p_quant.signed      # BiT two-set: {0, a}
    assert bit.p_quant.lsq_grad_scale and bit.k_quant.binary_zero == "zero"
    fqt = Q.quantize_model(fp, "fqt-4-4-4", lsq_grad_scale=True).encoder[0].ffn.fc1.input_quantizer
    assert isinstance(fqt, Q.PerChannelQuantizer) and fqt.lsq_grad_scale
    a8 = Q.quantize_model(fp, "2-2-8", a8_unsigned="minmax")
    for q in (a8.decoder[0].cross_attn.p_quant, a8.decoder[0].ffn.fc2.input_quantizer):
        assert type(q) is MinMaxQuantizer and not q.signed and q.qp == 255 and q.clip == 2.5 and q.per_token
    assert isinstance(a8.decoder[0].ffn.fc1.input_quantizer, Q.SymmetricA8)          # signed sites unchanged
    seq = Q.quantize_model(fp, "paretoq-2-2-2")
    assert isinstance(seq.embed.weight_quantizer, Q.SEQWeight) and seq.embed.weight_quantizer.rows == 40
    assert seq.decoder[0].ffn.fc1.weight_quantizer.rows == 32
    assert isinstance(seq.decoder[0].ffn.fc1.input_quantizer, ElasticQuantizer)


@pytest.mark.parametrize("spec,options", [("1-1-1", dict(lsq_grad_scale=True, elastic_init="code", binary_zero="zero")),
                                          ("2-2-8", dict(a8_unsigned="minmax")), ("paretoq-1-1-1", {}),
                                          ("bit-1-1-1", dict(lsq_grad_scale=True)), ("2-2-2", dict(subln=True))])
def test_options_survive_a_checkpoint(spec, options, tmp_path):
    from minitbt.model_io import load_model, save_model
    m = Q.quantize_model(tiny(1), spec, **options).eval()
    src, tgt = batch(1)
    with no_grad():
        ref = m(src, tgt).data                                   # initialises the learned scales
    save_model(str(tmp_path / "m.npz"), m)
    back, meta = load_model(str(tmp_path / "m.npz"))
    assert all(meta["quant"][k] == v for k, v in options.items())
    assert Q.describe(back) == Q.describe(m)
    with no_grad():
        np.testing.assert_array_equal(back(src, tgt).data, ref)


def test_old_headers_without_the_options_load_with_the_defaults():
    from dataclasses import asdict
    from minitbt.model_io import config_from_header
    old = {k: v for k, v in asdict(Q.QuantRecipe.parse("1-1-1")).items()
           if k not in ("elastic_init", "a8_unsigned", "binary_zero")}
    r = config_from_header(Q.QuantRecipe, old, "quant", "old.npz")
    assert (r.elastic_init, r.a8_unsigned, r.binary_zero) == ("levels", "symmetric", "plus")


# ---- elastic_init ------------------------------------------------------------------------------
def test_elastic_init_code_rule():
    """code: a = 2 mean|X| / sqrt(max(1, 2^(k-1) - 1)) signed, 4 mean|X| / sqrt(2^k - 1) unsigned."""
    x = np.abs(np.random.default_rng(0).standard_normal((2, 5, 8)))
    for bits, signed, qp_code, qp_levels in [(2, False, 3, 2), (1, False, 1, 1), (3, False, 7, 7),
                                             (2, True, 1, 1), (1, True, 1, 1), (4, True, 7, 7)]:
        k = 2 if signed else 4
        code = ElasticQuantizer(bits, signed, centre=False, init="code")
        levels = ElasticQuantizer(bits, signed, centre=False)
        code(Tensor(x)), levels(Tensor(x))
        np.testing.assert_allclose(code.scale.data, [k * np.abs(x).mean() / np.sqrt(qp_code)], rtol=1e-6)
        np.testing.assert_allclose(levels.scale.data, [k * np.abs(x).mean() / np.sqrt(qp_levels)], rtol=1e-6)
    u2 = ElasticQuantizer(2, signed=False), ElasticQuantizer(2, signed=False, init="code")
    [q(Tensor(x)) for q in u2]
    np.testing.assert_allclose(u2[0].scale.data / u2[1].scale.data, np.sqrt(1.5), rtol=1e-6)


# ---- binary_zero -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda bz: ElasticQuantizer(1, True, centre=False, init_scale=0.5, binary_zero=bz),
                                  lambda bz: Q.BiTElasticBinary(True, init_scale=0.5, binary_zero=bz)])
def test_binary_zero(make):
    x = np.array([[-0.7, 0.0, 0.2, 1.4, 0.0, -0.1]])
    plus, zero = make("plus").to_dtype(np.float64), make("zero").to_dtype(np.float64)
    np.testing.assert_array_equal(plus(Tensor(x)).data, [[-0.5, 0.5, 0.5, 0.5, 0.5, -0.5]])
    np.testing.assert_array_equal(zero(Tensor(x)).data, [[-0.5, 0.0, 0.5, 0.5, 0.0, -0.5]])
    assert zero.codes(x).codes.tolist() == [[-1, 0, 1, 1, 0, -1]]
    assert np.array_equal(zero(Tensor(x + 1e-17)).data, zero(Tensor(x)).data)     # last-bit noise stays 0
    t = Tensor(x, requires_grad=True)
    zero(t).backward(np.ones_like(x))
    assert zero.scale.grad[0] == -1 + 0 + 1 + 1 + 0 - 1                          # dX_q/da = code, 0 at the zeros
    assert "binary_zero=zero" in zero.describe()


def test_binary_zero_gradient_against_central_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8))
    x[0] = [-0.3, 0.3, 0.0, 0.5, -0.5, 0.9, -0.9, 0.0]   # mean 0: two exact zeros after centring
    q = ElasticQuantizer(1, True, init_scale=0.8, binary_zero="zero").to_dtype(np.float64)
    xt, a = Tensor(x.copy(), requires_grad=True), q.scale
    mean0 = x.mean(axis=-1, keepdims=True)
    q0 = q.codes(x).codes.astype(float)
    a0 = float(a.data[0])
    lim = lambda v: np.clip(v - mean0, -a0, a0)      # the clipped STE of sign, |X'| < a
    x0 = x.copy()                                    # gradcheck perturbs xt's array in place
    assert ste_check(q, [xt, a], lambda xv, av: av * q0 + lim(xv) - lim(x0))


def test_pack_model_refuses_binary_zero():
    from minitbt.packed import pack_model
    with pytest.raises(ValueError, match="binary_zero"):
        pack_model(Q.quantize_model(tiny(), "1-1-1", binary_zero="zero"))
    pack_model(Q.quantize_model(tiny(), "2-2-2", binary_zero="zero"))    # no signed 1-bit site: packs


# ---- LSQ gradient scale on BiT and FQT scales ---------------------------------------------------
@pytest.mark.parametrize("signed", [False, True])
def test_bit_lsq_grad_scale(signed):
    rng = np.random.default_rng(4)
    x = np.abs(rng.standard_normal((2, 3, 6))) if not signed else rng.standard_normal((2, 3, 6))
    G = rng.standard_normal(x.shape)
    grads = []
    for lsq in (False, True):
        q = Q.BiTElasticBinary(signed, init_scale=0.6, lsq_grad_scale=lsq).to_dtype(np.float64)
        q.offset.data[...] = 0.1
        q(Tensor(x)).backward(G)
        grads.append((q.scale.grad[0], q.offset.grad[0]))
    assert np.isclose(grads[1][0], grads[0][0] / np.sqrt(x.size))                # dL/da times 1/sqrt(N)
    assert grads[1][1] == grads[0][1]                                              # dL/db unscaled
    if not signed:                                                                 # central differences
        q = Q.BiTElasticBinary(False, init_scale=0.6, lsq_grad_scale=True).to_dtype(np.float64)
        q.offset.data[...] = 0.1
        a0 = float(q.scale.data[0])
        u0 = (x - 0.1) / a0
        r0 = np.clip(np.rint(u0), 0, 1) - np.clip(u0, 0, 1)
        g = 1 / np.sqrt(x.size)
        assert ste_check(q, [Tensor(x.copy(), requires_grad=True), q.scale, q.offset],
                         lambda xv, av, bv: lsq_form(xv - bv, a0 + g * (av - a0), 0, 1, r0))


def test_per_channel_lsq_grad_scale():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 4))
    q = Q.PerChannelQuantizer(4, 4, True, lsq_grad_scale=True).to_dtype(np.float64)
    s0 = np.array([0.05, 0.1, 0.2, 0.3])
    q.scale.data[...] = s0
    q.initialized[...] = True
    u0 = x / s0
    r0 = np.clip(np.rint(u0), -7, 7) - np.clip(u0, -7, 7)
    g = 1 / np.sqrt(10 * 7)                                                        # N = 2*5 per channel, Qp = 7
    assert ste_check(q, [Tensor(x.copy(), requires_grad=True), q.scale],
                     lambda xv, sv: lsq_form(xv, s0 + g * (sv - s0), -7, 7, r0))


# ---- a8_unsigned="minmax" -----------------------------------------------------------------------
def test_a8_unsigned_minmax_equation_and_decoding():
    q = Q.quantize_model(tiny(), "2-2-8", a8_unsigned="minmax").decoder[0].ffn.fc2.input_quantizer
    x = np.maximum(np.random.default_rng(6).standard_normal((2, 3, 32)) * 1.5, 0)
    x[0, 0, :] = 0
    a = np.minimum(x, 2.5).max(axis=-1, keepdims=True) / 255
    ref = np.where(a > 0, np.rint(np.minimum(x, 2.5) / np.where(a > 0, a, 1)), 0) * a
    np.testing.assert_allclose(q(Tensor(x)).data, ref, rtol=1e-12, atol=1e-15)
    assert q.codes(x).codes.max() == 255                                           # 255 levels, not 127
    qm = Q.quantize_model(tiny(seed=2), "2-2-8", a8_unsigned="minmax").to_dtype(np.float64).eval()
    src, tgt = batch(2)
    with no_grad():
        full = qm(src, tgt).data
        memory, src_pad = qm.encode(src)
        cache = qm.init_cache()
        steps = [qm.decode(tgt[:, t:t + 1], memory, src_pad, cache=cache, offset=t).data for t in range(tgt.shape[1])]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-9, atol=1e-9)


# ---- ParetoQ SEQ weights --------------------------------------------------------------------------
def test_seq_ternary_forward_init_and_codes():
    W = np.random.default_rng(7).standard_normal((5, 12)) * 0.1
    q = Q.SEQWeight(2, rows=5).to_dtype(np.float64)
    y = q(Tensor(W)).data
    a = np.abs(W).max(axis=1)                                                      # init: max|W_r|
    np.testing.assert_allclose(q.scale.data, a, rtol=1e-6)
    a = q.scale.data[:, None]
    expect = a / 1.5 * np.round(np.clip(W / a, -0.99, 0.99) * 1.5)
    np.testing.assert_allclose(y, expect, rtol=1e-12)
    ratio = y / a
    np.testing.assert_allclose(np.abs(ratio[y != 0]), 2 / 3, rtol=1e-12)             # levels {-2/3, 0, 2/3} a
    u = W / a
    np.testing.assert_array_equal(y == 0, np.abs(u) < 1 / 3)                       # equal-width bins
    c = q.codes(W)
    assert np.array_equal(c.dequantize(), y) and set(np.unique(c.codes)) <= {-1, 0, 1}
    b = Q.SEQWeight(1, rows=5).to_dtype(np.float64)
    yb = b(Tensor(W)).data
    np.testing.assert_allclose(yb, np.abs(W).mean(axis=1, keepdims=True) * np.where(W >= 0, 1, -1), rtol=1e-6)
    for bad in (dict(bits=3, rows=5), dict(bits=2, rows=None), dict(bits=2, rows=0)):
        with pytest.raises(ValueError):
            Q.SEQWeight(**bad)
    with pytest.raises(ValueError, match="expected a"):
        q(Tensor(W[:4]))


@pytest.mark.parametrize("bits", [2, 1])
def test_seq_gradient_against_central_differences(bits):
    rng = np.random.default_rng(8 + bits)
    W = rng.standard_normal((4, 9)) * 0.1
    a0 = np.abs(W).mean(axis=1) * 1.8                                              # some |W/a| beyond the clip
    q = Q.SEQWeight(bits, rows=4, init_scale=1.0).to_dtype(np.float64)
    q.scale.data[...] = a0
    g = 1 / np.sqrt(W.size)
    u0 = W / a0[:, None]
    if bits == 2:
        assert np.any(np.abs(u0) > 0.99) and np.any(np.abs(u0) < 0.99)
        v0 = np.clip(u0, -0.99, 0.99) * 1.5
        r0 = np.rint(v0) - v0                                                      # frozen rounding offset

        def S(wv, av):
            a = (a0 + g * (av - a0))[:, None]
            return a / 1.5 * (np.clip(wv / a, -0.99, 0.99) * 1.5 + r0)
    else:
        s0 = np.where(W >= 0, 1.0, -1.0)

        def S(wv, av):                                                             # a*sign(W), STE 1{|W/a| <= 1}
            a = (a0 + g * (av - a0))[:, None]
            lim = a0[:, None]
            return a * s0 + np.clip(wv, -lim, lim) - np.clip(W, -lim, lim)
    assert ste_check(q, [Tensor(W.copy(), requires_grad=True), q.scale], S)


def test_seq_scales_are_learned_and_not_decayed():
    from minitbt import optim
    from minitbt import functional as F
    qm = Q.quantize_model(tiny(3), "paretoq-2-2-2")
    src, tgt = batch(3)
    opt = optim.AdamW(qm.parameters(), lr=1e-2, weight_decay=0.5)
    logits = qm(src, tgt)
    F.cross_entropy(logits.reshape(-1, 40), tgt.reshape(-1)).backward()
    wq = qm.encoder[0].ffn.fc1.weight_quantizer
    assert wq.scale.data.ndim == 1 and wq.scale.grad is not None and np.any(wq.scale.grad)
    emb = qm.embed.weight_quantizer
    assert emb.scale.grad is not None                                              # whole-table quantization
    before = wq.scale.data.copy()
    wq.scale.grad = np.zeros_like(before)
    opt.step()
    np.testing.assert_array_equal(wq.scale.data, before)                           # 1-D: no weight decay
    assert any(n.endswith("weight_quantizer.scale") for n in qm.state_dict())
    assert len(Q.quantizer_parameters(qm)) == sum(1 for _, m in Q.quantizers(qm) for _ in m.parameters())


# ---- packing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,options,kernels", [
    ("paretoq-2-2-2", {}, {"ternary x ternary planes", "bit planes (2-bit unsigned)"}),
    ("paretoq-1-1-1", {}, {"xnor-popcount", "bit planes x signs (1-bit unsigned)"}),
    ("2-2-8", dict(a8_unsigned="minmax"), {"ternary x int8", "bit planes (8-bit unsigned)"}),
])
def test_packed_equals_fake_quant(spec, options, kernels, tmp_path):
    from minitbt.decode import greedy
    from minitbt.model_io import build_model
    from minitbt.packed import kernel_report, load_packed, pack_model, save_packed
    fp = build_model(vocab_size=300, d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2,
                     max_len=40, dropout=0.0, seed=0)
    q = Q.quantize_model(fp, spec, **options).eval().to_dtype(np.float64)
    p = pack_model(q)
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(3, 300, (6, 13)), rng.integers(3, 300, (6, 9))
    src[0, 9:] = 0
    with no_grad():
        ref, out = q(src, tgt).data, p(src, tgt).data
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    assert greedy(q, src, 15) == greedy(p, src, 15)
    assert set(kernel_report(p).values()) == kernels
    q32 = Q.quantize_model(fp, spec, **options).eval()             # a packed file holds float32
    with no_grad():
        q32(src, tgt)                                               # initialise the activation scales
    p32 = pack_model(q32)
    save_packed(str(tmp_path / "p.npz"), p32)                       # the options come back from the header
    p2, meta = load_packed(str(tmp_path / "p.npz"))
    assert all(meta["quant"][k] == v for k, v in options.items())
    with no_grad():
        np.testing.assert_array_equal(p2(src, tgt).data, p32(src, tgt).data)


def test_subln_places_a_layer_norm_before_out_proj_and_fc2():
    """BitDistill's SubLN: out_proj's and fc2's inputs are normalised before their quantizers, and
    fc2's input, no longer a ReLU output, gets a signed quantizer."""
    from minitbt.nn.layers import LayerNorm
    m = Q.quantize_model(tiny(1), "2-2-2", subln=True)
    for attn in m.attention_modules():
        assert isinstance(attn.out_proj.input_norm, LayerNorm)
        assert all(getattr(attn, n).input_norm is None for n in ("q_proj", "k_proj", "v_proj"))
    for layer in list(m.encoder) + list(m.decoder):
        assert isinstance(layer.ffn.fc2.input_norm, LayerNorm) and layer.ffn.fc1.input_norm is None
        assert layer.ffn.fc2.input_quantizer.signed
    plain = Q.quantize_model(tiny(1), "2-2-2")
    assert plain.decoder[0].ffn.fc2.input_norm is None and not plain.decoder[0].ffn.fc2.input_quantizer.signed
