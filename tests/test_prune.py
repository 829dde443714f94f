"""FQT's structured FFN pruning (minitbt.quant.prune): per-layer widths in the config, the threshold
rule, exactness on dead units, quantized models, checkpoints, packing and the summary."""
import numpy as np
import pytest

import minitbt.summary as S
from minitbt import Tensor, nn, no_grad
from minitbt.checkpoint import CheckpointError
from minitbt.decode import greedy
from minitbt.gradcheck import gradcheck
from minitbt.model_io import build_model, load_model, quantize, save_model, validate_meta
from minitbt.packed import kernel_report, load_packed, pack_model, save_packed
from minitbt.quant import PerChannelQuantizer, SEQWeight, describe, ffn_maxima, prune_ffn
from minitbt.quant.weight import WeightQuantizer

V, D, FF = 60, 16, 32
DEAD = [1, 5, 6, 20]                         # units made dead in every layer (a very negative fc1 bias)


def tiny(dtype=np.float64, **kw):
    cfg = dict(vocab_size=V, d_model=D, n_heads=2, d_ff=FF, n_encoder_layers=2, n_decoder_layers=2,
               max_len=24, dropout=0.0, seed=0)
    cfg.update(kw)
    m = nn.Seq2SeqTransformer(nn.TransformerConfig(**cfg))
    return m.to_dtype(dtype)


def kill(model, units=DEAD):
    """Make ``units`` of every FFN output 0 on any input: relu(w x - 100) = 0 for small w x."""
    for layer in list(model.encoder) + list(model.decoder):
        layer.ffn.fc1.bias.data[units] = -100.0
    return model


def batches(n=3, seed=0, V=V, B=4, S=9, T=7):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        src, tgt = rng.integers(3, V, (B, S)), rng.integers(3, V, (B, T))
        src[0, S - 3:] = 0                                   # padding
        tgt[1, T - 2:] = 0
        out.append((src, tgt))
    return out


# ---- the config ------------------------------------------------------------------------------
def test_config_ffn_widths():
    m = tiny(ffn_widths=[30, 7, 32, 1])
    assert [l.ffn.fc1.weight.shape for l in list(m.encoder) + list(m.decoder)] == [(30, D), (7, D), (32, D), (1, D)]
    assert [l.ffn.fc2.weight.shape for l in m.decoder] == [(D, 32), (D, 1)]
    assert m.config.layer_ffn_widths() == ([30, 7], [32, 1])
    assert tiny().config.layer_ffn_widths() == ([FF, FF], [FF, FF])
    np.testing.assert_array_equal(tiny().encoder[1].ffn.fc1.weight.data,              # None: the old model
                                  tiny(ffn_widths=None).encoder[1].ffn.fc1.weight.data)
    for bad in ([32, 32, 32], [32, 0, 32, 32], [32, True, 32, 32], [32, 1.5, 32, 32], "32,32,32,32"):
        with pytest.raises(ValueError, match="ffn_widths"):
            tiny(ffn_widths=bad)
    assert nn.TransformerConfig.from_dict(m.config.to_dict()) == m.config


def test_header_schema_for_ffn_widths():
    m = tiny(ffn_widths=[30, 7, 32, 1])
    meta = {"model_config": m.config.to_dict()}
    validate_meta(meta, "x")
    for bad in ("30,7,32,1", [30, 7, "32", 1], [30, 7, True, 1], [30, 7, 32], {"a": 1}):
        with pytest.raises(CheckpointError, match="ffn_widths"):
            validate_meta({"model_config": {**m.config.to_dict(), "ffn_widths": bad}}, "x")
    validate_meta({"model_config": {**m.config.to_dict(), "ffn_widths": None}}, "x")


# ---- the rule ------------------------------------------------------------------------------
def test_maxima_and_threshold_rule():
    m = kill(tiny())
    data = batches()
    maxima, n_tokens = ffn_maxima(m, data)
    assert n_tokens == sum(int((s != 0).sum() + (t != 0).sum()) for s, t in data)
    assert set(maxima) == {"encoder.0.ffn", "encoder.1.ffn", "decoder.0.ffn", "decoder.1.ffn"}
    for k in (0.0, 1.0, 2.0):
        pruned, report = prune_ffn(m, data, threshold=k)
        widths = []
        for layer in report.layers:
            mj = maxima[layer.name]
            np.testing.assert_array_equal(layer.keep, np.flatnonzero(mj > k * mj.std()))
            assert layer.tau == pytest.approx(k * mj.std())
            widths.append(layer.kept)
        assert pruned.config.ffn_widths == widths
        assert report.params_removed == (4 * FF - sum(widths)) * (2 * D + 1)
        assert "total" in str(report)
    _, report = prune_ffn(m, data, threshold=2.0)
    assert len({l.kept for l in report.layers}) > 1                   # the rate differs per layer
    assert m.config.ffn_widths is None and m.encoder[0].ffn.fc1.out_features == FF   # the input is untouched


