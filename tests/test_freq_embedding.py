"""Frequency-aware binary-coding bits for the embedding (minitbt.quant.freq_embedding, Chung et al. 2020):
the schedule, bits that follow frequency, per-row exactness, the recipe, checkpoints, packing, summary."""
import numpy as np
import pytest

import minitbt.summary as S
from minitbt import Tensor, nn, no_grad
from minitbt.decode import greedy
from minitbt.model_io import load_model, model_meta, save_model
from minitbt.packed import load_packed, pack_model, save_packed
from minitbt.quant import (BinaryCodingWeight, FrequencyAwareBCQ, QuantEmbedding, QuantRecipe, count_tokens,
                           describe, quantize_model)
from minitbt.quant.freq_embedding import format_schedule, parse_schedule, schedule_bits

SCHEDULE = "4:0.05/2:0.2/1"
V, D = 200, 16


def tiny(dtype=np.float32):
    m = nn.Seq2SeqTransformer(nn.TransformerConfig(vocab_size=V, d_model=D, n_heads=2, d_ff=32, n_encoder_layers=1,
                                                   n_decoder_layers=1, max_len=24, dropout=0.0, seed=0))
    return m.to_dtype(dtype)


def zipf_counts(seed=0, n=V):
    """Skewed counts in a shuffled order (so that frequency is not the id order)."""
    rng = np.random.default_rng(seed)
    return rng.permutation((1e5 / np.arange(1, n + 1) ** 1.1).astype(np.int64))


# ---- the schedule ----------------------------------------------------------------------------
def test_schedule_parsing():
    assert parse_schedule(SCHEDULE) == [(4, 0.05), (2, 0.2), (1, None)]
    assert parse_schedule(" 3 : 0.25 / 1 ") == [(3, 0.25), (1, None)] and parse_schedule("2") == [(2, None)]
    assert format_schedule(parse_schedule("4:0.050/2:0.20/1")) == SCHEDULE
    for bad in ("4:0.05/2:0.2/1:0.75", "4:0.6/2:0.4/1", "9:0.1/1", "0:0.1/1", "4/1", "4:x/1", "4:0/1", ""):
        with pytest.raises(ValueError, match="embed schedule"):
            parse_schedule(bad)
    bits = schedule_bits(parse_schedule(SCHEDULE), 1000)
    assert (bits == 4).sum() == 50 and (bits == 2).sum() == 200 and (bits == 1).sum() == 750
    assert bits.mean() == pytest.approx(1.35)
    assert list(bits[:50]) == [4] * 50 and list(bits[-750:]) == [1] * 750


def test_bits_follow_frequency():
    counts = zipf_counts()
    q = FrequencyAwareBCQ(SCHEDULE, V).set_counts(counts)
    order = np.argsort(-counts, kind="stable")
    np.testing.assert_array_equal(q.row_bits[order[:10]], 4)                  # top 5% of 200
    np.testing.assert_array_equal(q.row_bits[order[10:50]], 2)                 # next 20%
    np.testing.assert_array_equal(q.row_bits[order[50:]], 1)
    assert q.mean_bits == pytest.approx(1.35) and q.precision == 4
    more = counts[:, None] > counts[None, :]                                   # a more frequent token never
    assert np.all((q.row_bits[:, None] >= q.row_bits[None, :])[more])          # has fewer bits
    ties = FrequencyAwareBCQ("2:0.5/1", 4).set_counts([3, 5, 3, 0])            # ties: the lower id first
    np.testing.assert_array_equal(ties.row_bits, [2, 2, 1, 1])
    for bad in (counts[:-1], -counts, counts * np.nan):
        with pytest.raises(ValueError, match="counts"):
            FrequencyAwareBCQ(SCHEDULE, V).set_counts(bad)


# ---- the quantizer -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_fit_with_their_own_bits(dtype):
    """Row r is exactly BinaryCodingWeight(k_r) of that row; the padded PlaneCodes reconstruct the
    forward exactly; the planes a row does not use have scale 0."""
    W = np.random.default_rng(1).standard_normal((V, D)).astype(dtype)
    q = FrequencyAwareBCQ(SCHEDULE, V).set_counts(zipf_counts())
    y = q(Tensor(W)).data
    c = q.codes(W)
    assert c.codes.shape == (4, V, D) and c.scale.shape == (4, V, 1) and y.dtype == dtype
    assert set(np.unique(c.codes)) <= {-1, 1}
    np.testing.assert_array_equal(c.dequantize(), y)
    for k in (1, 2, 4):
        rows = np.flatnonzero(q.row_bits == k)
        np.testing.assert_array_equal(y[rows], BinaryCodingWeight(k)(Tensor(W[rows])).data)
        assert np.all(c.scale[k:, rows] == 0) and np.all(c.scale[:k, rows] != 0)
    ids = np.array([[3, 7, 7], [199, 0, 42]])                                  # looked-up rows with their ids
    np.testing.assert_array_equal(q(Tensor(W[ids]), rows=ids).data, y[ids])
    with pytest.raises(ValueError, match="rows"):
        q(Tensor(W[ids]))                                                      # rows without their ids


