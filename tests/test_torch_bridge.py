"""minitbt.torch: the PyTorch translation of the model and its quantizers, the conversions both
ways, and the safetensors export.

Parity is measured on the shipped models (models/ddtp-en-de-{fp,2-2-8,1-1-1}.npz) with 8 test
sentences of data/ddtp-en-de, and on tiny random models for every translated recipe. Gradients:
one loss.backward() of label-smoothed cross-entropy in train mode with dropout p = 0 on both sides
(the quantizers behave the same in train and eval mode; dropout masks come from two different
random generators, so p = 0 is what makes the loss deterministic and comparable).
"""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as tF  # noqa: E402

from minitbt import functional as F  # noqa: E402
from minitbt import quant as Q  # noqa: E402
from minitbt.checkpoint import CheckpointError  # noqa: E402
from minitbt.cli import main  # noqa: E402
from minitbt.data import PAD, Seq2SeqData  # noqa: E402
from minitbt.decode import greedy  # noqa: E402
from minitbt.model_io import build_model, load_model, quantize  # noqa: E402
from minitbt.nn import Dropout  # noqa: E402
from minitbt.packed import pack_model  # noqa: E402
from minitbt.tensor import Tensor  # noqa: E402
from minitbt.torch import from_torch, to_torch, translate  # noqa: E402
from minitbt.torch import greedy as torch_greedy  # noqa: E402
from minitbt.torch import quant as TQ  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = {name: os.path.join(ROOT, "models", f"ddtp-en-de-{name}.npz") for name in ("fp", "2-2-8", "1-1-1")}


@pytest.fixture(scope="module")
def batch():
    data = Seq2SeqData.from_task(os.path.join(ROOT, "data", "ddtp-en-de"), "test", limit=8,
                                 max_src_len=96, max_tgt_len=96)
    return data.collate(np.arange(8))


def shipped(name, dtype=np.float32):
    model, _ = load_model(SHIPPED[name])
    return model.to_dtype(dtype)


def no_dropout(*models):
    for m in models:
        for mod in m.modules():
            if isinstance(mod, (Dropout, torch.nn.Dropout)):
                mod.p = 0.0


def losses(model, module, src, tgt_in, tgt_out):
    """The same label-smoothed CE on both sides, backpropagated."""
    V = model.config.vocab_size
    loss = F.cross_entropy(model(src, tgt_in).reshape(-1, V), tgt_out.reshape(-1), ignore_index=PAD,
                           label_smoothing=0.1)
    tloss = tF.cross_entropy(module(src, tgt_in).reshape(-1, V), torch.from_numpy(tgt_out.reshape(-1)).long(),
                             ignore_index=PAD, label_smoothing=0.1)
    loss.backward()
    tloss.backward()
    return loss.item(), tloss.item()


def gradient_gaps(model, module) -> dict:
    """|minitbt grad - torch grad| max, for every parameter (a missing gradient counts as zeros)."""
    theirs = dict(module.named_parameters())
    gaps = {}
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else np.zeros_like(p.data)
        t = theirs[name].grad
        t = t.numpy() if t is not None else np.zeros_like(p.data)
        gaps[name] = float(np.abs(g - t).max())
    assert set(gaps) == set(theirs)
    return gaps


# ---- each quantizer against its minitbt original ---------------------------------------------------
def _maybe(cls, **kw):
    """A minitbt quantizer, or a skip when this minitbt has no such option."""
    try:
        return cls(**kw)
    except TypeError as exc:
        pytest.skip(f"{cls.__name__}: {exc}")