def test_padding_is_excluded():
    """The maxima of a padded batch equal those of its sentences one by one, unpadded."""
    m = tiny()
    src, tgt = batches(1)[0]
    padded, _ = ffn_maxima(m, [(src, tgt)])
    one_by_one = [(s[s != 0][None], t[t != 0][None]) for s, t in zip(src, tgt)]
    unpadded, _ = ffn_maxima(m, one_by_one)
    for name in padded:
        np.testing.assert_allclose(padded[name], unpadded[name], rtol=1e-12)


def test_refusals():
    data = batches(1)
    with pytest.raises(ValueError, match="ReLU"):
        prune_ffn(tiny(activation="gelu"), data)
    with pytest.raises(ValueError, match="threshold"):
        prune_ffn(tiny(), data, threshold=-1)
    with pytest.raises(ValueError, match="no non-padding"):
        prune_ffn(tiny(), [(np.zeros((2, 3), int), np.zeros((2, 3), int))])
    q = quantize(build_model(**tiny().config.to_dict()), "2-2-8")
    with pytest.raises(ValueError, match="before pack_model"):
        prune_ffn(pack_model(q), data)
    m = tiny()
    m.encoder[0].ffn.fc1.bias.data[:] = -100                           # a layer with no live unit keeps one
    pruned, report = prune_ffn(m, data)
    assert report.layers[0].kept == 1 and pruned.config.ffn_widths[0] == 1


# ---- exactness -----------------------------------------------------------------------------
def test_fp_dead_units_removed_outputs_unchanged():
    """A threshold of 0 removes exactly the dead units, and the outputs stay the same: equal up to
    the order in which the BLAS sums fc2's shorter rows (float64: ~1e-15), greedy tokens identical."""
    m = kill(tiny())
    data = batches()
    pruned, report = prune_ffn(m, data, threshold=0.0)
    for layer in report.layers:
        np.testing.assert_array_equal(np.setdiff1d(np.arange(FF), layer.keep), DEAD)
    assert pruned.config.ffn_widths == [FF - len(DEAD)] * 4
    src, tgt = batches(1, seed=5)[0]
    with no_grad():
        ref, out = m(src, tgt).data, pruned(src, tgt).data
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    assert greedy(pruned, src, 12) == greedy(m, src, 12)


class _KeptColumns(WeightQuantizer):
    """fc2's weight quantizer applied to the kept columns only, 0 in the removed ones: the weights
    the pruned fc2 uses, laid out in the unpruned matrix."""

    def __init__(self, inner, keep):
        super().__init__()
        self.inner, self.keep = inner, keep

    def forward(self, w):
        y = np.zeros_like(w.data)
        y[:, self.keep] = self.inner(Tensor(w.data[:, self.keep])).data
        return Tensor(y)


@pytest.mark.parametrize("spec", ["2-2-8", "1-1-8"])
def test_quantized_pruned_equals_unpruned_up_to_fc2_statistics(spec):
    """In a quantized model, removing dead units changes one thing: fc2's per-row weight statistics
    run over the kept columns. With that effect put into the unpruned model (fc2 quantized on its
    kept columns only), the outputs agree; fc1's kept rows quantize exactly as before (per row)."""
    q = quantize(kill(tiny()), spec).eval()
    data = batches()
    pruned, report = prune_ffn(q, data, threshold=0.0)
    ref = quantize(kill(tiny()), spec).eval()
    for layer in report.layers:
        side, i = layer.name.split(".")[:2]                           # "encoder", "0"
        ffn = getattr(ref, side)[int(i)].ffn
        np.testing.assert_array_equal(getattr(pruned, side)[int(i)].ffn.fc1.quantized_weight(),
                                      ffn.fc1.quantized_weight()[layer.keep])
        ffn.fc2.weight_quantizer = _KeptColumns(ffn.fc2.weight_quantizer, layer.keep)
    src, tgt = batches(1, seed=5)[0]
    with no_grad():
        a, b, c = ref(src, tgt).data, pruned(src, tgt).data, q(src, tgt).data
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-9 * np.abs(a).max())
    assert greedy(pruned, src, 12) == greedy(ref, src, 12)
    assert not np.allclose(b, c, rtol=0, atol=1e-9 * np.abs(c).max())   # the statistics effect is real


