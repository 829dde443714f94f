"""The training entry point: the loop, periodic validation, checkpoints, resume (options: config.py).

    python -m minitbt.cli train --preset tiny --task data/ddtp-en-de --out runs/tiny

One step: a length-bucketed batch -> logits -> loss (label-smoothed CE, or CE + distillation
from a frozen teacher when training a quantized student) -> backward -> clip -> AdamW.
Checkpoints (``<out>/last.npz``, ``<out>/best.npz``) hold weights, optimizer moments, both
configs, the step, the position in the epoch and the dropout RNG, so ``--resume`` continues
bit for bit. Every validation appends a line to ``<out>/metrics.jsonl`` and a row to ``<out>/metrics.csv``.
SIGTERM (``kill PID``) or Ctrl-C ends the step in progress, writes ``<out>/last.npz`` and returns, so a
run stopped by hand (the end of a working day) loses nothing; ``--resume`` continues it bit for bit.
``accumulate = N`` takes N micro-batches per optimizer step (``accumulate_gradients``).
"""
import csv
import json
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, replace

import numpy as np

from minitbt import checkpoint, metrics, optim
from minitbt import functional as F
from minitbt.config import PRESETS, TrainConfig, config_from_preset  # noqa: F401  (minitbt.train's API too)
from minitbt.data import PAD, Seq2SeqData, decode, load_tokenizer
from minitbt.datasets import task_info
from minitbt.decode import greedy
from minitbt.distill import distillation_loss
from minitbt.malloc import keep_freed_memory
from minitbt.model_io import build_model, load_latent_fp, load_model, model_meta, quantize, with_copy_gate
from minitbt.run_checks import (FIXED_ON_RESUME, FREE_ON_RESUME, TrainingDiverged, check_out_dir,  # noqa: F401
                                check_resume, check_same_teacher, check_vocabulary, saved_config,
                                weights_fingerprint)
from minitbt.tensor import no_grad


def compute_loss(model, batch, cfg: TrainConfig, teacher=None):
    """Label-smoothed CE; with a teacher, the TBT distillation loss (minitbt.distill)."""
    if teacher is not None:
        return distillation_loss(model, teacher, batch, cfg)
    logits = model(batch.src, batch.tgt_in)                               # (B, T, V)
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), batch.tgt_out.reshape(-1),
                           ignore_index=PAD, label_smoothing=cfg.label_smoothing)


def accumulate_gradients(model, batches, cfg: TrainConfig, teacher=None) -> float:
    """Backward over micro-batches so that their gradients add up to one batch's.

    The loss is a mean over the target tokens, so one batch made of micro-batches i with n_i tokens has
        L = sum_i (n_i / n) L_i,   n = sum_i n_i,   and   dL/dtheta = sum_i (n_i / n) dL_i/dtheta:
    each micro-batch's loss is weighted by its share of the tokens and backpropagated; the gradients
    accumulate in ``.grad``. Equal to one batch N times larger up to float rounding (exactly the same
    sums in another order) when dropout is off; with dropout the masks differ. With a teacher, the
    distillation terms are weighted the same way. Returns L."""
    n = sum(b.n_tokens for b in batches)
    total = 0.0
    for b in batches:
        loss = compute_loss(model, b, cfg, teacher)
        share = b.n_tokens / n
        (loss if len(batches) == 1 else loss * share).backward()
        total += share * loss.item()
    return total


def metric_sample(n_split: int, n: int) -> np.ndarray:
    """min(n, n_split) indices spread evenly over a split of n_split sentences."""
    n = min(n, n_split)
    return np.unique(np.linspace(0, n_split - 1, n).round().astype(int)) if n > 0 else np.zeros(0, int)


def validate(model, data: Seq2SeqData, tokenizer, kind: str, cfg: TrainConfig, n_sentences: int) -> dict:
    """Validation loss (CE without smoothing) on the whole split; metric on n sentences spread evenly
    over it (sentences 0, k, 2k, ...: a split's first sentences can all be short)."""
    model.eval()
    total, count = 0.0, 0
    with no_grad():
        for idx in data.batches(cfg.batch_tokens, shuffle=False):
            b = data.collate(idx)
            logits = model(b.src, b.tgt_in)
            n = b.n_tokens
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b.tgt_out.reshape(-1),
                                     ignore_index=PAD).item() * n
            count += n
    hyps, pick = [], metric_sample(len(data), n_sentences)
    for lo in range(0, len(pick), 32):
        b = data.collate(pick[lo: lo + 32])
        hyps += [decode(tokenizer, ids) for ids in greedy(model, b.src, max_len=cfg.max_tgt_len)]
    model.train()
    scores = metrics.score(kind, hyps, [data.targets[i] for i in pick])
    return {"valid_loss": round(total / max(count, 1), 4), **{k: v for k, v in scores.items() if k != "bleu_signature"}}


def _progress(total, initial):
    try:
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, dynamic_ncols=True, mininterval=1.0)
    except ImportError:  # tqdm is a dependency; keep training without it anyway
        return None


