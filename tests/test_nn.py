"""Modules: attention gradients (fused and op by op), the Seq2Seq model's gradient, state dicts,
train/eval, a small overfitting run, and incremental decoding with the KV cache."""
import numpy as np
import pytest

import minitbt as mt
from minitbt import Tensor, nn
from minitbt import functional as F
from minitbt.gradcheck import gradcheck


def tiny_config(**kw):
    base = dict(vocab_size=11, d_model=8, n_heads=2, d_ff=12, n_encoder_layers=1, n_decoder_layers=1,
                max_len=8, dropout=0.0, seed=3)
    base.update(kw)
    return nn.TransformerConfig(**base)


def make_ids(rng, B, T, V, pad_from=None):
    ids = rng.integers(3, V, (B, T))
    if pad_from is not None:
        ids[0, pad_from:] = 0                                    # pad the end of the first row
    return ids


# ---- multi-head attention ----------------------------------------------------------------------------
@pytest.mark.parametrize("cross", [False, True])
def test_multihead_attention_gradients_fused_and_op_by_op_agree(cross):
    rng = np.random.default_rng(0)
    mha = nn.MultiHeadAttention(6, 2, rng=1).to_dtype(np.float64)
    B, Tq, Tk = 2, 3, 4 if cross else 3
    x = Tensor(rng.standard_normal((B, Tq, 6)), requires_grad=True)
    mem = Tensor(rng.standard_normal((B, Tk, 6)), requires_grad=True) if cross else None
    pad = np.zeros((B, Tk), bool)
    pad[1, -1] = True                                            # padding in the second sequence
    causal = not cross
    params = mha.parameters()
    inputs = [x] + ([mem] if cross else []) + params

    def run(record):
        mha.record_attn = record

        def fn(x, *rest):
            m = rest[0] if cross else None
            return mha(x, m, key_padding_mask=pad, causal=causal)
        return fn

    results = {}
    for record in (False, True):                                 # fused kernel, then op by op
        assert gradcheck(run(record), inputs)
        for t in inputs:
            t.grad = None
        y = run(record)(*inputs[:2 if cross else 1])
        y.backward(np.random.default_rng(5).standard_normal(y.shape))
        results[record] = (y.data, [t.grad.copy() for t in inputs])
        if record:
            p = mha.attn.data                                    # (B, H, Tq, Tk), kept for distillation
            np.testing.assert_allclose(p.sum(-1), 1.0)
            assert np.all(p[1, :, :, -1] < 1e-12)                 # the padded key gets no attention
            if causal:
                assert np.all(np.triu(p[0, 0], 1) < 1e-12)        # no query sees the future
    np.testing.assert_allclose(results[True][0], results[False][0], atol=1e-12)
    for g_op, g_fused in zip(results[True][1], results[False][1]):
        np.testing.assert_allclose(g_op, g_fused, atol=1e-12)


def test_causal_mask():
    np.testing.assert_array_equal(nn.causal_mask(2, 3, offset=1), [[False, False, True], [False, False, False]])
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiHeadAttention(6, 4)


# ---- the whole model -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(), dict(pre_ln=True, positions="sinusoidal", activation="gelu",
                                             tie_embeddings=False), dict(copy=True)])
def test_seq2seq_loss_gradient(kw):
    cfg = tiny_config(**kw)
    model = nn.Seq2SeqTransformer(cfg).to_dtype(np.float64)
    rng = np.random.default_rng(1)
    src, tgt = make_ids(rng, 2, 5, cfg.vocab_size, pad_from=3), make_ids(rng, 2, 4, cfg.vocab_size, pad_from=3)
    labels = np.roll(tgt, -1, axis=1)

    def loss_fn(*params):
        logits = model(src, tgt)                                 # the params are the model's own
        return F.cross_entropy(logits.reshape(-1, cfg.vocab_size), labels.reshape(-1), ignore_index=0,
                               label_smoothing=0.1)
    params = model.parameters()
    assert gradcheck(loss_fn, params, atol=1e-6, rtol=1e-4)


