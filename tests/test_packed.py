"""The packed model reproduces its fake-quantized training-time model."""
import os

import numpy as np
import pytest

from minitbt import kernels
from minitbt.checkpoint import CheckpointError
from minitbt.decode import greedy
from minitbt.model_io import build_model, quantize
from minitbt.packed import PackedLinear, kernel_report, load_packed, pack_model, save_packed
from minitbt.tensor import no_grad

PRESETS = ["2-2-8", "2-2-2", "1-1-8", "1-1-1"]
EXPECTED_KERNELS = {
    "2-2-8": {"ternary x int8"},
    "2-2-2": {"ternary x ternary planes", "bit planes (2-bit unsigned)"},
    "1-1-8": {"ternary x int8"},
    "1-1-1": {"xnor-popcount", "bit planes x signs (1-bit unsigned)"},
}


def _models(spec, seed=0, dtype=np.float32):
    fp = build_model(vocab_size=300, d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2,
                     max_len=40, dropout=0.0, seed=seed)
    q = quantize(fp, spec).eval()
    q.to_dtype(dtype)
    return q, pack_model(q)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(3, 300, (6, 13))
    src[0, 9:] = 0                                          # a padded source
    return src, rng.integers(3, 300, (6, 9))


@pytest.mark.parametrize("spec", PRESETS)
@pytest.mark.parametrize("seed", [0, 1])
def test_packed_logits_equal_fake_quant_float64(spec, seed):
    """In float64 the only difference is summation order: logits agree to 1e-4 relative (in fact ~1e-15)."""
    q, p = _models(spec, seed, np.float64)
    src, tgt = _batch(seed)
    with no_grad():
        ref, out = q(src, tgt).data, p(src, tgt).data
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    assert greedy(q, src, 15) == greedy(p, src, 15)
    assert set(kernel_report(p).values()) == EXPECTED_KERNELS[spec]


@pytest.mark.parametrize("spec", PRESETS)
def test_packed_float32_matches(spec):
    """In float32 the fake-quant matmul rounds and the integer kernels do not. Now and then a value
    lands within float32 noise of a rounding boundary and one activation code differs (most often
    with 8-bit activations, whose boundaries are dense); that moves later logits by about one
    quantization step. So: logits close (a few percent at worst), greedy tokens identical."""
    q, p = _models(spec)
    src, tgt = _batch()
    with no_grad():
        ref, out = q(src, tgt).data, p(src, tgt).data
    assert np.abs(out - ref).max() <= 5e-2 * np.abs(ref).max()
    assert greedy(q, src, 15) == greedy(p, src, 15)


def test_packed_linear_layers_are_exact():
    """Layer by layer, in float64: PackedLinear(x) == QuantLinear(x)."""
    from minitbt.tensor import Tensor
    q, p = _models("2-2-2", dtype=np.float64)
    qmods = dict(q.named_modules())
    rng = np.random.default_rng(3)
    checked = 0
    for name, pl in p.named_modules():
        if isinstance(pl, PackedLinear):
            x = rng.standard_normal((5, 7, pl.in_features))
            if name.endswith("fc2"):
                x = np.abs(x)                                   # fc2's input is post-ReLU
            with no_grad():
                np.testing.assert_allclose(pl(Tensor(x)).data, qmods[name](Tensor(x)).data,
                                           rtol=1e-10, atol=1e-10, err_msg=name)
            checked += 1
    assert checked == 2 * 6 + 2 * 10                            # encoder 6 linears, decoder 10, 2 layers each


def _levels_quantizers():
    from minitbt.quant.activation import ElasticQuantizer
    from minitbt.quant.minmax import MinMaxQuantizer, PerTokenAbsMax, SymmetricA8
    return [SymmetricA8(), PerTokenAbsMax(), MinMaxQuantizer(4), MinMaxQuantizer(2, signed=False),
            MinMaxQuantizer(8, signed=False, clip=2.0),
            ElasticQuantizer(2, init_scale=0.25), ElasticQuantizer(1, init_scale=0.25),
            ElasticQuantizer(4, centre=False, init_scale=0.1), ElasticQuantizer(2, signed=False, init_scale=0.25),
            ElasticQuantizer(3, signed=False, shift_min=True, init_scale=0.1), _negative(ElasticQuantizer(2, signed=False))]