@contextmanager
def _stop_requests():
    """A dict whose "signal" becomes the name of a SIGTERM or SIGINT received inside the block
    (instead of the default: die, or KeyboardInterrupt); a second one raises KeyboardInterrupt
    (stop at once, as before). The handlers are put back on exit.
    Outside the main thread (where Python cannot install handlers) the signals keep their default."""
    asked = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield asked
        return

    def handler(signum, frame):
        if asked["signal"]:                            # the second one: stop now, without saving
            raise KeyboardInterrupt
        asked["signal"] = signal.Signals(signum).name
    before = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield asked
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False, allow_change=()) -> dict:
    """Train as configured; returns the last validation record. When a SIGTERM or SIGINT stopped
    it (last.npz written), the record has "stopped_by": "SIGTERM" or "SIGINT" (between validations
    it is {"step": ..., "stopped_by": ...})."""
    keep_freed_memory()              # a step's large arrays reuse freed memory (minitbt/malloc.py)
    with _stop_requests() as asked:
        return _train(cfg, resume, quiet, allow_change, asked)


def _train(cfg, resume, quiet, allow_change, asked) -> dict:
    cfg.validate()
    info = task_info(cfg.task)
    tokenizer = load_tokenizer(cfg.task)
    last_path, best_path = os.path.join(cfg.out, "last.npz"), os.path.join(cfg.out, "best.npz")
    log_path = os.path.join(cfg.out, "metrics.jsonl")
    if resume:
        check_resume(saved_config(cfg.out), cfg, allow_change, last_path)
    elif os.path.exists(last_path):
        raise FileExistsError(f"{last_path} exists: pass --resume to continue it, or choose another --out")
    check_out_dir(cfg.out)
    stale = checkpoint.clean_stale_temporaries(cfg.out)
    if stale and not quiet:
        print(f"removed {len(stale)} unfinished checkpoint file(s) in {cfg.out} left by an interrupted save")
    train_data = Seq2SeqData.from_task(cfg.task, "train", tokenizer, cfg.max_src_len, cfg.max_tgt_len)
    valid_data = Seq2SeqData.from_task(cfg.task, "valid", tokenizer, cfg.max_src_len, cfg.max_tgt_len)
    for split, data in (("train", train_data), ("valid", valid_data)):
        if len(data) == 0:
            raise ValueError(f"{cfg.task}: the {split} split is empty")
    if not quiet:
        print(f"{info['name']} ({info['kind']}): {len(train_data)} train / {len(valid_data)} valid pairs; "
              f"truncated to {cfg.max_src_len}/{cfg.max_tgt_len} tokens: {train_data.n_truncated} train examples")

    teacher = None
    if cfg.teacher:
        teacher, tmeta = load_model(cfg.teacher)
        check_vocabulary(cfg.teacher, tmeta, tokenizer, teacher.config.vocab_size, "teacher")
        teacher.eval()
    if resume:
        model, meta, opt_state = load_model(last_path, with_optimizer=True)
        state = meta["train_state"]
    else:
        model, opt_state, state = _initial_model(cfg, tokenizer), None, None
    model.train()
    opt = optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    if state is None:
        state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "train_seconds": 0.0, "best": None}
    else:
        model.rng.bit_generator.state = state["rng"]
    if teacher is not None:                           # runs from before the check have no fingerprint
        fingerprint = weights_fingerprint(teacher)
        check_same_teacher(state.get("teacher_weights"), fingerprint, cfg.teacher, allow_change)
        state["teacher_weights"] = fingerprint
    scales = ()                                       # parameters kept out of the global clip
    if cfg.quant:
        from minitbt.quant import attach_lat_curvature, quantizer_parameters
        attach_lat_curvature(model, opt)              # loss-aware ternarization reads Adam's v (if used)
        if cfg.clip_scales != "global":
            scales = quantizer_parameters(model)

    def save(path):
        state["rng"] = model.rng.bit_generator.state
        checkpoint.save(path, model.state_dict(), {**model_meta(model), "train_config": asdict(cfg),
                                                   "train_state": state, "task": info,
                                                   "tokenizer": tokenizer.to_str()}, opt.state_dict())

    os.makedirs(cfg.out, exist_ok=True)
    bar = None if quiet else _progress(cfg.max_steps, state["step"])
    record, t_last, tokens, losses = {}, time.perf_counter(), 0, []
    saved_step = state["step"] if resume else None
    epoch_batches = train_data.batches(cfg.batch_tokens, seed=cfg.seed + state["epoch"])
    while state["step"] < cfg.max_steps:
        if cfg.max_minutes and state["train_seconds"] >= 60 * cfg.max_minutes:
            break
        if asked["signal"]:                               # stopped by hand: checkpoint below, then return
            break
        micro = []
        for _ in range(cfg.accumulate):
            if state["batch_in_epoch"] >= len(epoch_batches):
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
                epoch_batches = train_data.batches(cfg.batch_tokens, seed=cfg.seed + state["epoch"])
            micro.append(train_data.collate(epoch_batches[state["batch_in_epoch"]]))
            state["batch_in_epoch"] += 1
        opt.lr = optim.lr_schedule(state["step"], cfg.lr, cfg.warmup, cfg.max_steps, cfg.decay)
        opt.zero_grad()
        loss = accumulate_gradients(model, micro, cfg, teacher)
        grad_norm = optim.clip_grad_norm(opt.params, cfg.clip, apart=scales,
                                         apart_max_norm=cfg.clip if cfg.clip_scales == "separate" else None)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):    # before the weights change
            kept = (f"the last good checkpoint, {last_path}, is from step {saved_step}" if saved_step is not None
                    else "no checkpoint was written")
            raise TrainingDiverged(f"step {state['step'] + 1}: the loss is {loss} and the gradient norm "
                                   f"{grad_norm}: training diverged (try a lower --lr); stopped, {kept}")
        opt.step()
        state["step"] += 1
        tokens += sum(b.n_tokens for b in micro)
        losses.append(loss)
        now = time.perf_counter()
        state["train_seconds"] += now - t_last
        t_last = now
        if bar is not None and state["step"] % cfg.log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-cfg.log_every:]):.3f}", lr=f"{opt.lr:.2e}",
                            tok_s=f"{tokens / max(state['train_seconds'], 1e-9):.0f}", refresh=False)
            bar.update(cfg.log_every)
        done = state["step"] >= cfg.max_steps or (cfg.max_minutes and state["train_seconds"] >= 60 * cfg.max_minutes)
        if state["step"] % cfg.eval_every == 0 or done:
            record = {"step": state["step"], "minutes": round(state["train_seconds"] / 60, 2),
                      "train_loss": round(float(np.mean(losses)), 4), "lr": opt.lr,
                      **validate(model, valid_data, tokenizer, info["kind"], cfg, cfg.eval_sentences)}
            losses = []
            key = "bleu" if info["kind"] == "translation" else "rougeL"
            if state["best"] is None or record[key] > state["best"]:
                state["best"] = record[key]
                save(best_path)
            save(last_path)
            saved_step = state["step"]
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            _append_csv(os.path.join(cfg.out, "metrics.csv"), record)
            if bar is not None:
                bar.write(json.dumps(record))
            t_last = time.perf_counter()                  # validation time is not training time
    if bar is not None:
        bar.close()
    if not record or record["step"] != state["step"]:     # stopped between evals (time limit, signal)
        save(last_path)
    if asked["signal"]:                                    # the caller says it (the CLI: one line, 130 / 143)
        record = {**(record if record.get("step") == state["step"] else {"step": state["step"]}),
                  "stopped_by": asked["signal"]}
    return record