QUANTIZERS = {
    "tbt-ternary": (Q.TBTTernaryWeight, {}, "w"),
    "tbt-ternary-tensor": (Q.TBTTernaryWeight, dict(per_row=False), "w"),
    "tbt-ternary-code": (Q.TBTTernaryWeight, dict(centre=False, ste="identity"), "w"),
    "tbt-binary": (Q.TBTBinaryWeight, {}, "w"),
    "tbt-binary-code": (Q.TBTBinaryWeight, dict(centre=False, ste="identity"), "w"),
    "twn": (Q.TWNWeight, {}, "w"),
    "twn-row": (Q.TWNWeight, dict(per_row=True), "w"),
    "bwn": (Q.BWNWeight, {}, "w"),
    "bwn-bit": (Q.BWNWeight, dict(per_row=True, centre=True), "w"),
    "absmean": (Q.AbsMeanWeight, {}, "w"),
    "absmax-8": (Q.AbsMaxWeight, dict(bits=8), "w"),
    "absmax-4-tensor": (Q.AbsMaxWeight, dict(bits=4, per_row=False), "w"),
    "elastic-2": (Q.ElasticQuantizer, dict(bits=2), "x"),
    "elastic-1": (Q.ElasticQuantizer, dict(bits=1), "x"),
    "elastic-4": (Q.ElasticQuantizer, dict(bits=4), "x"),
    "elastic-2-unsigned": (Q.ElasticQuantizer, dict(bits=2, signed=False), "relu"),
    "elastic-1-unsigned": (Q.ElasticQuantizer, dict(bits=1, signed=False), "relu"),
    "elastic-code": (Q.ElasticQuantizer, dict(bits=2, centre=False, lsq_grad_scale=True), "x"),
    "elastic-shift-min": (Q.ElasticQuantizer, dict(bits=2, signed=False, shift_min=True, lsq_grad_scale=True), "relu"),
    "elastic-init-code": (Q.ElasticQuantizer, dict(bits=2, signed=False, init="code"), "relu"),
    "elastic-binary-zero": (Q.ElasticQuantizer, dict(bits=1, binary_zero="zero"), "x"),
    "elastic-fixed": (Q.ElasticQuantizer, dict(bits=2, init_scale=0.5, learn_scale=False), "x"),
    "bit-signed": (Q.BiTElasticBinary, dict(signed=True), "x"),
    "bit-unsigned": (Q.BiTElasticBinary, dict(signed=False), "relu"),
    "bit-lsq": (Q.BiTElasticBinary, dict(signed=False, lsq_grad_scale=True), "relu"),
    "minmax-8": (Q.MinMaxQuantizer, dict(bits=8), "x"),
    "minmax-2": (Q.MinMaxQuantizer, dict(bits=2), "x"),
    "minmax-1": (Q.MinMaxQuantizer, dict(bits=1), "x"),
    "minmax-2-unsigned": (Q.MinMaxQuantizer, dict(bits=2, signed=False), "relu"),
    "minmax-8-unsigned-clip": (Q.MinMaxQuantizer, dict(bits=8, signed=False, clip=2.5), "relu"),
    "minmax-4-tensor": (Q.MinMaxQuantizer, dict(bits=4, per_token=False), "x"),
    "a8": (Q.SymmetricA8, {}, "x"),
    "a8-tensor": (Q.SymmetricA8, dict(per_token=False), "x"),
    "absmax-tokens": (Q.PerTokenAbsMax, {}, "x"),
}


def _input(kind, rng):
    if kind == "w":
        return rng.standard_normal((6, 10)) * 0.1                           # (out, in)
    x = rng.standard_normal((3, 5, 8)) * 1.5                                # (B, T, d)
    x[0, 0] = [-1.5, -0.5, 0.0, 0.5, 1.5, -1.0, 1.0, 0.0]                   # exact zero after centring
    return np.maximum(x, 0) if kind == "relu" else x


@pytest.mark.parametrize("case", sorted(QUANTIZERS))
def test_quantizer_matches_minitbt(case):
    """Forward and every gradient (input, scale, offset) equal to minitbt's in float64, for the first
    call (data-dependent scale initialisation included) and a second call on other data."""
    cls, kw, kind = QUANTIZERS[case]
    mq = _maybe(cls, **kw).to_dtype(np.float64)
    tq = translate(mq).double()
    assert type(tq).__name__ == cls.__name__ and tq.describe() == mq.describe()
    rng = np.random.default_rng(0)
    for call in range(2):
        x = _input(kind, rng)
        mx, tx = Tensor(x.copy(), requires_grad=True), torch.tensor(x, requires_grad=True)
        my, ty = mq(mx), tq(tx)
        np.testing.assert_allclose(ty.detach().numpy(), my.data, rtol=0, atol=1e-12, err_msg=f"call {call}")
        G = rng.standard_normal(x.shape)
        my.backward(G)
        ty.backward(torch.tensor(G))
        np.testing.assert_allclose(tx.grad.numpy(), mx.grad, rtol=0, atol=1e-12)
        for name in ("scale", "offset"):
            if getattr(mq, name, None) is not None and mq.__dict__[name].requires_grad:
                np.testing.assert_allclose(getattr(tq, name).grad.numpy(), getattr(mq, name).grad,
                                           rtol=1e-12, atol=1e-12, err_msg=name)
                np.testing.assert_allclose(getattr(tq, name).detach().numpy(), getattr(mq, name).data, rtol=1e-13)
                getattr(tq, name).grad = None
                getattr(mq, name).grad = None
        if hasattr(mq, "initialized"):
            assert bool(tq.initialized[0]) == bool(mq.initialized[0]) is True