def _negative(q):
    """A learned scale the optimizer drove below zero: the fast path must clamp it as q does."""
    q.scale.data[...] = -0.004
    q.initialized[...] = True
    return q


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("qi", range(len(_levels_quantizers())))
def test_codes_fast_path_equals_numpy_codes(qi, dtype, monkeypatch):
    """A quantizer's codes() with its compiled fast path (MinMaxQuantizer on float32:
    kernels.quantize_rows_i8) gives exactly the codes, scale and offset of its NumPy path, and
    codes * scale + offset is exactly q(x): on random rows, an all-zero row, values past the
    clip, and exact ties and near-ties (half-integer multiples of the step)."""
    from minitbt.tensor import Tensor
    q = _levels_quantizers()[qi]
    rng = np.random.default_rng(qi)
    x = rng.standard_normal((8, 24)) * 2
    x[0] = 0                                                   # max|x| = 0: every code 0
    x[1] = 0.5 * rng.integers(-20, 21, 24) * 0.25              # exact ties on a step of 0.25 (elastic)
    x[2] = 0.5 * rng.integers(-20, 21, 24) * 0.1               # near-ties: 0.1 is not a binary fraction
    x[3, :] = x[2] / np.abs(x[2]).max() * 7.5                  # min-max 4-bit: max 7.5 -> step 1 + ties
    x[4] *= 10                                                 # past every clip
    x = x.astype(dtype)
    fast = q.codes(x)
    np.testing.assert_array_equal(fast.dequantize(), q(Tensor(x)).data)
    monkeypatch.setattr(kernels, "_core", None)
    ref = q.codes(x)
    for got, want in zip(fast, ref):
        np.testing.assert_array_equal(np.broadcast_to(got, np.broadcast(got, want).shape),
                                      np.broadcast_to(want, np.broadcast(got, want).shape))


def test_packed_has_no_latent_weights_and_round_trips(tmp_path):
    q, p = _models("2-2-8")
    names = set(p.state_dict())
    assert not any(n.endswith("q_proj.weight") or n.endswith("fc1.weight") for n in names)
    assert any(n.endswith("q_proj.planes") for n in names)
    from minitbt.data import load_tokenizer
    tokenizer = load_tokenizer(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "ddtp-en-de")).to_str()
    save_packed(str(tmp_path / "m.npz"), p, tokenizer=tokenizer)
    p2, meta = load_packed(str(tmp_path / "m.npz"))
    src, tgt = _batch()
    with no_grad():
        np.testing.assert_array_equal(p(src, tgt).data, p2(src, tgt).data)
    assert meta["tokenizer"] == tokenizer


def test_pack_errors(tmp_path):
    fp = build_model(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1, max_len=16)
    with pytest.raises(ValueError, match="quantized model"):
        pack_model(fp)
    from minitbt import checkpoint
    checkpoint.save(str(tmp_path / "fp.npz"), fp.state_dict(), {"model_config": fp.config.to_dict()})
    with pytest.raises(CheckpointError, match="not a packed model"):
        load_packed(str(tmp_path / "fp.npz"))


SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "ddtp-en-de-fp.npz")


@pytest.mark.parametrize("spec", PRESETS)
def test_shipped_model_packed_greedy_identical_on_50_test_sentences(spec):
    """The shipped FP translation model, quantized with each preset and packed: greedy decoding of
    50 test sentences gives the same tokens as the fake-quantized model.

    Run in float64 so that the reference's own float rounding cannot flip an activation code: in
    float32 the 8-bit presets differ on a few of the 50 sentences (2-2-8: 5, 1-1-8: 2, measured
    2026-11-22), because the fake-quant matmul rounds where the packed model's integer kernels are
    exact; the 2- and 1-bit presets agree on all 50 in float32 too."""
    from minitbt.data import Seq2SeqData, load_tokenizer
    from minitbt.model_io import load_model
    task = os.path.join(os.path.dirname(os.path.dirname(SHIPPED)), "data", "ddtp-en-de")
    fp, _ = load_model(SHIPPED)
    q = quantize(fp, spec).eval()
    q.to_dtype(np.float64)
    data = Seq2SeqData.from_task(task, "test", load_tokenizer(task), max_src_len=48, max_tgt_len=48, limit=50)
    src = data.collate(np.arange(50)).src
    with no_grad():
        q(src[:8], src[:8, :4])                            # first-batch initialisation of learned scales
    p = pack_model(q)
    assert greedy(q, src, 40) == greedy(p, src, 40)


