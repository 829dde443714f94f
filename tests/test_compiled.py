"""The compiled decoder (minitbt/_decoder.h) runs the same model as the NumPy packed model.

The reference is the nn/ packed model in float32, which the tests of test_packed.py tie to the
fake-quantized training-time model (in float64, where only the summation order differs). The C
runs float32 too; its linear layers give the same integers on the same kernels, and only the
float parts (LayerNorm, scores, softmax) sum in another order. So:

* 1- and 2-bit activations: the same codes, logits within 1e-4, the same greedy tokens; except
  where one activation lies within float32 noise of a code boundary (the edge of round_ties'
  window), as about one sentence in 50 of a trained ternary model does. Such a sentence passes
  only if flipping that one code in the NumPy model gives the compiled logits to 1e-4.
* 8-bit activations: a last-bit difference can move a value across a rounding boundary of the
  256-level code, and that code's step (about 1/127 of the row's range) reaches the logits:
  median difference ~3e-7, but up to ~0.1 (measured on 50 test sentences). Greedy tokens then
  may differ, and only where the reference's own two best logits were that close (a near-tie).
"""
import contextlib
import os

import numpy as np
import pytest

import minitbt.kernels.quantize as kq
from minitbt.data import BOS
from minitbt.decode import beam_search, greedy
from minitbt.model_io import build_model, load_model, quantize
from minitbt.packed import pack_model
from minitbt.packed.compiled import HAVE_DECODER, NotCompilable, compile_model
from minitbt.quant.base import TIE_ULPS, _tie_tol
from minitbt.tensor import no_grad

pytestmark = pytest.mark.skipif(not HAVE_DECODER, reason="minitbt._decoder was not built")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = os.path.join(ROOT, "data", "ddtp-en-de")
TIGHT = 1e-4          # |logit difference| with 1- and 2-bit activation codes
NEAR_TIE = 0.25       # 8-bit: a greedy divergence is allowed only where the top-2 gap is below this
NEAR_EDGE = 1e-5      # 1-/2-bit: a code that may flip lies this close to its boundary (in steps)


def _reference_logits(model, src_ids, tokens):
    """Teacher-forced logits (T, V) of the NumPy model for one source."""
    with no_grad():
        memory, pad = model.encode(np.asarray(src_ids)[None])
        return model.decode(np.asarray(tokens)[None], memory, pad).data[0]


@contextlib.contextmanager
def _codes_near_edges(flip=None):
    """Watch every learned-scale activation quantizer (kernels.quantize.fake_quantize, float32):
    yields a list that gets, per call, (distance, call, index, u) of the value nearest a code
    boundary, u = x/a in steps. The boundary of two codes is the edge of round_ties' window
    around each half-integer b, |u - b| = 2^-15 max(Qp, |u|); of a binary code (sign(0) = +1, the
    default), u = -2^-15.
    ``flip=(call, index)`` puts that value's code on the other side of its boundary."""
    real, seen = kq.fake_quantize, []

    def watched(x, a, lo, qp, mode="levels"):
        q, dqda, inside = real(x, a, lo, qp, mode)
        u = x / np.float32(a)
        if mode == "levels":
            b = np.floor(u) + np.float32(0.5)
            dist = np.abs(np.abs(u - b) - _tie_tol(u, qp))
            dist[(b < lo) | (b > qp)] = np.inf                        # beyond the clip: one code
        else:
            dist = np.abs(u + TIE_ULPS * np.finfo(u.dtype).eps)
        j = int(np.argmin(dist))
        seen.append((float(dist.flat[j]), len(seen), j, float(u.flat[j])))
        if flip is not None and flip[0] == len(seen) - 1:
            q = q.copy()
            c = q.flat[flip[1]]
            q.flat[flip[1]] = -c if mode != "levels" else np.clip(c + (1 if u.flat[flip[1]] > c else -1), lo, qp)
        return q, dqda, inside

    kq.fake_quantize = watched
    try:
        yield seen
    finally:
        kq.fake_quantize = real