def test_parameters_and_buffers_are_found():
    model = nn.Seq2SeqTransformer(tiny_config())
    names = [n for n, _ in model.named_parameters()]
    assert "embed.weight" in names and "decoder.0.cross_attn.q_proj.weight" in names
    assert len(names) == len(set(names))                         # the tied embedding appears once
    assert model.num_parameters() == sum(p.data.size for p in model.parameters())
    sin = nn.Seq2SeqTransformer(tiny_config(positions="sinusoidal"))
    assert "pos_table" in sin.state_dict()


def test_state_dict_round_trip():
    cfg = tiny_config(positions="sinusoidal")
    a, b = nn.Seq2SeqTransformer(cfg), nn.Seq2SeqTransformer(tiny_config(positions="sinusoidal", seed=9))
    rng = np.random.default_rng(0)
    src, tgt = make_ids(rng, 2, 5, 11), make_ids(rng, 2, 4, 11)
    assert not np.allclose(a(src, tgt).data, b(src, tgt).data)
    state = a.state_dict()
    b.load_state_dict(state)
    np.testing.assert_array_equal(a(src, tgt).data, b(src, tgt).data)
    state["embed.weight"][:] = 0                                  # the state dict holds copies
    assert np.any(a.embed.weight.data != 0)
    for (n1, p1), (n2, p2) in zip(a.named_parameters(), b.named_parameters()):
        assert n1 == n2 and p1 is not p2 and p1.data.dtype == p2.data.dtype == np.float32