class MyElastic(Q.ElasticQuantizer):
    pass


@pytest.mark.parametrize("q", [Q.PerChannelQuantizer(8), Q.LATWeight(), Q.BinaryCodingWeight(2), Q.Sign(),
                               Q.custom_quantizer(np.sign, Q.identity_grad, precision=1), MyElastic(2)],
                         ids=lambda q: type(q).__name__)
def test_untranslated_quantizers_raise(q):
    with pytest.raises(NotImplementedError, match=type(q).__name__):
        translate(q)


def test_an_untranslated_option_raises():
    q = Q.ElasticQuantizer(2)
    q.new_option = "on"                                     # an option this translation does not know
    with pytest.raises(NotImplementedError, match="new_option"):
        translate(q)


@pytest.mark.parametrize("recipe, culprit", [("fqt-8-8-8", "PerChannelQuantizer"),
                                             ("bcq-3-3-32", "BinaryCodingWeight")])
def test_to_torch_never_drops_a_quantizer(recipe, culprit):
    model = quantize(build_model(vocab_size=30, d_model=8, n_heads=2, d_ff=16, n_encoder_layers=1,
                                 n_decoder_layers=1, max_len=10), recipe)
    with pytest.raises(NotImplementedError, match=culprit):
        to_torch(model)


def test_to_torch_refuses_a_copy_model():
    model = build_model(vocab_size=30, d_model=8, n_heads=2, d_ff=16, n_encoder_layers=1, n_decoder_layers=1,
                        max_len=10, copy=True)
    with pytest.raises(NotImplementedError, match="copy"):
        to_torch(model)


# ---- the shipped models ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_logits_float64(name, batch):
    model = shipped(name, np.float64).eval()
    module = to_torch(model, dtype=torch.float64)
    with torch.no_grad():
        theirs = module(batch.src, batch.tgt_in).numpy()
    gap = np.abs(model(batch.src, batch.tgt_in).data - theirs).max()
    print(f"{name} float64: max |logit difference| {gap:.2e}")
    assert gap <= 1e-9


@pytest.mark.parametrize("name", ["fp", "1-1-1"])
def test_shipped_logits_float32(name, batch):
    model = shipped(name).eval()
    module = to_torch(model)
    with torch.no_grad():
        theirs = module(batch.src, batch.tgt_in).numpy()
    gap = np.abs(model(batch.src, batch.tgt_in).data - theirs).max()
    print(f"{name} float32: max |logit difference| {gap:.2e}")
    assert gap <= 1e-4


def test_shipped_2_2_8_float32_site_by_site(batch):
    """2-2-8 in float32: every quantized layer and attention quantizer, given the input minitbt
    gave it, computes the same output to 1e-4. End to end the two differ more at some positions:
    a last-bit difference between two float32 matmul libraries moves a value across an 8-bit
    rounding boundary somewhere (a step of max|x|/127), and the change travels on (in float64 the
    two agree to 1e-14, test_shipped_logits_float64). The greedy translations are the same."""
    model = shipped("2-2-8").eval()
    module = to_torch(model)
    seen = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (Q.QuantLinear, Q.Quantizer)):
            def record(x, name=name, forward=mod.forward):
                seen.setdefault(name, np.array(x.data if isinstance(x, Tensor) else x))
                return forward(x)
            mod.forward = record
    ref = model(batch.src, batch.tgt_in).data
    for name, mod in model.named_modules():
        vars(mod).pop("forward", None)
    assert len(seen) == 48 + 49 + 84            # QuantLinears, weight quantizers, activation quantizers
    worst = 0.0
    with torch.no_grad():
        for name, x in seen.items():
            mine = dict(model.named_modules())[name](Tensor(x)).data
            theirs = module.get_submodule(name)(torch.from_numpy(x)).numpy()
            worst = max(worst, float(np.abs(mine - theirs).max()))
        got = module(batch.src, batch.tgt_in).numpy()
    print(f"2-2-8 float32: worst site {worst:.2e}; end to end max {np.abs(ref - got).max():.2e}, "
          f"median {np.median(np.abs(ref - got)):.2e}")
    assert worst <= 1e-4
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.99
    assert greedy(model, batch.src, 40) == torch_greedy(module, batch.src, 40)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_gradients_float64(name, batch):
    """One training step's gradients, every parameter's, the learned activation scales included."""
    model = shipped(name, np.float64).train()
    module = to_torch(model, dtype=torch.float64)
    no_dropout(model, module)
    mine, theirs = losses(model, module, batch.src, batch.tgt_in, batch.tgt_out)
    assert abs(mine - theirs) <= 1e-12
    gaps = gradient_gaps(model, module)
    scales = [n for n in gaps if n.endswith(".scale")]
    assert len(scales) == (84 if name == "1-1-1" else 0)
    print(f"{name}: max gradient gap {max(gaps.values()):.2e}, scales {max([gaps[n] for n in scales], default=0):.2e}")
    assert max(gaps.values()) <= 1e-9


