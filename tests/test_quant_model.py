"""Tests of QuantLinear / QuantEmbedding, quantize_model's placement and presets, KV-cache decoding
of quantized models, a short QAT run and the state dict of a quantized model."""
import numpy as np
import pytest

import minitbt.quant as Q
from minitbt import F, Tensor, nn, no_grad, optim
from minitbt.quant.base import Quantizer


def tiny(seed=0, **kw):
    cfg = dict(vocab_size=40, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=2, n_decoder_layers=2,
               max_len=24, dropout=0.0, seed=seed)
    cfg.update(kw)
    return nn.Seq2SeqTransformer(nn.TransformerConfig(**cfg))


def batch(seed=0, B=3, S=7, T=6, V=40):
    rng = np.random.default_rng(seed)
    return rng.integers(3, V, (B, S)), rng.integers(3, V, (B, T))


# ---- layers ------------------------------------------------------------------------------
def test_quant_linear_without_quantizers_is_linear():
    lin = nn.Linear(5, 4, rng=0)
    ql = Q.QuantLinear(5, 4, rng=0)
    np.testing.assert_array_equal(ql.weight.data, lin.weight.data)
    x = np.random.default_rng(1).standard_normal((2, 3, 5)).astype(np.float32)
    xa, xb = Tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
    ya, yb = lin(xa), ql(xb)
    np.testing.assert_array_equal(ya.data, yb.data)
    ya.sum().backward()
    yb.sum().backward()
    np.testing.assert_array_equal(xa.grad, xb.grad)
    np.testing.assert_array_equal(lin.weight.grad, ql.weight.grad)
    np.testing.assert_array_equal(lin.bias.grad, ql.bias.grad)
    assert isinstance(ql, nn.Linear) and Q.QuantLinear(5, 4, bias=False).bias is None


def test_quant_linear_from_linear():
    lin = nn.Linear(6, 3, rng=2)
    wq, aq = Q.TBTTernaryWeight(), Q.ElasticQuantizer(2, init_scale=0.5)
    ql = Q.QuantLinear.from_linear(lin, wq, aq)
    assert ql.weight is not lin.weight
    np.testing.assert_array_equal(ql.weight.data, lin.weight.data)
    np.testing.assert_array_equal(ql.bias.data, lin.bias.data)
    ql.weight.data += 1                                          # a copy: the FP layer is untouched
    assert not np.allclose(ql.weight.data, lin.weight.data)
    ql.weight.data -= 1
    x = Tensor(np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32))
    expect = F.linear(aq(x), wq(lin.weight), lin.bias).data
    np.testing.assert_array_equal(ql(x).data, expect)
    np.testing.assert_array_equal(ql.quantized_weight(), ql.weight_codes().dequantize())
    assert {n for n, _ in ql.named_parameters()} == {"weight", "bias", "input_quantizer.scale"}


@pytest.mark.parametrize("wq", [Q.TBTTernaryWeight(), Q.TBTBinaryWeight(), Q.TWNWeight(per_row=True),
                                Q.TWNWeight(per_row=False), Q.BinaryCodingWeight(2), Q.LATWeight(per_row=True)])
def test_quant_embedding_lookup_equals_quantized_table(wq):
    emb = nn.Embedding(12, 8, rng=0)
    qe = Q.QuantEmbedding.from_embedding(emb, wq)
    assert isinstance(qe.weight, nn.Parameter) and qe.weight is not emb.weight
    ids = np.array([[1, 5, 5, 11], [0, 2, 3, 5]])
    table = Tensor(qe.weight.data.copy(), requires_grad=True)
    expect = F.embedding(ids, wq(table))                         # quantize the whole table, then look up
    y = qe(ids)
    np.testing.assert_allclose(y.data, expect.data, rtol=1e-6)
    G = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    y.backward(G)
    expect.backward(G)
    np.testing.assert_allclose(qe.weight.grad, table.grad, rtol=1e-6, atol=1e-7)