def test_frequent_rows_have_lower_error():
    W = np.random.default_rng(2).standard_normal((V, D))
    q = FrequencyAwareBCQ(SCHEDULE, V).set_counts(zipf_counts())
    err = ((W - q(Tensor(W)).data) ** 2).sum(axis=1) / (W ** 2).sum(axis=1)    # relative, per row
    e4, e2, e1 = (err[q.row_bits == k].mean() for k in (4, 2, 1))
    assert e4 < 0.5 * e2 < 0.5 * e1
    assert err[q.row_bits == 4].max() < err[q.row_bits == 1].min()


def test_embedding_lookup_and_identity_ste():
    """QuantEmbedding passes the ids: the lookup equals quantizing the table, and the gradient reaching
    the table is the lookup's (identity STE), as for BinaryCodingWeight."""
    emb = nn.Embedding(V, D, rng=0)
    q = FrequencyAwareBCQ(SCHEDULE, V).set_counts(zipf_counts())
    qe = QuantEmbedding.from_embedding(emb, q)
    ids = np.array([[1, 5, 5, 199], [0, 2, 3, 5]])
    table = Tensor(qe.weight.data.copy(), requires_grad=True)
    y = qe(ids)
    np.testing.assert_array_equal(y.data, qe.quantized_weight()[ids])
    G = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    y.backward(G)
    expect = np.zeros_like(table.data)
    np.add.at(expect, ids, G)
    np.testing.assert_allclose(qe.weight.grad, expect, rtol=1e-6, atol=1e-7)


# ---- the recipe, checkpoints, packing, summary -----------------------------------------------
def test_recipe_and_quantize_model():
    m = tiny()
    qm = quantize_model(m, "bcq-4-2-32", embed_schedule=SCHEDULE, token_counts=zipf_counts())
    wq = qm.embed.weight_quantizer
    assert isinstance(wq, FrequencyAwareBCQ) and wq.schedule == SCHEDULE
    assert isinstance(qm.encoder[0].ffn.fc1.weight_quantizer, BinaryCodingWeight)
    assert qm.quant_recipe.embed_schedule == SCHEDULE
    assert "schedule 4:0.05/2:0.2/1, 1.35 bits per weight" in describe(qm, as_text=True)
    assert QuantRecipe.parse_options(f"embed_schedule={SCHEDULE}") == {"embed_schedule": SCHEDULE}
    with pytest.raises(ValueError, match="method bcq"):
        quantize_model(m, "4-2-8", embed_schedule=SCHEDULE)
    with pytest.raises(ValueError, match="E must be 4"):
        quantize_model(m, "bcq-2-2-32", embed_schedule=SCHEDULE)
    with pytest.raises(ValueError, match="embed_schedule"):
        quantize_model(m, "bcq-2-2-32", token_counts=zipf_counts())
    with pytest.raises(ValueError, match="embed schedule"):
        quantize_model(m, "bcq-4-2-32", embed_schedule="4:2/1")
    placeholder = quantize_model(m, "bcq-4-2-32", embed_schedule=SCHEDULE).embed.weight_quantizer
    np.testing.assert_array_equal(placeholder.row_bits, schedule_bits(parse_schedule(SCHEDULE), V))   # by id


def test_checkpoint_restores_the_per_row_bits(tmp_path):
    qm = quantize_model(tiny(), "bcq-4-2-32", embed_schedule=SCHEDULE, token_counts=zipf_counts())
    bits = qm.embed.weight_quantizer.row_bits.copy()
    assert not np.array_equal(bits, schedule_bits(parse_schedule(SCHEDULE), V))   # not the placeholder
    assert model_meta(qm)["quant"]["embed_schedule"] == SCHEDULE
    save_model(str(tmp_path / "q.npz"), qm)
    back, meta = load_model(str(tmp_path / "q.npz"))
    np.testing.assert_array_equal(back.embed.weight_quantizer.row_bits, bits)
    assert back.embed.weight_quantizer.row_bits.dtype == np.int8
    src, tgt = np.array([[5, 9, 11, 2]]), np.array([[1, 7, 8]])
    with no_grad():
        np.testing.assert_array_equal(back(src, tgt).data, qm.eval()(src, tgt).data)


