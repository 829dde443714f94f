"""Bad input gets one clear line and exit code 2, never a traceback, a silent wrong answer or a
half-written file (docs/training.md, "Bad input"). The command-line cases run the real
``minitbt`` command in a subprocess, as a user would."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minitbt import checkpoint
from minitbt.datasets import prepare_user_task, read_split
from minitbt.model_io import load_model, save_model
from minitbt.train import TrainingDiverged, check_resume, config_from_preset, train

WORDS = "the a red blue green small big cat dog bird tree house runs sleeps sings".split()


def run_cli(*argv, stdin=b"", timeout=120):
    """Run `python -m minitbt.cli ARGV` and return (exit code, stdout, stderr)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "minitbt.cli", *map(str, argv)], input=stdin,
                       capture_output=True, timeout=timeout, env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def assert_clean_error(rc, err, *words):
    """Exit 2, no traceback, and one error line that contains each of ``words``."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if "error" in l]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])


def _raw(root, n=120, seed=0, shift=0):
    rng = np.random.default_rng(seed)
    src = [" ".join(rng.choice(WORDS[shift:], rng.integers(2, 7))) for _ in range(n)]
    raw = root / f"raw{seed}"
    raw.mkdir()
    (raw / "train.source").write_text("".join(s + "\n" for s in src))
    (raw / "train.target").write_text("".join(" ".join(reversed(s.split())) + "\n" for s in src))
    return raw


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    out = str(root / "rev")
    prepare_user_task(str(_raw(root)), out, kind="translation", vocab_size=60)
    return out


@pytest.fixture(scope="module")
def model(task, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "m"
    train(config_from_preset("test", task=task, out=str(out), max_steps=4, eval_every=4, eval_sentences=2),
          quiet=True)
    return str(out / "last.npz")


# ---- prepare: never misaligned, never half-written ----------------------------------------------
@pytest.mark.parametrize("short", ["source", "target"])
def test_prepare_refuses_unequal_sides(tmp_path, short):
    raw = _raw(tmp_path)
    path = raw / f"train.{short}"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    rc, _, err = run_cli("prepare", raw, "--out", tmp_path / "t")
    assert_clean_error(rc, err, "train.source", "train.target", "120", "119")
    assert not (tmp_path / "t").exists()


def test_prepare_refuses_an_existing_task_then_replaces_it_with_force(tmp_path, task):
    out = tmp_path / "t"
    assert run_cli("prepare", _raw(tmp_path), "--out", out)[0] == 0
    before = read_split(str(out), "train")
    rc, _, err = run_cli("prepare", _raw(tmp_path, seed=1), "--out", out)
    assert_clean_error(rc, err, "exists", "--force")
    assert read_split(str(out), "train") == before
    assert run_cli("prepare", tmp_path / "raw1", "--out", out, "--force")[0] == 0
    assert read_split(str(out), "train") != before
    assert sorted(os.listdir(tmp_path)) == ["raw0", "raw1", "t"]          # nothing left beside it


def test_prepare_interrupted_leaves_the_old_task_whole(tmp_path, monkeypatch):
    from minitbt import datasets
    out = tmp_path / "t"
    prepare_user_task(str(_raw(tmp_path)), str(out), vocab_size=60)
    files = {n: (out / n).read_bytes() for n in os.listdir(out)}

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(datasets, "train_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_user_task(str(_raw(tmp_path, seed=1)), str(out), vocab_size=60, force=True)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == files
    assert sorted(os.listdir(tmp_path)) == ["raw0", "raw1", "t"]


def test_read_split_refuses_misaligned_task(tmp_path, task):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(task, bad)
    with gzip.open(bad / "valid.target.gz", "wt") as f:
        f.write("one line\n")
    rc, _, err = run_cli("train", "--preset", "test", "--task", bad, "--out", tmp_path / "o")
    assert_clean_error(rc, err, "valid", "sources but 1 targets")


# ---- NaN never becomes a checkpoint -------------------------------------------------------------
def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(task, tmp_path, monkeypatch):
    from minitbt import train as T
    real = T.compute_loss
    calls = {"n": 0}

    def loss_that_diverges(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        if calls["n"] == 7:
            loss.data = np.array(np.nan, dtype=loss.data.dtype)
        return loss
    monkeypatch.setattr(T, "compute_loss", loss_that_diverges)
    cfg = config_from_preset("test", task=task, out=str(tmp_path), max_steps=20, eval_every=5, eval_sentences=2)
    with pytest.raises(TrainingDiverged, match="step 7.*last good checkpoint.*step 5"):
        train(cfg, quiet=True)
    model, meta = load_model(str(tmp_path / "last.npz"))
    assert meta["train_state"]["step"] == 5
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_nan_weights_are_neither_saved_nor_loaded(model, tmp_path):
    m, meta = load_model(model)
    m.parameters()[0].data[0, 0] = np.nan
    with pytest.raises(checkpoint.CheckpointError, match="non-finite"):
        save_model(str(tmp_path / "nan.npz"), m)
    assert not (tmp_path / "nan.npz").exists()
    state, meta, _ = checkpoint.load(model)
    arrays = {f"model/{k}": v for k, v in state.items()}
    name = next(iter(state))
    arrays[f"model/{name}"] = np.full_like(state[name], np.nan)
    arrays["__meta__"] = np.frombuffer(json.dumps({"format": checkpoint.FORMAT, **meta}).encode(), np.uint8)
    np.savez(tmp_path / "nan.npz", **arrays)
    rc, out, err = run_cli("translate", "--model", tmp_path / "nan.npz", "the cat")
    assert_clean_error(rc, err, "non-finite", name)
    assert out == ""


def test_lr_nan_is_refused_before_any_work(task, tmp_path):
    rc, _, err = run_cli("train", "--preset", "test", "--task", task, "--out", tmp_path / "o", "--lr", "nan")
    assert_clean_error(rc, err, "--lr")
    assert not (tmp_path / "o").exists()


def test_stale_temporaries_are_removed_on_start(model, tmp_path):
    import shutil
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model, run / "last.npz")
    (run / ".tmp-abc123.npz").write_bytes(b"PK half a file")
    cfg = checkpoint.load(model)[1]["train_config"]
    train(config_from_preset("test", **{**cfg, "out": str(run), "max_steps": 5, "max_minutes": 0.0}),
          resume=True, quiet=True, allow_change=["max_steps"])
    assert not (run / ".tmp-abc123.npz").exists()


def test_sigint_gives_one_line(task, tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    p = subprocess.Popen([sys.executable, "-m", "minitbt.cli", "train", "--preset", "test", "--task", task,
                          "--out", str(tmp_path / "o"), "--max-steps", "100000", "--eval-every", "100000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 60
    while not (tmp_path / "o").exists() and time.time() < deadline:      # started training
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    err = err.decode()
    assert p.returncode == 130 and "Traceback" not in err
    assert "minitbt train: interrupted (SIGINT)" in err and "continue with --resume" in err
    assert sum("minitbt train:" in line for line in err.splitlines()) == 1     # one line (besides the progress bar)
    assert (tmp_path / "o" / "last.npz").exists()                                # and the run is saved


# ---- settings are never silently changed ----------------------------------------------------------
def test_resume_refuses_changed_settings(model, task, tmp_path):
    import shutil
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model, run / "last.npz")
    rc, _, err = run_cli("train", "--resume", "--out", run, "--lr", "0.1")
    assert_clean_error(rc, err, "lr", "--allow-change lr")
    rc, _, err = run_cli("train", "--resume", "--out", run, "--max-steps", "6")
    assert_clean_error(rc, err, "max_steps: 4 -> 6")
    rc, _, err = run_cli("train", "--resume", "--out", run, "--seed", "3", "--allow-change", "seed")
    assert_clean_error(rc, err, "seed", "cannot change")
    rc, out, err = run_cli("train", "--resume", "--out", run, "--max-steps", "6", "--allow-change", "max_steps")
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["step"] == 6


def test_resume_refuses_a_teacher_rewritten_in_place(model, task, tmp_path):
    """Same --teacher path, other weights (the teacher's own run was extended): refused by name."""
    import shutil
    teacher, run = tmp_path / "teacher.npz", tmp_path / "run"
    shutil.copy(model, teacher)
    common = ["--task", task, "--out", run, "--teacher", teacher, "--quant", "2-2-8", "--eval-every", "2",
              "--eval-sentences", "2"]
    rc, _, err = run_cli("train", "--preset", "test", "--max-steps", "2", *common)
    assert rc == 0, err
    shutil.copy(run / "last.npz", teacher)             # a different model at the same path
    rc, _, err = run_cli("train", "--resume", "--out", run, "--max-steps", "3", "--allow-change", "max_steps")
    assert_clean_error(rc, err, "teacher", "changed", "--allow-change teacher")
    rc, out, err = run_cli("train", "--resume", "--out", run, "--max-steps", "3",
                           "--allow-change", "max_steps,teacher")
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["step"] == 3


def test_resume_takes_the_saved_settings(model):
    saved = config_from_preset("test", **checkpoint.load(model)[1]["train_config"])
    check_resume(saved, saved)                                        # the same: fine
    with pytest.raises(ValueError, match="teacher"):
        check_resume(saved, config_from_preset("test", **{**vars(saved), "teacher": "x.npz"}))


def test_init_and_teacher_with_another_tokenizer_are_refused(model, tmp_path):
    other = tmp_path / "other"
    prepare_user_task(str(_raw(tmp_path, seed=5, shift=3)), str(other), vocab_size=50)
    for flag in ("--init", "--teacher"):
        extra = ["--quant", "2-2-8"] if flag == "--teacher" else []
        rc, _, err = run_cli("train", "--preset", "test", "--task", other, "--out", tmp_path / flag.strip("-"),
                             flag, model, *extra)
        assert_clean_error(rc, err, flag, "tokenizer")


def test_a_checkpoint_knows_its_task(model, tmp_path):
    state, meta, _ = checkpoint.load(model)
    checkpoint.save(str(tmp_path / "summ.npz"), state, {**meta, "task": {"name": "x", "kind": "summarization"}})
    rc, _, err = run_cli("translate", "--model", tmp_path / "summ.npz", "the cat")
    assert_clean_error(rc, err, "summarization model", "minitbt summarize")
    rc, _, err = run_cli("summarize", "--model", model, "the cat")
    assert_clean_error(rc, err, "translation model", "minitbt translate")


def test_user_defined_quantizer_is_not_saved_as_something_else(model, tmp_path):
    from minitbt.model_io import quantize
    from minitbt.quant import ElasticQuantizer
    from minitbt.quant.layers import QuantLinear
    q = quantize(load_model(model)[0], "2-2-8")
    save_model(str(tmp_path / "ok.npz"), q)                          # the recipe rebuilds it: fine
    layer = next(m for _, m in q.named_modules() if isinstance(m, QuantLinear))
    layer.input_quantizer = ElasticQuantizer(4, signed=True)
    with pytest.raises(ValueError, match="cannot save this model.*ElasticQuantizer"):
        save_model(str(tmp_path / "custom.npz"), q)
    assert not (tmp_path / "custom.npz").exists()


# ---- text input ----------------------------------------------------------------------------------
def test_text_input(model):
    rc, _, err = run_cli("translate", "--model", model, stdin=b"the cat \xff\xfe runs\n")
    assert_clean_error(rc, err, "standard input is not UTF-8")
    rc, spaced, err = run_cli("translate", "--model", model, stdin=b"  the\tcat   runs \n")
    rc2, plain, _ = run_cli("translate", "--model", model, stdin=b"the cat runs\n")
    assert rc == rc2 == 0 and spaced == plain
    rc, out, err = run_cli("translate", "--model", model, " ".join(["cat"] * 200))
    assert rc == 0 and "warning: input 1 has 200 tokens; the model reads only its first 23" in err


# ---- option values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("opts, words", [
    (["--beam", "0"], ["--beam"]), (["--beam", "-1"], ["--beam"]), (["--beam", "8000"], ["--beam", "64"]),
    (["--max-len", "0"], ["--max-len"]), (["--max-len", "-1"], ["--max-len"]),
    (["--max-len", "100000"], ["position table"]), (["--min-len", "30"], ["--min-len 30"]),
    (["--length-penalty", "nan"], ["--length-penalty"]),
])
def test_decoding_options(model, opts, words):
    rc, out, err = run_cli("translate", "--model", model, *opts, "the cat")
    assert_clean_error(rc, err, *words)
    assert out == ""


