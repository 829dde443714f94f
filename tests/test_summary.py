"""minitbt.summary: parameters per bit width, packed memory and MACs per precision class,
checked against counts done by hand for a small model."""
import pytest

import minitbt.summary as S
from minitbt import nn
from minitbt.quant import quantize_model

V, D, H, FF, MAXLEN = 50, 16, 2, 32, 40      # vocab, d_model, heads, d_ff, learned positions
SRC, TGT = 7, 5                              # source and target tokens of the example


def small():
    return nn.Seq2SeqTransformer(nn.TransformerConfig(vocab_size=V, d_model=D, n_heads=H, d_ff=FF,
                                                      n_encoder_layers=1, n_decoder_layers=1,
                                                      max_len=MAXLEN, dropout=0.0, seed=0))


# ---- the hand count --------------------------------------------------------------------------
# weights of the quantized matrices
EMB_W = V * D                                 # 50*16 = 800 (per-row ternary: 50 scales)
ATTN_W = 4 * D * D                            # q, k, v, o: each 16*16 = 256 -> 1024 (16 scales each)
FFN_W = D * FF + FF * D                       # fc1 16*32 + fc2 32*16 = 1024 (32 + 16 scales)
LOWBIT_W = EMB_W + (ATTN_W + FFN_W) + (2 * ATTN_W + FFN_W)   # embed + encoder + decoder = 5920
# full-precision values
POS = MAXLEN * D                              # 640
LN = 2 * D                                    # gamma + beta = 32
ATTN_B, FFN_B = 4 * D, FF + D                 # 64, 48
ENC_FP = ATTN_B + LN + FFN_B + LN             # 176
DEC_FP = 2 * (ATTN_B + LN) + FFN_B + LN       # 272
FP_ONLY = POS + 2 * LN + ENC_FP + DEC_FP      # 1152: positions, embedding LayerNorms, layers
N_PARAMS = LOWBIT_W + FP_ONLY                 # 7072 trainable parameters of the FP model
SCALES = V + (4 * D + FF + D) + (8 * D + FF + D)             # 50 + 112 + 176 = 338 per-row scales


def test_hand_count_fp_model():
    m = small()
    assert m.num_parameters() == N_PARAMS == 7072
    tot = S.totals(S.summary_table(m, SRC, TGT))
    assert tot["params"] == {32: 7072}
    assert tot["scales"] == 0
    assert tot["packed_bytes"] == tot["float32_bytes"] == 4 * 7072 == 28288
    assert tot["compression"] == 1.0
    # MACs: every matmul has a full-precision side
    enc_lin = SRC * (ATTN_W + FFN_W)                          # 7 * 2048 = 14336
    # decoder: self q,k,v,o + cross q,o + ffn on the target; cross k,v on the source (encoder memory)
    dec_lin = TGT * (ATTN_W + 2 * D * D + FFN_W) + SRC * (2 * D * D)
    attn = 2 * (SRC * SRC * D) + 2 * (TGT * TGT * D) + 2 * (TGT * SRC * D)   # QK^T and PV: enc self, dec self, cross
    head = TGT * D * V                                        # 5 * 16 * 50 = 4000
    assert (enc_lin, dec_lin, attn, head) == (7 * 2048, 5 * 2560 + 7 * 512, 1568 + 800 + 1120, 4000)
    assert tot["macs"] == {"binary x binary": 0, "ternary/binary x low-bit": 0, "x int8": 0,
                           "float": enc_lin + dec_lin + attn + head}
    assert tot["total_macs"] == 14336 + 16384 + 3488 + 4000 == 38208


