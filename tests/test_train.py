"""Training loop, checkpoints, resume, decoding and the command line, on a tiny task made here."""
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitbt import checkpoint
from minitbt.cli import main
from minitbt.data import BOS, EOS, PAD, Seq2SeqData, load_tokenizer, split_sentences
from minitbt.datasets import prepare_user_task
from minitbt.decode import beam_search, greedy
from minitbt.model_io import build_model, load_model
from minitbt.train import config_from_preset, train

WORDS = "the a red blue green small big cat dog bird tree house runs sleeps sings".split()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A small copy-like translation task: source words -> the same words reversed."""
    root = tmp_path_factory.mktemp("task")
    rng = np.random.default_rng(0)
    src = [" ".join(rng.choice(WORDS, rng.integers(2, 7))) for _ in range(300)]
    tgt = [" ".join(reversed(s.split())) for s in src]
    raw = root / "raw"
    raw.mkdir()
    (raw / "train.source").write_text("\n".join(src) + "\n")
    (raw / "train.target").write_text("\n".join(tgt) + "\n")
    out = str(root / "rev")
    prepare_user_task(str(raw), out, kind="translation", vocab_size=60)
    return out


def _cfg(task, out, **kw):
    return config_from_preset("test", task=task, out=str(out), eval_sentences=4, **kw)


def test_batches_respect_budget_and_cover_everything(task):
    data = Seq2SeqData.from_task(task, "train", max_src_len=16, max_tgt_len=16)
    groups = data.batches(max_tokens=120, seed=3)
    seen = np.concatenate(groups)
    assert sorted(seen.tolist()) == list(range(len(data)))
    for g in groups:
        b = data.collate(g)
        assert b.src.shape[0] * max(b.src.shape[1], b.tgt_in.shape[1]) <= 120
        assert (b.tgt_in[:, 0] == BOS).all()
        # tgt_out is tgt_in shifted left, ending in <eos>
        for row in range(len(g)):
            n = int((b.tgt_out[row] != PAD).sum())
            assert b.tgt_out[row, n - 1] == EOS
            np.testing.assert_array_equal(b.tgt_in[row, 1:n], b.tgt_out[row, : n - 1])
    assert data.batches(120, seed=3)[0].tolist() == groups[0].tolist()       # seeded
    assert data.batches(120, seed=4)[0].tolist() != groups[0].tolist()


def test_truncation_is_counted(task):
    data = Seq2SeqData.from_task(task, "train", max_src_len=4, max_tgt_len=4)
    assert data.n_truncated > 0
    assert max(data.src_len) == 4 and max(data.tgt_len) == 4


def test_resume_is_exact(task, tmp_path):
    """N steps straight == k steps, a resume, then N - k steps (weights, optimizer, RNG)."""
    straight = _cfg(task, tmp_path / "a", max_steps=12, eval_every=6)
    train(straight, quiet=True)
    first = _cfg(task, tmp_path / "b", max_steps=12, eval_every=6, max_minutes=1e-9)
    train(first, quiet=True)                                   # stops after one step (time limit)
    partial = checkpoint.load(str(tmp_path / "b" / "last.npz"))[1]["train_state"]["step"]
    assert 0 < partial < 12
    train(_cfg(task, tmp_path / "b", max_steps=12, eval_every=6), resume=True, quiet=True)
    a, _ = load_model(str(tmp_path / "a" / "last.npz"))
    b, _ = load_model(str(tmp_path / "b" / "last.npz"))
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
    log = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["step"] for r in log] == [6, 12] and "bleu" in log[-1]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_and_resume_is_exact(task, tmp_path, monkeypatch, sig):
    """kill PID (SIGTERM) or Ctrl-C (SIGINT) during step 3: the step ends, last.npz is written at
    step 3 (between validations) and train returns; --resume then ends where a straight run does,
    weights bit for bit. The handlers are put back afterwards."""
    import signal
    import minitbt.train as T
    straight = _cfg(task, tmp_path / "a", max_steps=8, eval_every=4)
    train(straight, quiet=True)
    real, calls = T.accumulate_gradients, []

    def step_then_signal(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(getattr(signal, sig))
        return real(*a, **k)
    monkeypatch.setattr(T, "accumulate_gradients", step_then_signal)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    record = train(_cfg(task, tmp_path / "b", max_steps=8, eval_every=4), quiet=True)
    assert record == {"step": 3, "stopped_by": sig}
    assert checkpoint.load(str(tmp_path / "b" / "last.npz"))[1]["train_state"]["step"] == 3
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    calls.clear()                                                  # two signals: the second stops at once

    def step_then_two_signals(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(getattr(signal, sig))
            signal.raise_signal(getattr(signal, sig))
        return real(*a, **k)
    monkeypatch.setattr(T, "accumulate_gradients", step_then_two_signals)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(task, tmp_path / "c", max_steps=8, eval_every=4), quiet=True)
    assert not (tmp_path / "c" / "last.npz").exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    monkeypatch.setattr(T, "accumulate_gradients", real)
    train(_cfg(task, tmp_path / "b", max_steps=8, eval_every=4), resume=True, quiet=True)
    a, _ = load_model(str(tmp_path / "a" / "last.npz"))
    b, _ = load_model(str(tmp_path / "b" / "last.npz"))
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)


def test_refuses_to_overwrite_a_run(task, tmp_path):
    cfg = _cfg(task, tmp_path / "r", max_steps=2, eval_every=2)
    train(cfg, quiet=True)
    before = open(tmp_path / "r" / "last.npz", "rb").read()
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, quiet=True)
    assert open(tmp_path / "r" / "last.npz", "rb").read() == before


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        checkpoint.load(str(tmp_path / "missing.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        checkpoint.load(str(bad))
    good = tmp_path / "good.npz"
    m = build_model(vocab_size=20, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1, max_len=16)
    checkpoint.save(str(good), m.state_dict(), {"model_config": m.config.to_dict()})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(str(truncated))
    mismatched = tmp_path / "mismatch.npz"
    state = m.state_dict()
    state["embed.weight"] = state["embed.weight"][:10]
    checkpoint.save(str(mismatched), state, {"model_config": m.config.to_dict()})
    with pytest.raises(checkpoint.CheckpointError, match="embed.weight"):
        load_model(str(mismatched))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]   # no half-written files


def test_atomic_save_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    checkpoint.save(str(path), {"w": np.ones(3, np.float32)}, {"model_config": {}})
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(str(path), {"w": np.zeros(3, np.float32)}, {"model_config": {}})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]


def test_half_checkpoint_round_trip(tmp_path):
    m = build_model(vocab_size=20, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1, max_len=16)
    checkpoint.save(str(tmp_path / "h.npz"), m.state_dict(), {"model_config": m.config.to_dict()}, half=True)
    m2, _ = load_model(str(tmp_path / "h.npz"))
    w = m.embed.weight.data
    np.testing.assert_allclose(m2.embed.weight.data, w.astype(np.float16).astype(np.float32))
    assert m2.embed.weight.data.dtype == np.float32


def test_greedy_and_beam_agree_with_full_forward(task, tmp_path):
    train(_cfg(task, tmp_path / "g", max_steps=10, eval_every=10), quiet=True)
    model, _ = load_model(str(tmp_path / "g" / "last.npz"))
    data = Seq2SeqData.from_task(task, "test", max_src_len=16, max_tgt_len=16)
    src = data.collate(np.arange(4)).src
    hyps = greedy(model, src, max_len=10)
    for row, h in enumerate(hyps):                 # re-score each greedy output with the full forward
        ids = np.array([[BOS] + h], dtype=np.int32)
        logits = model(src[row: row + 1], ids).data[0]
        assert logits[: len(h)].argmax(-1).tolist() == h[: len(h)]
    beams = beam_search(model, src, beam_size=1, max_len=10)
    assert beams == hyps                           # beam 1 is greedy
    b4 = beam_search(model, src, beam_size=4, max_len=10, min_len=3)
    assert all(len(h) >= 3 for h in b4)


def test_cli_train_eval_translate(task, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", "--preset", "test", "--task", task, "--out", str(out), "--max-steps", "4",
                 "--eval-every", "4", "--eval-sentences", "2"]) == 0
    ck = str(out / "best.npz")
    assert main(["eval", "--model", ck, "--task", task, "--split", "valid", "--limit", "5"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    rec = json.loads(line)
    assert rec["n"] == 5 and "bleu" in rec and os.path.exists(rec["hypotheses"])
    assert main(["translate", "--model", ck, "red cat"]) == 0
    assert main(["translate", "--model", ck, "--beam", "3", "red cat"]) == 0


def test_cli_copy_model_trains_resumes_and_decodes(task, tmp_path, capsys):
    """--copy 1 builds a pointer-generator; it checkpoints, resumes, evaluates (--packed too), starts
    a quantized student, and --init with --copy 1 gives a plain model a fresh copy gate (transfer)."""
    out = tmp_path / "copy"
    args = ["train", "--preset", "test", "--task", task, "--out", str(out), "--eval-every", "2",
            "--eval-sentences", "2", "--copy", "1"]
    assert main(args + ["--max-steps", "2"]) == 0
    model, _ = load_model(str(out / "last.npz"))
    assert model.config.copy and model.copy_gate is not None
    assert main(["train", "--resume", "--out", str(out), "--allow-change", "max_steps", "--max-steps", "4"]) == 0
    assert checkpoint.load(str(out / "last.npz"))[1]["train_state"]["step"] == 4
    capsys.readouterr()
    assert main(["eval", "--model", str(out / "last.npz"), "--task", task, "--split", "valid", "--limit", "3",
                 "--packed"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["n"] == 3
    plain, moved = tmp_path / "plain", tmp_path / "plain+copy"
    assert main(["train", "--preset", "test", "--task", task, "--out", str(plain), "--max-steps", "2",
                 "--eval-every", "2", "--eval-sentences", "2"]) == 0
    assert main(["train", "--preset", "test", "--task", task, "--out", str(moved), "--max-steps", "1",
                 "--eval-every", "1", "--eval-sentences", "2", "--lr", "1e-12", "--init", str(plain / "last.npz"),
                 "--copy", "1"]) == 0
    before, after = load_model(str(plain / "last.npz"))[0], load_model(str(moved / "last.npz"))[0]
    assert before.copy_gate is None and after.copy_gate is not None
    for name, value in before.state_dict().items():   # every weight carried over (lr ~0: unchanged)
        np.testing.assert_allclose(after.state_dict()[name], value, rtol=0, atol=1e-6, err_msg=name)
    student = tmp_path / "copy-1-1-1"                   # a quantized copy student distilled from it
    assert main(["train", "--preset", "test", "--task", task, "--out", str(student), "--max-steps", "2",
                 "--eval-every", "2", "--eval-sentences", "2", "--quant", "1-1-1", "--init", str(out / "last.npz"),
                 "--teacher", str(out / "last.npz")]) == 0
    model, _ = load_model(str(student / "last.npz"))
    assert model.copy_gate is not None and model.quant_recipe.act_bits == 1
    assert main(["summary", "--model", str(student / "last.npz")]) == 0
    assert "copy_gate" in capsys.readouterr().out


def test_batched_generation_keeps_order_and_outputs(task, tmp_path, monkeypatch):
    """The CLI decodes in length-sorted batches; each output must be what that text gives alone,
    written back in the input order."""
    from argparse import Namespace
    import minitbt.decode
    from minitbt.commands import _generate
    train(_cfg(task, tmp_path / "b", max_steps=10, eval_every=10), quiet=True)
    model, _ = load_model(str(tmp_path / "b" / "last.npz"))
    tok = load_tokenizer(task)
    texts = ["red cat runs", "a", "the big blue dog sleeps sings", "tree", "small bird sings"]
    args = Namespace(beam=1, min_len=0)
    batched = _generate(model, tok, texts, args, max_src_len=16, max_len=10, batch_size=2)
    alone = [_generate(model, tok, [t], args, max_src_len=16, max_len=10)[0] for t in texts]
    assert batched == alone
    # the order itself: a "decoder" that copies its source gives back each input in its place
    copy = lambda m, src, max_len, min_len=0: [[int(i) for i in row if i > EOS] for row in src]  # noqa: E731
    monkeypatch.setattr(minitbt.decode, "greedy", copy)
    assert _generate(model, tok, texts, args, max_src_len=16, max_len=10, batch_size=2) == texts
    # --split-sentences: each sentence decoded alone, a text's outputs joined in order
    split = Namespace(beam=1, min_len=0, split_sentences=True)
    paragraphs = ["red cat runs. a tree! small bird sings", "tree", "the big blue dog sleeps? sings."]
    copied = [" ".join(_generate(model, tok, split_sentences(p), args, 16, 10)) for p in paragraphs]
    rows = []
    monkeypatch.setattr(minitbt.decode, "greedy", lambda m, src, max_len, min_len=0: rows.append(len(src)) or
                        copy(m, src, max_len))
    assert _generate(model, tok, paragraphs, split, max_src_len=16, max_len=10, batch_size=2) == copied
    assert sum(rows) == 6                          # 3 + 1 + 2 sentences, each its own source row
    monkeypatch.undo()
    one_by_one = [" ".join(o for o in _generate(model, tok, split_sentences(p), args, 16, 10) if o)
                  for p in paragraphs]
    assert _generate(model, tok, paragraphs, split, max_src_len=16, max_len=10) == one_by_one


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["red", "cat", "e.g.", "i.e.", "2.0", "runs.", "why?", "yes!", "...", " ", "\t"]),
                max_size=12))
def test_split_sentences_keeps_every_word(words):
    """The sentences hold the text's words in order; each but the last ends with . ! or ?"""
    text = " ".join(words)
    pieces = split_sentences(text)
    assert " ".join(pieces).split() == text.split()
    assert all(p.rstrip()[-1] in ".!?" for p in pieces[:-1])
    assert all(not p.endswith(("e.g.", "i.e.")) for p in pieces[:-1])