@pytest.mark.parametrize("name", ["2-2-8", "1-1-1"])
def test_round_trip_leaves_packed_greedy_unchanged(name, batch):
    model = shipped(name).eval()
    back = from_torch(to_torch(model))
    assert back.quant_recipe == model.quant_recipe
    before, after = model.state_dict(), back.state_dict()
    assert list(before) == list(after)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert greedy(pack_model(back), batch.src, 40) == greedy(pack_model(model), batch.src, 40)


def test_trained_scales_are_not_reinitialised(batch):
    model = shipped("1-1-1")
    module = to_torch(model).train()
    before = {n: p.detach().clone() for n, p in module.named_parameters() if n.endswith(".scale")}
    assert all(bool(b[0]) for n, b in module.named_buffers() if n.endswith("initialized"))
    module(batch.src[:2], batch.tgt_in[:2])
    for n, p in module.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n


# ---- every translated recipe on a tiny model ---------------------------------------------------------
TINY = dict(vocab_size=40, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=2, max_len=16)
RECIPES = [("2-2-8", {}), ("1-1-1", {}), ("2-2-2", {}), ("2-2-2", dict(pre_ln=True, positions="sinusoidal",
           activation="gelu_tanh", tie_embeddings=False)), ("1-1-8", dict(activation="gelu")),
           ("twn-2-2-8", {}), ("twn-2-2-2", {}), ("bwn-1-1-1", {}), ("bwn+elastic-1-1-1", {}),
           ("stats-2-2-2", {}), ("bit-1-1-1", {}), ("bit-1-1-2", {}), ("tbt-code-2-2-2", {}),
           ("tbt-code-1-1-1", {}), ("bitnet-8-2-8", {}), ("8-8-8", {}), ("4-4-4", {})]


@pytest.mark.parametrize("recipe, variant", RECIPES, ids=lambda v: v if isinstance(v, str) else
                         "+".join(f"{k}={w}" for k, w in v.items()) or "post-ln")
def test_recipe_logits_gradients_and_scale_init(recipe, variant):
    """A fresh quantized model (learned scales not initialised yet), converted before its first
    forward: both sides initialise the scales from the same batch, then the logits and every
    gradient agree in float64; the round trip gives the same state back."""
    rng = np.random.default_rng(1)
    fp = build_model(**TINY, **variant, dropout=0.0)
    for name, p in fp.named_parameters():                  # a fresh model has zero biases and unit
        if p.data.ndim == 1:                               # LayerNorms: quantized dot products of 0
            p.data[:] = rng.uniform(-0.5, 0.5, p.data.shape) + (name.endswith("norm.weight"))  # land on
    model = quantize(fp, recipe).to_dtype(np.float64).train()  # ReLU's kink there, +-1e-17 either side
    module = to_torch(model, dtype=torch.float64)
    src, tgt = rng.integers(3, 40, (3, 7)), rng.integers(3, 40, (3, 6))
    src[1, 4:], tgt[2, 3:] = PAD, PAD
    tgt_in = np.concatenate([np.ones((3, 1), int), tgt[:, :-1]], axis=1)
    mine, theirs = losses(model, module, src, tgt_in, tgt)
    assert abs(mine - theirs) <= 1e-9
    assert max(gradient_gaps(model, module).values()) <= 1e-9
    back = from_torch(module).state_dict()                 # the scales each side initialised itself:
    for key, arr in model.state_dict().items():            # equal but for the order of a mean's sum
        np.testing.assert_allclose(back[key], arr, rtol=1e-13, atol=0, err_msg=key)