def test_hand_count_2_2_8():
    q = quantize_model(small(), "2-2-8")
    rows = S.summary_table(q, SRC, TGT)
    tot = S.totals(rows)
    # 2-bit: the embedding and the 4 + 8 attention projections and 2 + 2 FFN matrices
    assert LOWBIT_W == 800 + 2048 + 3072 == 5920
    # 32-bit: positions, LayerNorms, biases, and the float table the tied LM head keeps (V*D = 800)
    assert tot["params"] == {2: 5920, 32: FP_ONLY + V * D} == {2: 5920, 32: 1952}
    assert tot["scales"] == SCALES == 338
    packed_bits = 5920 * 2 + 1952 * 32 + 338 * 32             # 11840 + 62464 + 10816 = 85120
    assert tot["packed_bytes"] == packed_bits / 8 == 10640
    assert tot["float32_bytes"] == 4 * N_PARAMS == 28288
    assert tot["compression"] == pytest.approx(28288 / 10640)
    # MACs: W2 x A8 linears and A8 x A8 attention matmuls are "x int8"; the LM head is float
    int8 = SRC * (ATTN_W + FFN_W) + TGT * (2 * D * D + ATTN_W + FFN_W) + SRC * (2 * D * D) \
        + 2 * SRC * SRC * D + 2 * TGT * TGT * D + 2 * TGT * SRC * D
    assert tot["macs"] == {"binary x binary": 0, "ternary/binary x low-bit": 0, "x int8": int8,
                           "float": TGT * D * V}
    assert int8 == 14336 + 16384 + 3488 == 34208
    # a few rows by hand
    by = {r["name"]: r for r in rows}
    r = by["encoder.0.self_attn.q_proj"]
    assert (r["w_bits"], r["a_bits"], r["params"], r["scales"]) == (2, 8, {2: 256, 32: 16}, 16)
    assert r["packed_bytes"] == (256 * 2 + 16 * 32 + 16 * 32) / 8 == 192
    assert r["macs"] == SRC * D * D and r["mac_class"] == "x int8"
    assert by["decoder.0.cross_attn.k_proj"]["macs"] == SRC * D * D             # reads the encoder memory
    assert by["decoder.0.cross_attn.scores"]["macs"] == TGT * SRC * D
    assert by["decoder.0.cross_attn.scores"]["output"] == (H, TGT, SRC)
    emb = by["embed"]
    assert (emb["params"], emb["scales"], emb["packed_bytes"]) == ({2: 800}, 50, (800 * 2 + 50 * 32) / 8)
    head = by["output_projection (tied embed.weight)"]
    assert head["params"] == {32: 800} and head["float32_bytes"] == 0 and head["mac_class"] == "float"
    # rows of an attention come in forward order
    names = [r["name"] for r in rows if r["name"].startswith("encoder.0.self_attn")]
    assert [n.rsplit(".", 1)[1] for n in names] == ["q_proj", "k_proj", "v_proj", "scores", "context", "out_proj"]


def test_2_2_2_and_1_1_1_classes_and_learned_scales():
    t2 = S.totals(S.summary_table(quantize_model(small(), "2-2-2"), SRC, TGT))
    assert t2["macs"]["ternary/binary x low-bit"] == 34208 and t2["macs"]["x int8"] == 0
    # learned elastic scales, one per quantized tensor: 6 linear inputs + 4 attention hooks per attention
    n_scales = 6 + 4 * 1 + (4 + 4 + 2) + 4 * 2                 # encoder 6+4, decoder 10 linear inputs + 8 hooks
    assert n_scales == 28
    assert t2["params"] == {2: 5920, 32: 1952 + 28}
    assert t2["float32_bytes"] == 28288                        # the FP model has no such scales
    t1 = S.totals(S.summary_table(quantize_model(small(), "1-1-1"), SRC, TGT))
    assert t1["macs"]["binary x binary"] == 34208 and t1["params"][1] == 5920
    assert t1["packed_bytes"] == (5920 * 1 + (1952 + 28) * 32 + 338 * 32) / 8