def test_packing_keeps_the_dequantized_table(tmp_path):
    """The packed path keeps binary-coding embeddings as their dequantized float table (PackedEmbedding),
    as for uniform bcq: packed greedy equals fake-quant greedy, and a packed file loads back."""
    qm = quantize_model(tiny(), "bcq-4-2-32", embed_schedule=SCHEDULE, token_counts=zipf_counts()).eval()
    p = pack_model(qm)
    np.testing.assert_array_equal(p.embed.codes, qm.embed.quantized_weight())
    src = np.random.default_rng(0).integers(3, V, (4, 9))
    assert greedy(p, src, 12) == greedy(qm, src, 12)
    save_packed(str(tmp_path / "p.npz"), p)
    p2, _ = load_packed(str(tmp_path / "p.npz"))
    np.testing.assert_array_equal(p2.embed.codes, p.embed.codes)


def test_summary_reports_the_average_bits():
    qm = quantize_model(tiny(), "bcq-4-2-32", embed_schedule=SCHEDULE, token_counts=zipf_counts())
    row = {r["name"]: r for r in S.summary_table(qm)}["embed"]
    assert row["w_bits"] == 1.35
    assert row["params"] == {4: 10 * D, 2: 40 * D, 1: 150 * D}
    assert row["scales"] == 10 * 4 + 40 * 2 + 150 * 1
    assert row["packed_bytes"] == ((4 * 10 + 2 * 40 + 150) * D + 32 * 270) / 8
    text = S.summary(qm)
    assert "Bits embed                    1.35 per weight on average (rows: 4-bit 10, 2-bit 40, 1-bit 150)" in text


def test_count_tokens():
    class Data:                                           # what Seq2SeqData holds: src ends in <eos>, tgt too
        src = [np.array([5, 6, 6, 2]), np.array([7, 2])]
        tgt = [np.array([9, 5, 2]), np.array([2])]
    c = count_tokens(Data, 12)
    expect = np.zeros(12, int)
    for i in [5, 6, 6, 2, 7, 2] + [1, 9, 5] + [1]:        # sources; decoder inputs <bos> + target[:-1]
        expect[i] += 1
    np.testing.assert_array_equal(c, expect)
    with pytest.raises(ValueError, match="vocabulary"):
        count_tokens(Data, 8)


def test_count_tokens_of_a_tokenized_split():
    import os
    from minitbt.data import BOS, EOS, Seq2SeqData, load_tokenizer
    task = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "ddtp-en-de")
    tok = load_tokenizer(task)
    data = Seq2SeqData(["the package contains tools", "a library"], ["das Paket", "eine Bibliothek"], tok)
    c = count_tokens(data, tok.get_vocab_size())
    assert c.sum() == data.src_len.sum() + data.tgt_len.sum()                  # every lookup counted once
    assert c[BOS] == 2 and c[EOS] == 2                                         # decoder inputs, sources
    assert c[tok.token_to_id("▁the")] == 1


def test_training_ranks_the_embedding_rows_by_the_task_counts(tmp_path):
    """--quant-options embed_schedule=...: train() passes the task's token counts, so the most
    frequent tokens get the most bits (not the lowest ids)."""
    from minitbt.datasets import prepare_user_task
    from minitbt.model_io import load_model
    from minitbt.quant import task_token_counts
    from minitbt.train import config_from_preset, train
    raw = tmp_path / "raw"
    raw.mkdir()
    words = "zebra yak xenon walrus vole the".split()
    rng = np.random.default_rng(0)
    src = [" ".join(rng.choice(words, 5, p=[0.05, 0.05, 0.05, 0.05, 0.05, 0.75])) for _ in range(200)]
    (raw / "train.source").write_text("\n".join(src) + "\n")
    (raw / "train.target").write_text("\n".join(src) + "\n")
    task = str(tmp_path / "t")
    prepare_user_task(str(raw), task, vocab_size=40)
    cfg = config_from_preset("test", task=task, out=str(tmp_path / "run"), quant="bcq-2-2-32", max_steps=2,
                             eval_every=2, eval_sentences=2, quant_options="embed_schedule=2:0.1/1")
    train(cfg, quiet=True)
    model, _ = load_model(str(tmp_path / "run" / "last.npz"))
    bits = model.embed.weight_quantizer.row_bits
    counts = task_token_counts(task)
    top = int(np.argmax(counts))
    assert bits[top] == 2 and bits.max() == 2 and bits.min() == 1
    assert counts[bits == 2].min() >= counts[bits == 1].max()