# ---- quantize_model: placement and presets --------------------------------------------------
def test_placement_2_2_2():
    fp = tiny()
    qm = Q.quantize_model(fp, "2-2-2")
    assert qm is not fp and not any(isinstance(m, Q.QuantLinear) for m in fp.modules())
    assert isinstance(qm.embed, Q.QuantEmbedding) and isinstance(qm.embed.weight_quantizer, Q.TBTTernaryWeight)
    assert qm.embed.weight_quantizer.per_row
    assert type(qm.pos) is nn.Embedding                          # positions FP
    assert qm.lm_head is None                                    # tied output projection uses the latent FP table
    h = Tensor(np.random.default_rng(0).standard_normal((1, 2, 16)).astype(np.float32))
    np.testing.assert_array_equal(qm.output_projection(h).data, h.data @ qm.embed.weight.data.T)
    for attn in qm.attention_modules():
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            lin = getattr(attn, name)
            assert isinstance(lin, Q.QuantLinear) and isinstance(lin.weight_quantizer, Q.TBTTernaryWeight)
            assert isinstance(lin.input_quantizer, Q.ElasticQuantizer) and lin.input_quantizer.signed
        for h in ("q_quant", "k_quant", "v_quant"):
            hq = getattr(attn, h)
            assert isinstance(hq, Q.ElasticQuantizer) and hq.signed and hq.precision == 2
        assert isinstance(attn.p_quant, Q.ElasticQuantizer) and not attn.p_quant.signed
    for layer in list(qm.encoder) + list(qm.decoder):
        assert layer.ffn.fc1.input_quantizer.signed and not layer.ffn.fc2.input_quantizer.signed
        assert isinstance(layer.ffn.fc2.weight_quantizer, Q.TBTTernaryWeight)
    lns = [m for m in qm.modules() if isinstance(m, nn.LayerNorm)]
    assert lns and all(type(m) is nn.LayerNorm for m in lns)
    # every quantizer in the model is accounted for by describe()
    rows = Q.describe(qm)
    sites = {r["site"]: r["bits"] for r in rows}
    assert sites["embed.weight"] == 2 and sites["pos.weight"] == 32
    assert sites["decoder.0.cross_attn.p_quant"] == 2 and sites["encoder.1.ffn.fc2.input"] == 2
    n_q = len(Q.quantizers(qm))
    assert n_q == sum(1 for r in rows if r["bits"] < 32)
    assert n_q == 1 + 6 * (4 * 2 + 4) + 4 * 2 * 2                # embed + 6 attentions x (4 linears x 2 + 4 hooks)
    #                                                              + 4 FFNs x 2 linears x 2
    assert "embed.weight" in Q.describe(qm, as_text=True)


def test_placement_presets_and_methods():
    fp = tiny(n_encoder_layers=1, n_decoder_layers=1)
    cases = {
        "2-2-8": (Q.TBTTernaryWeight, Q.SymmetricA8, Q.SymmetricA8),
        "1-1-8": (Q.TBTBinaryWeight, Q.SymmetricA8, Q.SymmetricA8),
        "1-1-1": (Q.TBTBinaryWeight, Q.ElasticQuantizer, Q.ElasticQuantizer),
        "8-8-8": (Q.AbsMaxWeight, Q.SymmetricA8, Q.SymmetricA8),
        "twn-2-2-2": (Q.TWNWeight, Q.MinMaxQuantizer, Q.MinMaxQuantizer),
        "bwn-1-1-8": (Q.BWNWeight, Q.SymmetricA8, Q.SymmetricA8),
        "twn+elastic-2-2-2": (Q.TWNWeight, Q.ElasticQuantizer, Q.ElasticQuantizer),
        "stats-2-2-2": (Q.TBTTernaryWeight, Q.MinMaxQuantizer, Q.MinMaxQuantizer),
        "bit-1-1-1": (Q.BWNWeight, Q.BiTElasticBinary, Q.BiTElasticBinary),
        "bitnet-8-2-8": (Q.AbsMeanWeight, Q.PerTokenAbsMax, Q.PerTokenAbsMax),
        "lat-2-2-8": (Q.LATWeight, Q.SymmetricA8, Q.SymmetricA8),
        "bcq-3-3-32": (Q.BinaryCodingWeight, type(None), type(None)),
        "fqt-4-4-4": (Q.AbsMaxWeight, Q.PerChannelQuantizer, Q.PerChannelQuantizer),
    }
    for spec, (wcls, xcls, pcls) in cases.items():
        qm = Q.quantize_model(fp, spec)
        qa = qm.encoder[0].self_attn
        assert type(qa.q_proj.weight_quantizer) is wcls, spec
        assert type(qa.q_proj.input_quantizer) is xcls, spec
        assert type(qa.p_quant) is pcls, spec
        assert qm.quant_recipe.name.endswith(spec.split("-", 1)[-1] if not spec[0].isdigit() else spec)
    r = Q.quantize_model(fp, "2-2-2", method="twn").quant_recipe
    assert (r.weights, r.activations, r.method) == ("twn", "minmax", "twn")
    assert Q.quantize_model(fp, "bit-1-1-1").encoder[0].ffn.fc2.input_quantizer.signed is False   # two-set
    assert Q.quantize_model(fp, "bit-1-1-1").encoder[0].self_attn.q_proj.weight_quantizer.centre
    emb = Q.quantize_model(fp, "twn-2-2-8").embed.weight_quantizer
    assert isinstance(emb, Q.TWNWeight) and emb.per_row                  # TWN: per row for the embedding
    assert not Q.quantize_model(fp, "twn-2-2-8").decoder[0].ffn.fc1.weight_quantizer.per_row
    code = Q.quantize_model(fp, "tbt-code-2-2-2")
    assert not code.encoder[0].ffn.fc1.weight_quantizer.centre and code.encoder[0].ffn.fc2.input_quantizer.shift_min
    assert code.encoder[0].ffn.fc1.input_quantizer.lsq_grad_scale and not code.encoder[0].self_attn.p_quant.shift_min
    assert Q.quantize_model(fp, "2-2-8", a8_per_token=False).encoder[0].ffn.fc1.input_quantizer.per_token is False
    assert Q.QuantRecipe.parse("4-4-4").act_bits == 4
    for bad in ("2-2", "foo-2-2-2", "2-x-8"):
        with pytest.raises(ValueError):
            Q.quantize_model(fp, bad)
    with pytest.raises(ValueError):
        Q.quantize_model(fp, "twn-2-2-2", method="tbt")
    for spec in list(Q.PRESETS) + [s for rows in Q.ABLATIONS.values() for _, s in rows]:
        Q.QuantRecipe.parse(spec)
    inplace = tiny(n_encoder_layers=1, n_decoder_layers=1)
    assert Q.quantize_model(inplace, "2-2-8", inplace=True) is inplace
    with pytest.raises(ValueError):
        Q.quantize_model(inplace, "2-2-8", inplace=True)


