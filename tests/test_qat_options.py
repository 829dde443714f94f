"""The training-side candidates of the quantization pilot (docs/pilot.sh): --quant-options,
--clip-scales, --kd-temperature, multi-step distillation and sequence-level distillation data,
on a tiny task made here."""
import gzip
import json
import os
from dataclasses import replace

import numpy as np
import pytest

import minitbt.quant as Q
from minitbt import Tensor, optim
from minitbt.datasets import prepare_user_task, read_split
from minitbt.gradcheck import gradcheck
from minitbt.model_io import build_model, load_latent_fp, load_model
from minitbt.train import config_from_preset, train

WORDS = "the a red blue green small big cat dog bird tree house runs sleeps sings".split()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A small translation task (source words -> the same words reversed) and an FP model trained on it."""
    root = tmp_path_factory.mktemp("qat")
    rng = np.random.default_rng(0)
    src = [" ".join(rng.choice(WORDS, rng.integers(2, 7))) for _ in range(200)]
    raw = root / "raw"
    raw.mkdir()
    (raw / "train.source").write_text("\n".join(src) + "\n")
    (raw / "train.target").write_text("\n".join(" ".join(reversed(s.split())) for s in src) + "\n")
    out = str(root / "rev")
    prepare_user_task(str(raw), out, kind="translation", vocab_size=60)
    train(_cfg(out, root / "fp", max_steps=30), quiet=True)
    return out, str(root / "fp" / "best.npz")


def _cfg(task, out, **kw):
    return config_from_preset("test", task=task, out=str(out), eval_sentences=4, **kw)


# ---- gradient clipping with the quantizer scales apart -------------------------------------------
def test_clip_grad_norm_apart():
    """Weight gradient (3, 0, 0, 0), scale gradient 4: the global norm is 5."""
    w, s = Tensor(np.zeros(4), requires_grad=True), Tensor(np.zeros(1), requires_grad=True)
    for max_norm, apart, apart_max, want_w, want_s in [(0.5, (), None, 0.3, 0.4),   # one global clip: x 0.1
                                                        (1.0, (s,), None, 1.0, 4.0),  # weights by their own norm 3
                                                        (1.0, (s,), 0.5, 1.0, 0.5)]:  # scales: their own clip
        w.grad, s.grad = np.array([3.0, 0, 0, 0]), np.array([4.0])
        norm = optim.clip_grad_norm([w, s], max_norm, apart=apart, apart_max_norm=apart_max)
        assert np.isclose(norm, 5.0)                                 # all gradients, before clipping
        assert np.isclose(w.grad[0], want_w, rtol=1e-5) and np.isclose(s.grad[0], want_s, rtol=1e-5)


@pytest.mark.parametrize("mode", ["global", "separate", "none"])
def test_train_keeps_quantizer_scales_out_of_the_clip(task, tmp_path, monkeypatch, mode):
    task_dir, fp = task
    seen = []
    real = optim.clip_grad_norm

    def spy(params, max_norm, apart=(), apart_max_norm=None):
        seen.append(({id(p) for p in apart}, apart_max_norm, params))
        return real(params, max_norm, apart, apart_max_norm)
    monkeypatch.setattr(optim, "clip_grad_norm", spy)
    cfg = _cfg(task_dir, tmp_path / mode, quant="2-2-2", init=fp, teacher=fp, max_steps=2, clip_scales=mode)
    train(cfg, quiet=True)
    model, meta = load_model(str(tmp_path / mode / "last.npz"))
    n_scales = sum(1 for _, q in Q.quantizers(model) for _ in q.parameters())
    apart, apart_max, params = seen[-1]
    assert len(apart) == (0 if mode == "global" else n_scales) and n_scales > 0
    assert apart_max == (cfg.clip if mode == "separate" else None)
    owners = {id(p) for p in params} & apart
    assert owners == apart                                         # they are the optimizer's parameters
    assert meta["train_config"]["clip_scales"] == mode
    with pytest.raises(ValueError, match="clip-scales"):
        replace(cfg, clip_scales="apart").validate()


# ---- KD temperature -------------------------------------------------------------------------------
def test_kd_temperature_loss_and_gradient():
    from minitbt.data import Batch
    from minitbt.distill import distillation_loss
    cfg = replace(config_from_preset("test"), kd_hidden=0.0, kd_attn=0.0, label_smoothing=0.0, kd_temperature=2.5)
    kw = dict(vocab_size=12, d_model=8, n_heads=2, d_ff=16, n_encoder_layers=1, n_decoder_layers=1,
              max_len=8, dropout=0.0)
    student, teacher = build_model(**kw, seed=1).to_dtype(np.float64), build_model(**kw, seed=2).to_dtype(np.float64)
    teacher.eval()
    rng = np.random.default_rng(0)
    tgt = rng.integers(3, 12, (2, 4))
    tgt_out = np.concatenate([tgt[:, 1:], np.array([[2], [0]])], axis=1)          # one padded position
    b = Batch(rng.integers(3, 12, (2, 5)), tgt, tgt_out, np.arange(2))
    T = cfg.kd_temperature
    loss = distillation_loss(student, teacher, b, cfg).item()

    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    zs, zt = student(b.src, b.tgt_in).data, teacher(b.src, b.tgt_in).data
    keep = tgt_out != 0
    ce = -np.take_along_axis(log_softmax(zs), tgt_out[..., None], -1)[..., 0][keep].mean()
    kd = -(np.exp(log_softmax(zt / T)) * log_softmax(zs / T)).sum(-1)[keep].mean()
    assert np.isclose(loss, ce + T * T * kd, rtol=1e-10)
    bias = student.decoder[0].ffn.fc2.bias
    assert gradcheck(lambda bias: distillation_loss(student, teacher, b, cfg), [bias])
    with pytest.raises(ValueError, match="kd-temperature"):
        replace(cfg, kd_temperature=0.0).validate()


def test_terms_with_weight_zero_are_not_computed(monkeypatch):
    """kd_hidden = kd_attn = 0: no MSE is computed and neither model keeps its attention maps or
    hidden states (the FP teacher then runs its fused attention kernel); with the weights back at 1
    both MSE terms are there (two kinds of call: hidden states and attention maps)."""
    from minitbt import distill
    from minitbt.data import Batch
    kw = dict(vocab_size=12, d_model=8, n_heads=2, d_ff=16, n_encoder_layers=1, n_decoder_layers=1,
              max_len=8, dropout=0.0)
    student, teacher = build_model(**kw, seed=1), build_model(**kw, seed=2)
    teacher.eval()
    rng = np.random.default_rng(0)
    b = Batch(rng.integers(3, 12, (2, 5)), rng.integers(3, 12, (2, 4)), rng.integers(3, 12, (2, 4)), np.arange(2))
    calls, recorded = [], []
    real_mse, real_tt = distill.F.mse_loss, distill.teacher_targets

    def spy_tt(*a, **k):
        out = real_tt(*a, **k)
        recorded.append((len(out[1]), len(out[2])))
        return out
    monkeypatch.setattr(distill.F, "mse_loss", lambda *a: calls.append(a[1].shape) or real_mse(*a))
    monkeypatch.setattr(distill, "teacher_targets", spy_tt)
    cfg = config_from_preset("test")
    distill.distillation_loss(student, teacher, b, replace(cfg, kd_hidden=0.0, kd_attn=0.0))
    assert calls == [] and recorded == [(0, 0)]
    assert student.states is None and all(m.attn is None for m in student.attention_modules())
    distill.distillation_loss(student, teacher, b, replace(cfg, kd_hidden=1.0, kd_attn=1.0))
    n_hidden, n_attn = recorded[-1]
    assert n_hidden == 4 and n_attn == 3 and len(calls) == n_hidden + n_attn     # embedding + layer outputs; 3 maps


# ---- --quant-options --------------------------------------------------------------------------------
def test_quant_options_through_training_and_resume(task, tmp_path):
    task_dir, fp = task
    cfg = _cfg(task_dir, tmp_path / "run", quant="1-1-1", init=fp, teacher=fp, max_steps=2, eval_every=2,
               quant_options="lsq_grad_scale=1,elastic_init=code")
    train(cfg, quiet=True)
    model, meta = load_model(str(tmp_path / "run" / "last.npz"))
    assert meta["quant"]["lsq_grad_scale"] is True and meta["quant"]["elastic_init"] == "code"
    q = model.encoder[0].self_attn.p_quant
    assert q.lsq_grad_scale and q.init == "code"
    with pytest.raises(ValueError, match="quant_options"):
        train(replace(cfg, max_steps=4, quant_options="lsq_grad_scale=1"), resume=True, quiet=True,
              allow_change=["max_steps", "quant_options"])
    for bad, match in (("nosuch=1", "quant option"), ("binary_zero=minus", "binary_zero")):
        with pytest.raises(ValueError, match=match):
            replace(cfg, quant_options=bad).validate()
    with pytest.raises(ValueError, match="needs --quant"):
        replace(cfg, quant="").validate()


def test_cli_flags(task, tmp_path, capsys):
    from minitbt.cli import main
    task_dir, fp = task
    out = str(tmp_path / "cli")
    assert main(["train", "--preset", "test", "--task", task_dir, "--out", out, "--init", fp, "--teacher", fp,
                 "--quant", "paretoq-1-1-1", "--quant-options", "lsq_grad_scale=1", "--clip-scales", "separate",
                 "--kd-temperature", "2", "--max-steps", "2", "--eval-every", "2", "--eval-sentences", "2"]) == 0
    _, meta = load_model(os.path.join(out, "last.npz"))
    c = meta["train_config"]
    assert (c["quant_options"], c["clip_scales"], c["kd_temperature"]) == ("lsq_grad_scale=1", "separate", 2.0)
    assert meta["quant"]["weights"] == "seq" and meta["quant"]["lsq_grad_scale"] is True


# ---- multi-step distillation: FP -> 1-1-8 -> 1-1-1 (BiT) -----------------------------------------------
def test_multi_step_distillation(task, tmp_path):
    from minitbt.train import distill_chain
    task_dir, fp = task
    cfg = _cfg(task_dir, tmp_path / "chain", max_steps=3, eval_every=3)
    records = distill_chain(fp, ["1-1-8", "1-1-1"], cfg)
    assert len(records) == 2 and all(np.isfinite(r["valid_loss"]) for r in records)
    first = str(tmp_path / "chain" / "1-1-8" / "best.npz")
    _, meta = load_model(str(tmp_path / "chain" / "1-1-1" / "last.npz"))
    assert meta["train_config"]["teacher"] == first and meta["train_config"]["init"] == first
    teacher, _ = load_model(first)
    assert teacher.quant_recipe.name == "tbt-1-1-8"                  # the 1-1-8 student teaches, quantized
    latent = load_latent_fp(first)                                   # the flags' path: --init 1-1-8 checkpoint
    assert not any(isinstance(m, Q.QuantLinear) for m in latent.modules())
    np.testing.assert_array_equal(latent.embed.weight.data, teacher.embed.weight.data)


# ---- sequence-level distillation data (Kim & Rush 2016) ------------------------------------------------
def test_sequence_kd_task(task, tmp_path):
    from minitbt.data import decode, encode, load_tokenizer
    from minitbt.decode import greedy
    from minitbt.distill import sequence_kd_task
    task_dir, fp = task
    out = str(tmp_path / "rev-seqkd")
    info = sequence_kd_task(fp, task_dir, out, batch_size=16, quiet=True)
    src, tgt = read_split(out, "train")
    src0, ref0 = read_split(task_dir, "train")
    assert src == src0 and info["pairs"] == len(src0) and len(tgt) == len(src0)
    for name in ("valid.source.gz", "valid.target.gz", "test.source.gz", "test.target.gz", "tokenizer.json"):
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(task_dir, name), "rb") as b:
            assert a.read() == b.read(), name
    with open(os.path.join(out, "task.json")) as f:
        meta = json.load(f)
    assert meta["name"] == "rev-seqkd" and meta["kind"] == "translation" and meta["seqkd"]["beam"] == 1
    teacher, _ = load_model(fp)
    tok = load_tokenizer(task_dir)
    empty = 0
    for i in range(len(src0)):                                      # one sentence at a time, no batching
        ids = np.append(encode(tok, [src0[i]])[0][:23], 2)[None, :]
        hyp = " ".join(decode(tok, greedy(teacher, ids, 24)[0]).split())
        empty += not hyp
        assert tgt[i] == (hyp or ref0[i])
    assert info["kept_reference"] == empty
    assert sum(t != r for t, r in zip(tgt, ref0)) > 0               # the teacher is not perfect yet
    assert "bleu" in info["teacher_on_train"]
    with pytest.raises(FileExistsError):
        sequence_kd_task(fp, task_dir, out, quiet=True)
    beam = sequence_kd_task(fp, task_dir, out, beam=2, batch_size=64, force=True, quiet=True)
    assert beam["pairs"] == len(src0)
    with gzip.open(os.path.join(out, "train.target.gz"), "rt") as f:
        assert len(f.read().splitlines()) == len(src0)
    record = train(_cfg(out, tmp_path / "student", max_steps=2, eval_every=2), quiet=True)
    assert np.isfinite(record["valid_loss"])


def test_seqkd_command(task, tmp_path):
    from minitbt.cli import main
    task_dir, fp = task
    out = str(tmp_path / "kd")
    assert main(["seqkd", "--teacher", fp, "--task", task_dir, "--out", out]) == 0
    assert len(read_split(out, "train")[0]) == len(read_split(task_dir, "train")[0])
    assert main(["seqkd", "--teacher", fp, "--task", task_dir, "--out", out]) == 2          # exists: --force
    assert main(["seqkd", "--teacher", fp, "--task", task_dir, "--out", out, "--beam", "0"]) == 2