def _explained_by_one_flip(p, ids, toks, compiled_logits, tight, near=NEAR_EDGE):
    """'' if flipping one NumPy activation code near its boundary (of the three nearest) gives the
    compiled logits within tight; else why not."""
    with _codes_near_edges() as seen:
        ln = _reference_logits(p, ids, toks)
    tried = []
    for dist, call, j, u in sorted(seen)[:3]:
        if dist > near:
            break
        with _codes_near_edges(flip=(call, j)):
            diff = float(np.abs(_reference_logits(p, ids, toks) - compiled_logits).max())
        if diff < tight:
            return ""
        tried.append(f"quantizer call {call}, u = {u:.7f} ({dist:.1e} from the boundary): still {diff:.3g}")
    return (f"compiled and NumPy logits differ by {np.abs(ln - compiled_logits).max():.3g}, and no single "
            f"code within {near} of its boundary explains it: " + ("; ".join(tried) or "none that close"))


def _check_model(p, src, max_len, eight_bit, tight=TIGHT, n_logits=10):
    """Compile the packed model p and compare greedy tokens on src, and teacher-forced logits on
    its first n_logits sources (and on every source whose tokens differ)."""
    fast = compile_model(p)
    ours, ref = fast.greedy(src, max_len), greedy(p, src, max_len)
    worst = 0.0
    for i, row in enumerate(src):
        if i >= n_logits and ours[i] == ref[i]:
            continue
        ids = row[row != p.config.pad_id]
        toks = np.array([BOS] + ref[i], dtype=np.int32)
        lc, ln = fast.step_logits(ids, toks), _reference_logits(p, ids, toks)
        diff = float(np.abs(lc - ln).max())
        if not eight_bit and diff >= tight:                  # a boundary crossing, or a real difference
            why = _explained_by_one_flip(p, ids, toks, lc, tight)
            assert not why, f"sentence {i}: {why}\n  C:     {ours[i]}\n  NumPy: {ref[i]}"
            continue
        worst = max(worst, diff)
        if ours[i] != ref[i]:
            assert eight_bit, f"sentence {i}: greedy tokens differ\n  C:     {ours[i]}\n  NumPy: {ref[i]}"
            j = next(t for t, (a, b) in enumerate(zip(ours[i] + [-1], ref[i] + [-1])) if a != b)
            z = ln[j]
            gap = z.max() - z[ours[i][j]] if j < len(ours[i]) else z.max() - z[p.config.eos_id]
            assert gap < NEAR_TIE, (f"sentence {i} diverges at step {j}, where the reference's logits of the "
                                    f"two choices differ by {gap:.3f}: not a near-tie")
    if eight_bit:
        assert worst < NEAR_TIE, f"8-bit codes: max |logit difference| {worst:.3g}"
    else:
        assert worst < tight, f"max |logit difference| {worst:.3g} (tolerance {tight})"
    return ours, ref


# ---- the four presets on the test split -----------------------------------------------------

@pytest.fixture(scope="module")
def test_sources():
    from minitbt.data import Seq2SeqData, load_tokenizer
    data = Seq2SeqData.from_task(TASK, "test", load_tokenizer(TASK), max_src_len=48, max_tgt_len=48, limit=50)
    return data.collate(np.arange(50)).src


def _preset_model(spec, src):
    """The shipped QAT model of this preset, else the shipped FP model quantized and calibrated."""
    path = os.path.join(ROOT, "models", f"ddtp-en-de-{spec}.npz")
    if os.path.exists(path):
        q, _ = load_model(path)
        return q.eval()
    fp, _ = load_model(os.path.join(ROOT, "models", "ddtp-en-de-fp.npz"))
    q = quantize(fp, spec).eval()
    with no_grad():
        q(src[:8], src[:8, :4])                            # first-batch initialisation of learned scales
    return q


@pytest.mark.parametrize("spec", ["2-2-8", "1-1-8", "2-2-2", "1-1-1"])
def test_compiled_greedy_equals_numpy_on_50_test_sentences(spec, test_sources):
    p = pack_model(_preset_model(spec, test_sources))
    _check_model(p, test_sources, 40, eight_bit=spec.endswith("-8"))


def test_compiled_beam_equals_numpy_beam(test_sources):
    p = pack_model(_preset_model("1-1-1", test_sources))
    src = test_sources[:3]
    assert compile_model(p).beam_search(src, 4, 30) == beam_search(p, src, 4, 30)