QAT_SHIPPED = [f"ddtp-en-de-{s}" for s in ("2-2-8", "1-1-8", "2-2-2", "1-1-1")] + \
              [f"debian-summ-{s}" for s in ("2-2-8", "1-1-1")]


@pytest.mark.parametrize("name", QAT_SHIPPED)
def test_shipped_qat_model_packed_greedy_identical(name):
    """The shipped quantization-aware-trained models (trained weights, and trained scales where the
    recipe learns any): packed greedy decoding equals the fake-quantized model's on 50 test
    sentences (float64, as above)."""
    root = os.path.dirname(os.path.dirname(SHIPPED))
    path = os.path.join(root, "models", f"{name}.npz")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not shipped")
    from minitbt.data import Seq2SeqData, load_tokenizer
    from minitbt.model_io import load_model
    task = os.path.join(root, "data", name.rsplit("-", 3)[0])
    q, meta = load_model(path)
    assert meta["quant"] is not None, "a shipped QAT model must carry its quantization recipe"
    q.eval().to_dtype(np.float64)
    data = Seq2SeqData.from_task(task, "test", load_tokenizer(task), max_src_len=48, max_tgt_len=48, limit=50)
    src = data.collate(np.arange(50)).src
    assert greedy(q, src, 40) == greedy(pack_model(q), src, 40)


@pytest.mark.parametrize("spec", ["2-2-2", "1-1-1", "2-2-8"])
def test_subln_packs_saves_and_reproduces_fake_quant(spec, tmp_path):
    """SubLN (recipe option subln): the LayerNorm inside out_proj and fc2 comes along into the
    packed layers and their file; float64 logits equal the fake-quantized model's."""
    from minitbt.quant import QuantRecipe
    fp = build_model(vocab_size=300, d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2,
                     max_len=40, dropout=0.0, seed=3)
    q = quantize(fp, QuantRecipe.parse(spec, subln=True)).eval()
    q.to_dtype(np.float64)
    src, tgt = _batch(3)
    rng = np.random.default_rng(3)
    for name, prm in q.named_parameters():             # a trained-looking SubLN, not the identity affine
        if "input_norm" in name:
            prm.data[:] = rng.uniform(0.5, 1.5, prm.data.shape) if name.endswith("weight") else rng.normal(0, .1, prm.data.shape)
    p = pack_model(q)
    assert p.decoder[0].ffn.fc2.input_norm is not None and p.encoder[0].self_attn.out_proj.input_norm is not None
    with no_grad():
        ref, out = q(src, tgt).data, p(src, tgt).data
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    q32 = quantize(fp, QuantRecipe.parse(spec, subln=True)).eval()
    q32.load_state_dict({k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in q.state_dict().items()})
    save_packed(str(tmp_path / "s.npz"), pack_model(q32))
    back, _ = load_packed(str(tmp_path / "s.npz"))
    with no_grad():
        np.testing.assert_array_equal(back(src, tgt).data, pack_model(q32)(src, tgt).data)


@pytest.mark.parametrize("spec", ["2-2-8", "1-1-1"])
def test_copy_model_packs_and_reproduces_fake_quant(spec):
    """A pointer-generator (copy=True) keeps its gate and the copy mixture in full precision; the
    packed model's log-probabilities equal the fake-quantized model's in float64 (the compiled
    decoder's copy output: test_compiled.py)."""
    fp = build_model(vocab_size=300, d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2,
                     max_len=40, dropout=0.0, seed=4, copy=True)
    q = quantize(fp, spec).eval()
    q.to_dtype(np.float64)
    p = pack_model(q)
    src, tgt = _batch(4)
    with no_grad():
        ref, out = q(src, tgt).data, p(src, tgt).data
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-9)
    assert greedy(q, src, 15) == greedy(p, src, 15)