def test_mac_class_rules():
    assert S.mac_class(1, 1) == "binary x binary"
    assert S.mac_class(2, 2) == S.mac_class(1, 4) == S.mac_class(2, 1) == "ternary/binary x low-bit"
    assert S.mac_class(2, 8) == S.mac_class(8, 8) == S.mac_class(1, 8) == "x int8"
    assert S.mac_class(2, None) == S.mac_class(32, 32) == S.mac_class(None, 1) == "float"


def test_summary_text_and_module_call():
    import minitbt
    q = quantize_model(small(), "2-2-8")
    text = S.summary(q, SRC, TGT)
    assert "tbt-2-2-8" in text and "Compression" in text and "2.66x" in text
    assert "x int8" in text and "34,208" in text
    assert minitbt.summary.summary(q, SRC, TGT) == text
    assert S(q, SRC, TGT) == text                              # the module itself is callable
    n_rows = len(S.summary_table(q, SRC, TGT))
    assert len(text.splitlines()) == n_rows + 17                 # 4 header, 3 total and 10 footer lines


def test_untied_head_and_quantizer_variants():
    m = nn.Seq2SeqTransformer(nn.TransformerConfig(vocab_size=V, d_model=D, n_heads=H, d_ff=FF,
                                                   n_encoder_layers=1, n_decoder_layers=1, max_len=MAXLEN,
                                                   tie_embeddings=False, positions="sinusoidal"))
    rows = S.summary_table(quantize_model(m, "bcq-3-3-32"), SRC, TGT)
    by = {r["name"]: r for r in rows}
    assert by["lm_head"]["params"] == {32: D * V} and by["lm_head"]["macs"] == TGT * D * V
    r = by["encoder.0.ffn.fc1"]
    assert r["params"] == {3: D * FF, 32: FF} and r["scales"] == 3 * FF      # 3 bit planes, 3 scales per row
    assert r["mac_class"] == "float"                                           # FP activations
    tot = S.totals(rows)
    assert tot["float32_bytes"] == 4 * m.num_parameters()
    assert tot["n_params"] == m.num_parameters()        # the untied head has its own FP matrix: no extra table


def test_a_learned_weight_scale_is_counted_once():
    """ParetoQ's per-row scale is a learned parameter: it is stored once, not also as a statistic."""
    from minitbt.model_io import build_model, quantize
    from minitbt.summary import summary_table
    fp = build_model(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1, max_len=16)
    row = next(r for r in summary_table(quantize(fp, "paretoq-2-2-2")) if r["name"].endswith("encoder.0.ffn.fc1"))
    # fc1: 32 x 16 weights at 2 bits; float32: 32 biases + 32 row scales + 1 input scale; no extra statistics
    assert row["params"] == {2: 512, 32: 65} and row["scales"] == 0


def test_a_packed_model_is_summarised_by_the_kernels_its_layers_chose():
    """summary(packed model): every packed linear layer reports the kernel it chose at pack time
    (layer.kernel, packed/table.py); parameters and MACs are those of the quantized model."""
    from minitbt.model_io import build_model, quantize
    from minitbt.packed import pack_model
    from minitbt.packed.layers import PackedLinear
    from minitbt.summary import summary, summary_table, totals
    fp = build_model(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1, max_len=16)
    q = quantize(fp, "2-2-8")
    packed = pack_model(q)
    rows = {r["name"]: r for r in summary_table(packed)}
    for name, mod in packed.named_modules():
        if isinstance(mod, PackedLinear):
            assert rows[name]["mac_class"] == mod.kernel == "ternary x int8"
            assert rows[name]["w_bits"] == 2 and rows[name]["a_bits"] == 8
    tp, tq = totals(summary_table(packed)), totals(summary_table(q))
    assert tp["total_macs"] == tq["total_macs"] and tp["n_params"] == tq["n_params"]
    linear_macs = sum(r["macs"] for r in summary_table(q) if r["type"] == "QuantLinear")
    assert tp["macs"]["ternary x int8"] == linear_macs > 0             # every linear layer on that kernel
    assert "MACs ternary x int8" in summary(packed)