def distill_chain(fp_checkpoint: str, recipes, cfg, resume: bool = False) -> list:
    """Multi-step distillation: for recipes ["1-1-8", "1-1-1"], train 1-1-8 from the FP model
    (teacher FP), then 1-1-1 from the 1-1-8 student (teacher 1-1-8). Each stage writes to
    <cfg.out>/<recipe>/ and starts from its teacher's weights. Returns the stages' records."""
    records, teacher = [], fp_checkpoint
    for recipe in recipes:
        stage = replace(cfg, quant=recipe, teacher=teacher, init=teacher, out=os.path.join(cfg.out, recipe))
        records.append(train(stage, resume=resume and os.path.exists(os.path.join(stage.out, "last.npz"))))
        teacher = os.path.join(stage.out, "best.npz")
    return records


def _append_csv(path: str, record: dict) -> None:
    """metrics.csv: the same records as metrics.jsonl, one row each, for spreadsheets and pandas."""
    new = not os.path.exists(path)
    with open(path, "a", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(record), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(record)


def _initial_model(cfg: TrainConfig, tokenizer):
    """A fresh FP model, or the weights of ``cfg.init``; quantized if ``cfg.quant`` is set."""
    if cfg.init:
        model, meta = load_latent_fp(cfg.init, with_meta=True)
        check_vocabulary(cfg.init, meta, tokenizer, model.config.vocab_size, "init")
        if cfg.copy and model.copy_gate is None:       # transfer: the init model gets a fresh copy gate
            model = with_copy_gate(model, cfg.seed)
    else:
        model = build_model(vocab_size=tokenizer.get_vocab_size(), d_model=cfg.d_model, n_heads=cfg.n_heads,
                            d_ff=cfg.d_ff, n_encoder_layers=cfg.n_layers, n_decoder_layers=cfg.n_layers,
                            dropout=cfg.dropout, max_len=max(cfg.max_src_len, cfg.max_tgt_len) + 1,
                            seed=cfg.seed, copy=bool(cfg.copy))
    if cfg.quant:
        recipe = cfg.recipe()
        counts = None
        if getattr(recipe, "embed_schedule", ""):                 # frequent tokens get more bits
            from minitbt.quant import task_token_counts
            counts = task_token_counts(cfg.task, tokenizer=tokenizer)
        model = quantize(model, recipe, token_counts=counts)
    return model