def test_split_sentences_examples():
    assert split_sentences("Run it. It works! Why?") == ["Run it.", "It works!", "Why?"]
    assert split_sentences("Use e.g. vim or i.e. nano. Version 2.0 is out") == ["Use e.g. vim or i.e. nano.",
                                                                               "Version 2.0 is out"]
    assert split_sentences("no sentence end") == ["no sentence end"]


def test_threads_flag_resizes_the_blas_pool(monkeypatch, capsys):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "")                  # restored after the test
    from minitbt.cli import _set_threads
    before = threadpoolctl.threadpool_info()
    assert before, "NumPy's BLAS should be visible to threadpoolctl"
    try:
        _set_threads(1)
        assert all(p["num_threads"] == 1 for p in threadpoolctl.threadpool_info())
    finally:
        for p in before:
            threadpoolctl.threadpool_limits(p["num_threads"], user_api=p["user_api"])
    with pytest.raises(SystemExit) as exc:            # argparse's error: exit status 2, a message
        main(["--threads", "0", "translate", "hello"])
    assert exc.value.code == 2 and "--threads must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["translate", "--model", "nope.npz", "hello"], "not found"),
    (["eval", "--model", "nope.npz", "--task", "data/no-such-task"], "task folder not found"),
    (["train", "--task", "data/no-such-task", "--out", "x"], "task folder not found"),
])
def test_cli_bad_input(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_empty_text_and_corrupt_model(tmp_path, capsys, task):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 100)
    assert main(["translate", "--model", str(bad), "hello"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["translate", "--model", str(bad), "   "]) == 2
    assert "empty" in capsys.readouterr().err


def test_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_tokenizer(str(tmp_path))


def test_baseline_command_scores_the_lead(task, capsys):
    from minitbt import metrics
    from minitbt.datasets import read_split
    assert main(["baseline", "--task", task, "--split", "valid", "--words", "2"]) == 0
    got = json.loads(capsys.readouterr().out)
    src, tgt = read_split(task, "valid")
    assert metrics.lead(["a b c", "d"], 2) == ["a b", "d"] and metrics.lead(["a b c"], 0) == ["a b c"]
    assert got["baseline"] == "lead-2" and got["bleu"] == metrics.bleu([" ".join(s.split()[:2]) for s in src], tgt)["bleu"]
    assert main(["baseline", "--task", task, "--words", "-1"]) == 2


def test_accumulated_micro_batches_equal_one_big_batch(task):
    """--accumulate N: N micro-batches give the gradient (and the AdamW step) of their union."""
    from minitbt import optim
    from minitbt.train import accumulate_gradients
    cfg = _cfg(task, "unused", dropout=0.0)
    data = Seq2SeqData.from_task(task, "train", max_src_len=16, max_tgt_len=16)
    idx = data.batches(200, shuffle=False)
    parts = [idx[0], idx[1], idx[2]]
    models = [build_model(vocab_size=60, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1,
                          dropout=0.0, max_len=17, seed=1) for _ in range(2)]
    for m in models:
        m.train()
    opts = [optim.SGD(m.parameters(), lr=0.1) for m in models]   # (AdamW would amplify the ~1e-9 noise of
    small = accumulate_gradients(models[0], [data.collate(i) for i in parts], cfg)
    big = accumulate_gradients(models[1], [data.collate(np.concatenate(parts))], cfg)
    assert small == pytest.approx(big, rel=1e-5)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    for o in opts:                                                  # gradients that are 0 in exact arithmetic)
        o.step()
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-5, atol=1e-7)


def test_accumulate_trains_and_logs_csv(task, tmp_path):
    import csv
    record = train(_cfg(task, tmp_path, accumulate=2, max_steps=4, eval_every=2), quiet=True)
    assert record["step"] == 4
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f]
    assert len(rows) == len(logged) == 2
    assert [float(r["valid_loss"]) for r in rows] == [r["valid_loss"] for r in logged]
    assert main(["train", "--preset", "test", "--task", task, "--out", str(tmp_path / "x"), "--accumulate", "0"]) == 2