@pytest.mark.parametrize("spec", ["fqt-4-4-4", "paretoq-2-2-2"])
def test_quantizer_state_indexed_by_unit_is_sliced(spec, tmp_path):
    q = quantize(kill(tiny(np.float32)), spec)
    data = batches()
    with no_grad():
        q(*data[0])                                                   # first-batch scale initialisation
    pruned, report = prune_ffn(q, data, threshold=0.0)
    keep = report.layers[0].keep
    ffn, ffn0 = pruned.encoder[0].ffn, q.encoder[0].ffn
    if spec.startswith("fqt"):
        xq = ffn.fc2.input_quantizer
        assert isinstance(xq, PerChannelQuantizer) and xq.channels == len(keep)
        np.testing.assert_array_equal(xq.scale.data, ffn0.fc2.input_quantizer.scale.data[keep])
    else:
        wq = ffn.fc1.weight_quantizer
        assert isinstance(wq, SEQWeight) and wq.rows == len(keep)
        np.testing.assert_array_equal(wq.scale.data, ffn0.fc1.weight_quantizer.scale.data[keep])
        np.testing.assert_array_equal(ffn.fc1.quantized_weight(), ffn0.fc1.quantized_weight()[keep])
    save_model(str(tmp_path / "p.npz"), pruned)                       # the recipe rebuilds the pruned quantizers
    back, meta = load_model(str(tmp_path / "p.npz"))
    assert meta["model_config"]["ffn_widths"] == [FF - len(DEAD)] * 4
    assert describe(back, as_text=True) == describe(pruned, as_text=True)
    with no_grad():
        np.testing.assert_array_equal(back(*data[1]).data, pruned.eval()(*data[1]).data)


def test_checkpoint_round_trip(tmp_path):
    m, data = kill(tiny(np.float32)), batches()
    pruned, _ = prune_ffn(m, data, threshold=1.0)
    assert pruned.config.ffn_widths is not None
    save_model(str(tmp_path / "fp.npz"), pruned)
    back, meta = load_model(str(tmp_path / "fp.npz"))
    assert back.config == pruned.config
    with no_grad():
        np.testing.assert_array_equal(back(*data[0]).data, pruned.eval()(*data[0]).data)


# ---- packing -------------------------------------------------------------------------------
def _pruned_117(spec, dtype):
    """A quantized model with d_ff 128, 11 dead units per layer removed: width 117."""
    fp = build_model(vocab_size=300, d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2,
                     max_len=40, dropout=0.0, seed=0)
    kill(fp, list(range(3, 128, 12)))
    q = quantize(fp, spec).eval()
    q.to_dtype(dtype)
    data = batches(4, V=300, B=6, S=13, T=9)
    with no_grad():
        q(*data[0])                                                   # first-batch scale initialisation
    pruned, _ = prune_ffn(q, data, threshold=0.0)
    assert pruned.config.ffn_widths == [117] * 4
    return pruned, data


@pytest.mark.parametrize("spec", ["2-2-8", "1-1-1", "2-2-2"])
def test_pruned_quantized_model_packs(spec, tmp_path):
    """K = 117 (not a multiple of 64) in fc2, N = 117 in fc1: the packed model's greedy output equals
    the fake-quantized one's (float64, so no float rounding can flip an activation code), and a
    packed file of the pruned model loads back to the same outputs (float32, as files are)."""
    pruned, data = _pruned_117(spec, np.float64)
    p = pack_model(pruned)
    assert p.encoder[0].ffn.fc2.in_features == 117 and p.decoder[1].ffn.fc1.out_features == 117
    src, tgt = data[1]
    with no_grad():
        ref, out = pruned(src, tgt).data, p(src, tgt).data
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    assert greedy(pruned, src, 15) == greedy(p, src, 15)
    assert "float matmul (no bit kernel for these codes)" not in set(kernel_report(p).values())
    p32 = pack_model(_pruned_117(spec, np.float32)[0])
    save_packed(str(tmp_path / "p.npz"), p32)
    p2, meta = load_packed(str(tmp_path / "p.npz"))
    assert meta["model_config"]["ffn_widths"] == [117] * 4
    with no_grad():
        np.testing.assert_array_equal(p2(src, tgt).data, p32(src, tgt).data)


# ---- summary and gradients -----------------------------------------------------------------
def test_summary_shows_the_reduced_parameter_count():
    m = kill(tiny(np.float32))
    pruned, report = prune_ffn(m, batches(), threshold=0.0)
    before, after = S.totals(S.summary_table(m)), S.totals(S.summary_table(pruned))
    assert before["n_params"] - after["n_params"] == report.params_removed == 4 * len(DEAD) * (2 * D + 1)
    assert after["n_params"] == pruned.num_parameters()
    rows = {r["name"]: r for r in S.summary_table(pruned, 7, 5)}
    assert rows["encoder.0.ffn.fc1"]["output"] == (7, FF - len(DEAD))
    assert rows["decoder.1.ffn.fc2"]["macs"] == 5 * (FF - len(DEAD)) * D


def test_gradcheck_pruned_feed_forward():
    """The pruned layer's forward and backward, central differences in float64."""
    m = tiny(ffn_widths=[5, 3, 4, 2], d_model=4, n_heads=1)
    ffn = m.encoder[1].ffn
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), requires_grad=True)
    ffn.fc1.bias.data += 0.3                                          # keep pre-activations off the ReLU kink
    assert gradcheck(lambda x, w1, b1, w2: ffn(x), [x, ffn.fc1.weight, ffn.fc1.bias, ffn.fc2.weight])