def test_copies_weights_and_8bit_is_close_to_fp():
    fp = tiny()
    fp.eval()
    src, tgt = batch()
    qm = Q.quantize_model(fp, "8-8-8")
    fp_state, q_state = fp.state_dict(), qm.state_dict()
    for k, v in fp_state.items():
        np.testing.assert_array_equal(q_state[k], v)             # same names, weights copied
    with no_grad():
        ref = fp(src, tgt).data
        out = qm(src, tgt).data
        noclip = Q.quantize_model(fp, "8-8-8", a8_clip=None)(src, tgt).data
        out2 = Q.quantize_model(fp, "2-2-2")(src, tgt).data
    assert np.abs(noclip - ref).max() < 0.03 * np.abs(ref).max()
    assert np.abs(out - ref).max() < 0.15 * np.abs(ref).max()   # TBT's A8 clips at +-2.5 (LayerNorm outputs exceed it)
    assert np.abs(out2 - ref).max() > 3 * np.abs(out - ref).max()  # ... and 2 bits is much further


# ---- step-by-step decoding (KV cache) equals the full forward --------------------------------
@pytest.mark.parametrize("spec", ["2-2-8", "2-2-2", "1-1-8", "1-1-1", "twn-2-2-2", "bit-1-1-1", "tbt-code-2-2-2",
                                  "bitnet-8-2-8", "fqt-4-4-4", "tbt-code-1-1-1", "tbt-code-2-2-8", "paretoq-2-2-2",
                                  "paretoq-1-1-1"])
def test_kv_cache_decoding_equals_full_forward(spec):
    qm = Q.quantize_model(tiny(seed=1), spec).to_dtype(np.float64)
    qm.eval()
    src, tgt = batch(1)
    with no_grad():
        full = qm(src, tgt).data                                 # (also the first-batch initialisation)
        memory, src_pad = qm.encode(src)
        cache = qm.init_cache()
        steps = [qm.decode(tgt[:, t:t + 1], memory, src_pad, cache=cache, offset=t).data for t in range(tgt.shape[1])]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-9, atol=1e-9)