def test_load_state_dict_errors_are_clear_and_change_nothing():
    model = nn.Seq2SeqTransformer(tiny_config())
    before = model.state_dict()
    state = model.state_dict()
    del state["encoder.0.ffn.fc1.bias"]
    with pytest.raises(ValueError, match=r"missing keys: \['encoder.0.ffn.fc1.bias'\]"):
        model.load_state_dict(state)
    state = model.state_dict()
    state["embed.weight"] = np.zeros((12, 8), np.float32)
    state["decoder.0.ffn.fc2.weight"] = np.ones_like(state["decoder.0.ffn.fc2.weight"])
    with pytest.raises(ValueError, match=r"embed.weight: shape \(12, 8\) in the state dict, \(11, 8\) in the model"):
        model.load_state_dict(state)
    state = model.state_dict()
    state["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match="unexpected keys"):
        model.load_state_dict(state)
    model.load_state_dict(state, strict=False)                   # non-strict: the extra key is ignored
    for n, arr in model.state_dict().items():
        np.testing.assert_array_equal(arr, before[n])            # the failed loads changed nothing


def test_train_eval_switches_dropout():
    model = nn.Seq2SeqTransformer(tiny_config(dropout=0.5))
    rng = np.random.default_rng(0)
    src, tgt = make_ids(rng, 2, 5, 11), make_ids(rng, 2, 4, 11)
    assert all(m.training for m in model.modules())
    a, b = model(src, tgt).data, model(src, tgt).data
    assert not np.allclose(a, b)                                 # training: fresh dropout masks
    model.eval()
    assert not any(m.training for m in model.modules())
    c, d = model(src, tgt).data, model(src, tgt).data
    np.testing.assert_array_equal(c, d)                          # eval: deterministic
    no_drop = nn.Seq2SeqTransformer(tiny_config(dropout=0.0)).eval()
    np.testing.assert_allclose(c, no_drop(src, tgt).data, rtol=1e-6)   # same seed = same weights
    model.train()
    assert model.encoder[0].ffn_block.dropout.training


def test_tiny_seq2seq_overfits_a_copy_batch():
    cfg = nn.TransformerConfig(vocab_size=20, d_model=32, n_heads=4, d_ff=64, n_encoder_layers=1,
                               n_decoder_layers=1, max_len=16, dropout=0.0, seed=0)
    model = nn.Seq2SeqTransformer(cfg)
    rng = np.random.default_rng(0)
    src = rng.integers(3, 20, (8, 6))
    tgt_in = np.concatenate([np.full((8, 1), cfg.bos_id), src], 1)          # bos + copy
    labels = np.concatenate([src, np.full((8, 1), cfg.eos_id)], 1)          # copy + eos
    opt = mt.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(400):
        loss = F.cross_entropy(model(src, tgt_in).reshape(-1, 20), labels.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if losses[-1] < 0.05:
            break
    assert losses[-1] < 0.05, f"loss after {len(losses)} steps: {losses[-1]:.3f} (started at {losses[0]:.3f})"
    pred = model.eval()(src, tgt_in).data.argmax(-1)
    np.testing.assert_array_equal(pred, labels)


@pytest.mark.parametrize("kw", [dict(), dict(pre_ln=True), dict(positions="sinusoidal"),
                                dict(pre_ln=True, positions="sinusoidal", activation="gelu_tanh"), dict(copy=True)])
def test_incremental_decoding_matches_full_forward(kw):
    cfg = tiny_config(d_model=16, n_heads=4, n_decoder_layers=2, n_encoder_layers=2, vocab_size=13,
                      max_len=12, **kw)
    model = nn.Seq2SeqTransformer(cfg).eval()
    rng = np.random.default_rng(2)
    src, tgt = make_ids(rng, 3, 7, 13, pad_from=5), make_ids(rng, 3, 6, 13)
    with mt.no_grad():
        full = model(src, tgt).data                              # (B, T, V)
        memory, src_rows = model.encode(src)
        cache = model.init_cache()
        steps = [model.decode(tgt[:, t:t + 1], memory, src_rows, cache=cache, offset=t).data
                 for t in range(tgt.shape[1])]
    assert cache[0]["self"]["k"].shape[2] == tgt.shape[1]        # one cached key per step
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def _copy_task_model(copy: bool, steps: int = 300):
    """A 1 + 1 layer model trained to copy sources made of tokens 3..12 only."""
    cfg = nn.TransformerConfig(vocab_size=20, d_model=32, n_heads=4, d_ff=64, n_encoder_layers=1,
                               n_decoder_layers=1, max_len=16, dropout=0.0, seed=0, copy=copy)
    model = nn.Seq2SeqTransformer(cfg)
    rng = np.random.default_rng(0)
    opt = mt.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(steps):
        src = rng.integers(3, 13, (16, 6))
        tgt_in = np.concatenate([np.full((16, 1), cfg.bos_id), src], 1)          # bos + copy
        labels = np.concatenate([src, np.full((16, 1), cfg.eos_id)], 1)          # copy + eos
        loss = F.cross_entropy(model(src, tgt_in).reshape(-1, 20), labels.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def test_pointer_generator_copies_tokens_it_never_produced():
    """Trained to copy tokens 3..12, asked to copy tokens 13..19 (never a target, so the plain
    model's output layer has learned to rule them out): only the pointer-generator (copy=True),
    whose output can put its attention's mass on a source token, gets some of them right."""
    rng = np.random.default_rng(1)
    src = rng.integers(13, 20, (32, 6))
    tgt_in = np.concatenate([np.full((32, 1), 1), src], 1)
    acc = {}
    for copy in (False, True):
        model = _copy_task_model(copy)
        with mt.no_grad():
            out = model(src, tgt_in).data                            # (B, T, V)
        if copy:                                                     # the output is log p: it sums to 1
            np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-5)
        acc[copy] = (out.argmax(-1)[:, :6] == src).mean()            # teacher-forced token accuracy
    assert acc[True] >= acc[False] + 0.2, acc


def test_too_long_sequence_is_a_clear_error():
    model = nn.Seq2SeqTransformer(tiny_config())
    with pytest.raises(ValueError, match="exceeds max_len 8"):
        model(np.ones((1, 9), int), np.ones((1, 2), int))


def test_float32_training_step_keeps_float32():
    cfg = tiny_config(dropout=0.1)
    model = nn.Seq2SeqTransformer(cfg)
    rng = np.random.default_rng(0)
    src, tgt = make_ids(rng, 2, 5, 11, pad_from=3), make_ids(rng, 2, 4, 11)
    logits = model(src, tgt)
    assert logits.dtype == np.float32
    F.cross_entropy(logits.reshape(-1, 11), tgt.reshape(-1), 0, 0.1).backward()
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