@pytest.mark.parametrize("spec", ["2-2-2", "1-1-1"])
def test_subln_logits_gradients_and_scale_init(spec):
    """SubLN (the LayerNorm inside out_proj and fc2) converts like the rest."""
    from minitbt.quant import QuantRecipe
    test_recipe_logits_gradients_and_scale_init(QuantRecipe.parse(spec, subln=True), {})


def test_per_layer_ffn_widths_convert():
    """A config with one FFN width per layer (a pruned model) converts both ways."""
    from minitbt.nn import TransformerConfig
    if "ffn_widths" not in TransformerConfig.__dataclass_fields__:
        pytest.skip("this minitbt has no per-layer FFN widths")
    model = quantize(build_model(**TINY, ffn_widths=[5, 7, 3]), "2-2-8").to_dtype(np.float64).eval()
    module = to_torch(model, dtype=torch.float64)
    assert module.decoder[1].ffn.fc1.weight.shape == (3, 16)
    src = np.array([[4, 5, 6, 2], [7, 8, 2, 0]])
    with torch.no_grad():
        assert np.abs(model(src, src).data - module(src, src).numpy()).max() <= 1e-9
    assert from_torch(module).decoder[1].ffn.fc2.weight.data.shape == (16, 3)


def test_from_torch_refuses_a_quantizer_its_recipe_does_not_place():
    model = quantize(build_model(**TINY), "2-2-8")
    module = to_torch(model)
    module.encoder[0].ffn.fc1.weight_quantizer = TQ.TWNWeight()
    with pytest.raises(ValueError, match="encoder.0.ffn.fc1.weight_quantizer"):
        from_torch(module)


# ---- safetensors ------------------------------------------------------------------------------------
safetensors = pytest.importorskip("safetensors")


def test_export_safetensors_loads_with_safetensors_and_minitbt_torch(tmp_path, batch):
    from safetensors import safe_open
    from safetensors.torch import load_file
    out = str(tmp_path / "m.safetensors")
    assert main(["export", "--model", SHIPPED["1-1-1"], "--out", out, "--format", "safetensors"]) == 0
    model, meta = load_model(SHIPPED["1-1-1"])
    state = model.state_dict()
    with safe_open(out, framework="numpy") as f:
        header = f.metadata()
        assert sorted(f.keys()) == sorted(state)
        for key in state:
            np.testing.assert_array_equal(f.get_tensor(key), state[key], err_msg=key)
    assert header["format"] == "minitbt"
    assert json.loads(header["model_config"]) == model.config.to_dict()
    assert json.loads(header["quant"])["name"] == "tbt-1-1-1"
    assert header["tokenizer"] == meta["tokenizer"]
    module = to_torch(model).eval()
    module.load_state_dict(load_file(out))                  # plain safetensors -> the PyTorch module
    from_file = to_torch(out).eval()                        # minitbt.torch reads config, recipe, weights
    with torch.no_grad():
        a, b = module(batch.src, batch.tgt_in), from_file(batch.src, batch.tgt_in)
    assert torch.equal(a, b)
    assert from_file.quant_recipe == model.quant_recipe


def test_export_safetensors_half_and_refusals(tmp_path, capsys):
    out = str(tmp_path / "h.safetensors")
    assert main(["export", "--model", SHIPPED["2-2-8"], "--out", out, "--format", "safetensors", "--half"]) == 0
    from safetensors.numpy import load_file
    assert load_file(out)["embed.weight"].dtype == np.float16
    assert main(["export", "--model", SHIPPED["2-2-8"], "--out", out, "--format", "safetensors", "--packed"]) == 2
    assert "drop --packed" in capsys.readouterr().err
    from minitbt.safetensors_io import read_safetensors
    from safetensors.numpy import save_file
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not one minitbt wrote"):
        read_safetensors(str(tmp_path / "foreign.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_safetensors(str(tmp_path / "junk.safetensors"))