# ---- quantization-aware training ------------------------------------------------------------
@pytest.mark.parametrize("spec", ["2-2-2", "1-1-1", "paretoq-2-2-2", "paretoq-1-1-1"])
def test_qat_loss_decreases(spec):
    fp = tiny(seed=2, n_encoder_layers=1, n_decoder_layers=1)
    qm = Q.quantize_model(fp, spec)
    qm.train()
    rng = np.random.default_rng(0)
    src = rng.integers(3, 12, (8, 6))                             # copy task on a small vocabulary
    tgt_in = np.concatenate([np.ones((8, 1), int), src[:, :-1]], axis=1)
    opt = optim.AdamW(qm.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(40):
        logits = qm(src, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), src.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    scales = [m.scale for _, m in Q.quantizers(qm) if hasattr(m, "scale")]
    assert scales and all(s.grad is not None for s in scales)   # learned scales receive gradients


def test_lat_curvature_from_adamw():
    qm = Q.quantize_model(tiny(seed=3, n_encoder_layers=1, n_decoder_layers=1), "lat-2-2-8")
    src, tgt = batch(3)
    opt = optim.AdamW(qm.parameters(), lr=1e-3)
    assert Q.attach_lat_curvature(qm, opt) == 4 * 3 + 2 * 2 + 1   # 3 attentions, 2 FFNs, the embedding
    lin = qm.encoder[0].ffn.fc1
    twn = Q.TWNWeight()(lin.weight).data
    np.testing.assert_array_equal(lin.quantized_weight(), twn)  # before the first step: TWN
    logits = qm(src, tgt)
    F.cross_entropy(logits.reshape(-1, 40), tgt.reshape(-1)).backward()
    opt.step()
    d = opt.second_moment(lin.weight)
    assert np.any(d)
    assert not np.array_equal(lin.quantized_weight(), Q.TWNWeight()(lin.weight).data)


# ---- state dict ------------------------------------------------------------------------------
def test_state_dict_round_trip():
    fp = tiny(seed=4)
    src, tgt = batch(4)
    qm = Q.quantize_model(fp, "bit-1-1-1")
    qm.eval()
    qm(src, tgt)                                                 # initialise scales on a batch
    for _, q in Q.quantizers(qm):
        if hasattr(q, "offset") and isinstance(q.offset, nn.Parameter):
            q.offset.data += 0.01
    state = qm.state_dict()
    assert any(k.endswith("initialized") for k in state) and any(k.endswith(".offset") for k in state)
    assert all(state[k].all() for k in state if k.endswith("initialized"))
    fresh = Q.quantize_model(fp, "bit-1-1-1")
    fresh.eval()
    assert not any(v.all() for k, v in fresh.state_dict().items() if k.endswith("initialized"))
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    with no_grad():
        np.testing.assert_array_equal(fresh(src, tgt).data, qm(src, tgt).data)
    # a learned scale stays as loaded (no re-initialisation on the next batch)
    q_name, q = next((n, m) for n, m in Q.quantizers(fresh) if isinstance(m, Q.BiTElasticBinary))
    np.testing.assert_array_equal(q.scale.data, state[q_name + ".scale"])


def test_every_quantizer_is_a_module_with_precision():
    qm = Q.quantize_model(tiny(n_encoder_layers=1, n_decoder_layers=1), "2-2-8")
    for name, q in Q.quantizers(qm):
        assert isinstance(q, Quantizer) and isinstance(q, nn.Module)
        assert q.precision in (1, 2, 8), name


# ---- float16 export --------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["2-2-8", "1-1-1", "twn-2-2-2"])
def test_half_state_keeps_every_weight_code(spec):
    """Rounding latent weights to float16 moves some across a threshold; half_state moves them back."""
    from minitbt.model_io import half_state
    model = Q.quantize_model(tiny(d_model=64, d_ff=256, vocab_size=400), spec)
    layers = [m for m in model.modules() if getattr(m, "weight_quantizer", None) is not None]
    for m in layers:                      # put 5% of each row near a code's edge, as training leaves some
        w = m.weight.data
        want = m.weight_codes().dequantize()
        near = np.random.default_rng(0).random(w.shape) < 0.05
        edge = (want + np.roll(want, 1, axis=-1)) / 2          # halfway between two neighbours' levels
        w[near] = edge[near] * (1 + 1e-4)
    codes = [m.weight_codes().codes.copy() for m in layers]
    state32 = model.state_dict()
    naive = Q.quantize_model(tiny(d_model=64, d_ff=256, vocab_size=400), spec)
    naive.load_state_dict({k: v.astype(np.float16).astype(v.dtype) for k, v in state32.items()})
    flipped = sum(int((m.weight_codes().codes != c).sum())
                  for m, c in zip([m for m in naive.modules() if getattr(m, "weight_quantizer", None)], codes))
    assert flipped > 0, "the test needs weights that float16 rounding moves across a threshold"

    state, moved, changed = half_state(model)
    assert moved == flipped and changed == 0 and all(v.dtype != np.float32 for v in state.values())
    for k, v in model.state_dict().items():                   # the model itself is left as it was
        np.testing.assert_array_equal(v, state32[k])
    half = Q.quantize_model(tiny(d_model=64, d_ff=256, vocab_size=400), spec)
    half.load_state_dict({k: v.astype(np.float32) for k, v in state.items()})
    for m, c in zip([m for m in half.modules() if getattr(m, "weight_quantizer", None)], codes):
        np.testing.assert_array_equal(m.weight_codes().codes, c)
    for k, v in state.items():                                # and moved no weight by more than a few steps
        np.testing.assert_allclose(v.astype(np.float32), state32[k], rtol=4e-3, atol=1e-5)