@pytest.mark.parametrize("opts, words", [
    (["--eval-every", "0"], ["--eval-every"]), (["--lr", "-1"], ["--lr"]), (["--max-steps", "0"], ["--max-steps"]),
    (["--decay", "bogus"], ["--decay"]), (["--quant", "bogus"], ["bogus"]), (["--n-heads", "0"], ["--n-heads"]),
    (["--dropout", "1.5"], ["--dropout"]), (["--preset", "huge"], ["huge"]),
    (["--allow-change", "lr"], ["--allow-change"]),
])
def test_training_options_are_checked_before_the_data_loads(tmp_path, opts, words):
    rc, _, err = run_cli("train", "--task", tmp_path / "no-task", "--out", tmp_path / "o", *opts)
    assert_clean_error(rc, err, *words)
    assert not (tmp_path / "o").exists()


def test_empty_split(task, tmp_path):
    import shutil
    empty = tmp_path / "empty"
    shutil.copytree(task, empty)
    for side in ("source", "target"):
        with gzip.open(empty / f"valid.{side}.gz", "wt"):
            pass
    rc, _, err = run_cli("train", "--preset", "test", "--task", empty, "--out", tmp_path / "o")
    assert_clean_error(rc, err, "valid split is empty")


def test_output_paths_are_checked_before_any_work(model, task, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    rc, _, err = run_cli("train", "--preset", "test", "--task", task, "--out", a_file)
    assert_clean_error(rc, err, "--out", "not a folder")
    rc, _, err = run_cli("train", "--preset", "test", "--task", task, "--out", a_file / "sub")
    assert_clean_error(rc, err, "--out")
    rc, _, err = run_cli("eval", "--model", model, "--task", task, "--hyp-out", tmp_path / "no" / "h.txt")
    assert_clean_error(rc, err, "--hyp-out", "does not exist")
    rc, _, err = run_cli("export", "--model", model, "--out", tmp_path)
    assert_clean_error(rc, err, "--out", "is a folder")


# ---- checkpoint headers ------------------------------------------------------------------------------
def _with_header(model, tmp_path, edit):
    state, meta, _ = checkpoint.load(model)
    header = edit({"format": checkpoint.FORMAT, "version": 1, **meta})
    arrays = {f"model/{k}": v for k, v in state.items()}
    arrays["__meta__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    path = tmp_path / "edited.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("edit, words", [
    (lambda h: [1, 2], ["JSON object"]),
    (lambda h: "a string", ["JSON object"]),
    (lambda h: {**h, "model_config": {**h["model_config"], "n_heads": 0}}, ["n_heads"]),
    (lambda h: {**h, "quant": {"embed_bits": 2, "colour": "red"}}, ["quant", "colour"]),
    (lambda h: {**h, "quant": {"weights": "nope"}}, ["weight family", "nope"]),
    (lambda h: {**h, "tokenizer": "{not json"}, ["tokenizer"]),
    (lambda h: {**h, "train_config": "lr=1"}, ["train_config"]),
    (lambda h: {**h, "model_config": {**h["model_config"], "d_model": "big"}}, ["d_model"]),
])
def test_bad_headers(model, tmp_path, edit, words):
    rc, _, err = run_cli("translate", "--model", _with_header(model, tmp_path, edit), "the cat")
    assert_clean_error(rc, err, *words)


def test_a_text_file_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("just some notes\n")
    rc, _, err = run_cli("translate", "--model", text, "the cat")
    assert_clean_error(rc, err, "not a minitbt checkpoint")
    assert "allow_pickle" not in err


# ---- fuzzing: random bytes, random headers, random option values ---------------------------------------
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 62, 2 ** 62) | st.floats(allow_nan=False)
                    | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(blob=st.one_of(st.binary(max_size=600), st.binary(max_size=600).map(lambda b: b"PK\x03\x04" + b)))
def test_fuzz_loader_with_random_bytes(tmp_path, blob):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(blob)
    with pytest.raises(checkpoint.CheckpointError):
        load_model(str(path))


@FUZZ
@given(section=st.sampled_from(["", "model_config", "quant", "train_config", "task"]),
       key=st.one_of(st.sampled_from(["n_heads", "d_model", "vocab_size", "max_len", "weights", "embed_bits",
                                      "lr", "eval_every", "kind", "tokenizer", "packed", "train_state"]),
                     st.text(max_size=6)),
       value=JSON)
def test_fuzz_loader_with_random_headers(model, tmp_path, section, key, value):
    def edit(h):
        if not section:
            return {**h, key: value}
        inner = h.get(section) if isinstance(h.get(section), dict) else {}
        return {**h, section: {**inner, key: value}}
    path = _with_header(model, tmp_path, edit)
    try:
        load_model(str(path))              # a mutation may leave a valid header: then it loads
    except checkpoint.CheckpointError:
        pass


@FUZZ
@given(opt=st.sampled_from(["--beam", "--max-len", "--min-len", "--length-penalty"]),
       value=st.one_of(st.integers(-10 ** 6, 10 ** 6).map(str), st.floats().map(str), st.text(max_size=5)))
def test_fuzz_decoding_option_values(model, capsys, opt, value):
    from minitbt.cli import main
    try:
        rc = main(["translate", "--model", model, f"{opt}={value}", "the cat"])
    except SystemExit as exc:             # argparse: not a number
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc in (0, 2) and "Traceback" not in err
    assert ("error" in err) == (rc == 2)
    if rc == 2:
        assert out == ""                  # nothing half-done on standard output


@FUZZ
@given(opt=st.sampled_from(["--lr", "--eval-every", "--max-steps", "--warmup", "--dropout", "--decay", "--quant",
                            "--batch-tokens", "--label-smoothing", "--clip", "--n-heads", "--method"]),
       value=st.one_of(st.integers(-10 ** 9, 10 ** 9).map(str), st.floats().map(str), st.text(max_size=8)))
def test_fuzz_training_option_values(tmp_path, capsys, opt, value):
    from minitbt.cli import main
    try:
        rc = main(["train", "--task", str(tmp_path / "no-such-task"), "--out", str(tmp_path / "o"), f"{opt}={value}"])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "error" in err