# ---- every architecture option and quantizer family, on tiny random models -------------------

ARCHS = {
    "post-LN relu": {},
    "pre-LN gelu sinusoidal": dict(pre_ln=True, activation="gelu", positions="sinusoidal"),
    "untied head gelu_tanh": dict(tie_embeddings=False, activation="gelu_tanh"),
    "pruned FFN widths": dict(ffn_widths=[24, 40, 8]),
}
RECIPES = ["2-2-2", "1-1-1", "2-2-8", "1-1-8", "bit-1-1-1", "tbt-code-2-2-2", "twn-2-2-2", "bwn-1-1-1",
           "bitnet-8-2-8", "16-2-16", "paretoq-2-2-2"]


def _tiny(arch, seed=0):
    return build_model(vocab_size=60, d_model=32, n_heads=4, d_ff=48, n_encoder_layers=1, n_decoder_layers=2,
                       max_len=24, dropout=0.0, seed=seed, **ARCHS[arch])


def _tiny_src(seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(3, 60, (5, 11))
    src[0, 7:] = 0                                         # a padded source
    return src


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("recipe", RECIPES)
def test_compiled_tiny_models(arch, recipe):
    src = _tiny_src()
    q = quantize(_tiny(arch), recipe).eval()
    with no_grad():
        q(src, src[:, :5])                                 # initialise the learned scales
    eight = recipe.endswith("-8") or recipe.startswith("bitnet")
    _check_model(pack_model(q), src, 12, eight_bit=eight)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_compiled_float_and_fake_quantized_models(arch):
    """A float model, and a QAT model before packing (float matmuls with quantized weights)."""
    src = _tiny_src(1)
    fp = _tiny(arch, 1).eval()
    _check_model(fp, src, 12, eight_bit=False, tight=1e-3)   # float scores: rounding only
    q = quantize(fp, "2-2-2").eval()
    with no_grad():
        q(src, src[:, :5])
    _check_model(q, src, 12, eight_bit=False, tight=1e-3)


def test_boundary_crossing_rule_explains_a_flip_and_nothing_else():
    """_check_model's one excuse at 1 and 2 bits: a difference that one flipped code explains.
    A flipped code is found again; logits off by 0.5 in one place are not a flipped code."""
    src = _tiny_src(3)
    q = quantize(_tiny("post-LN relu", 3), "2-2-2").eval()
    with no_grad():
        q(src, src[:, :5])
    p, ids, toks = pack_model(q), src[1], np.array([BOS, 5, 6, 7], dtype=np.int32)
    with _codes_near_edges() as seen:
        _reference_logits(p, ids, toks)
    _, call, j, _ = min(seen)
    with _codes_near_edges(flip=(call, j)):
        flipped = _reference_logits(p, ids, toks)
    assert np.abs(flipped - _reference_logits(p, ids, toks)).max() > TIGHT
    assert _explained_by_one_flip(p, ids, toks, flipped, TIGHT, near=np.inf) == ""   # (random: no near tie)
    off = compile_model(p).step_logits(ids, toks)
    off[1, 7] += 0.5
    assert "no single code" in _explained_by_one_flip(p, ids, toks, off, TIGHT, near=np.inf)


def test_compiled_float_weights_runtime_matches_packed():
    """float_weights=True: the same runtime with dequantized float32 weights, the same outputs."""
    src = _tiny_src(2)
    q = quantize(_tiny("post-LN relu", 2), "2-2-2").eval()
    with no_grad():
        q(src, src[:, :5])
    p = pack_model(q)
    a, b = compile_model(p), compile_model(p, float_weights=True)
    for row in src:
        ids = row[row != 0]
        toks = np.array([BOS, 5, 9, 11], dtype=np.int32)
        np.testing.assert_allclose(a.step_logits(ids, toks), b.step_logits(ids, toks), atol=1e-4)


def test_compiled_beam_tiny_matches_numpy():
    src = _tiny_src(3)
    q = quantize(_tiny("pre-LN gelu sinusoidal", 3), "1-1-1").eval()
    with no_grad():
        q(src, src[:, :5])
    p = pack_model(q)
    for k in (1, 3):
        assert compile_model(p).beam_search(src, k, 10, min_len=2) == beam_search(p, src, k, 10, min_len=2)


def test_compiled_refuses_what_it_cannot_run():
    src = _tiny_src()
    q = quantize(_tiny("post-LN relu"), "tbt-code-1-1-1").eval()      # binary_zero="zero": {-1, 0, 1}
    with no_grad():
        q(src, src[:, :5])
    with pytest.raises(NotCompilable, match="binary_zero"):
        compile_model(q)
    fresh = quantize(_tiny("post-LN relu"), "2-2-2").eval()           # scales never initialised
    with pytest.raises(NotCompilable, match="initialised"):
        compile_model(fresh)


def test_compiled_decode_functions_take_it():
    """minitbt.decode.greedy / beam_search run a compiled model through its own loops."""
    src = _tiny_src(4)
    q = quantize(_tiny("post-LN relu", 4), "2-2-2").eval()
    with no_grad():
        q(src, src[:, :5])
    p = pack_model(q)
    fast = compile_model(p)
    assert greedy(fast, src, 10) == greedy(p, src, 10)
    assert beam_search(fast, src, 2, 10) == beam_search(p, src, 2, 10)


@pytest.mark.parametrize("arch", ["post-LN relu", "pre-LN gelu sinusoidal"])
@pytest.mark.parametrize("spec", ["2-2-2", "1-1-1", "2-2-8"])
def test_compiled_subln(arch, spec):
    """SubLN's LayerNorm inside out_proj and fc2 runs in the C too."""
    from minitbt.quant import QuantRecipe
    src = _tiny_src(5)
    q = quantize(_tiny(arch, 5), QuantRecipe.parse(spec, subln=True)).eval()
    rng = np.random.default_rng(5)
    for name, prm in q.named_parameters():
        if "input_norm" in name:
            prm.data[:] = rng.uniform(0.5, 1.5, prm.data.shape) if name.endswith("weight") else rng.normal(0, .1, prm.data.shape)
    with no_grad():
        q(src, src[:, :5])
    _check_model(pack_model(q), src, 12, eight_bit=spec.endswith("-8"))


@pytest.mark.parametrize("spec", [None, "2-2-2", "1-1-1", "2-2-8"])
def test_compiled_copy_model(spec):
    """A pointer-generator (copy=True): the C mixes the gate, the softmax and the last
    cross-attention (mean over heads) as F.copy_mixture does: the same log-probabilities,
    the same greedy and beam outputs."""
    src = _tiny_src(6)
    m = build_model(vocab_size=60, d_model=32, n_heads=4, d_ff=48, n_encoder_layers=1, n_decoder_layers=2,
                    max_len=24, dropout=0.0, seed=6, copy=True).eval()
    m.copy_gate.bias.data[:] = -0.5                        # lean on copying: a visible copy term
    if spec is not None:
        m = quantize(m, spec).eval()
        with no_grad():
            m(src, src[:, :5])
        m = pack_model(m)
    _check_model(m, src, 12, eight_bit=spec == "2-2-8", tight=1e-3 if spec is None else TIGHT)
    assert compile_model(m).beam_search(src, 3, 10) == beam_search(m, src, 3, 10)


def test_cli_packed_runs_the_compiled_decoder(capsys):
    """--packed runs the compiled decoder (a float model too); --numpy the NumPy packed model;
    the translations agree."""
    from minitbt.cli import main
    text = "Library for reading and writing image files"
    outs = {}
    for model, extra in (("ddtp-en-de-2-2-8", []), ("ddtp-en-de-2-2-8", ["--numpy"]), ("ddtp-en-de-fp", []),
                         ("ddtp-en-de-fp", None)):
        path = os.path.join(ROOT, "models", f"{model}.npz")
        flags = [] if extra is None else ["--packed", *extra]
        assert main(["translate", "--model", path, *flags, text]) == 0
        outs[(model, str(extra))] = capsys.readouterr().out.strip()
    assert outs[("ddtp-en-de-2-2-8", "[]")] == outs[("ddtp-en-de-2-2-8", "['--numpy']")] != ""
    assert outs[("ddtp-en-de-fp", "[]")] == outs[("ddtp-en-de-fp", "None")] != ""
