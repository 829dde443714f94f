"""Knowledge distillation for quantization-aware training (TBT, Liu et al. 2023; BiT, Liu et al. 2022).

The student (quantized, initialised from the FP model) learns from a frozen teacher:

    L = w_ce  CE(student logits, labels)
      + w_kd  T^2 mean_t  -sum_v p_T(z_teacher)(v) log p_T(z_student)(v)    (soft CE at temperature T)
      + w_att sum_{attention maps}  MSE(P_student, P_teacher)             (encoder self, decoder self, cross)
      + w_hid sum_{layers, embedding output included} MSE(H_student, H_teacher)

with p_T(z) = softmax(z / T). TBT uses T = 1; Hinton et al. ("Distilling the Knowledge in a Neural
Network", 2015) soften both sides with T > 1 and multiply by T^2, so that the gradient,
dL/dz_student = T (p_T(z_s) - p_T(z_t)), keeps its size as T changes (BitDistill uses T = 5).
TBT weights all four terms 1. minitbt's defaults (TrainConfig: kd_hidden = kd_attn = 0) keep the
first two only, the quantization pilot's winner (docs/quantization.md, "What the pilot chose"); a
term with weight 0 is not computed, so neither model records its states or maps.

Multi-step distillation (BiT): FP -> a higher-precision student (e.g. 1-1-8) -> 1-1-1, each
stage the teacher of the next (``train.distill_chain``; from the command line: ``--init`` and
``--teacher`` both the previous stage's best.npz, since load_latent_fp takes the latent float
weights of a quantized checkpoint).

Sequence-level distillation (Kim & Rush, EMNLP 2016): ``sequence_kd_task`` decodes the teacher on
the training sources and writes a task whose training targets are the teacher's outputs.
"""
import json
import os
import shutil
import tempfile
import time

import numpy as np

from minitbt import functional as F
from minitbt.data import PAD
from minitbt.tensor import no_grad


def _record(model, states: bool, attn: bool):
    """Keep the hidden states (model.states) and the attention maps (each module's .attn) of the
    next forward; _record(model, False, False) stops and drops them. A model that records no maps
    runs the fused attention kernel where it has no quantizers (nn/attention.py)."""
    model.record_states = states
    for m in model.attention_modules():
        m.record_attn = attn
        if not attn:
            m.attn = None
    if not states:
        model.states = None


def teacher_targets(teacher, batch, temperature: float = 1.0, hidden: bool = True, attn: bool = True):
    """Run the frozen teacher once: its probabilities softmax(z / T), and its hidden states and
    attention maps (lists of arrays; empty when not asked for)."""
    _record(teacher, hidden, attn)
    try:
        with no_grad():
            logits = teacher(batch.src, batch.tgt_in).data
        hidden = [h.data for h in teacher.states["encoder"] + teacher.states["decoder"]] if hidden else []
        attn = [m.attn.data for m in teacher.attention_modules()] if attn else []
    finally:
        _record(teacher, False, False)
    # in place: the teacher's logits are a fresh array that nothing else holds (no graph under no_grad)
    p = logits
    if temperature != 1:
        p /= temperature
    p -= p.max(axis=-1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    return p, hidden, attn


def distillation_loss(student, teacher, batch, cfg):
    """The TBT loss above; weights from cfg (kd_logits, kd_hidden, kd_attn; CE weight 1) and the
    temperature cfg.kd_temperature (1 if the config has none)."""
    T = float(getattr(cfg, "kd_temperature", 1.0))
    want_h, want_a = bool(cfg.kd_hidden), bool(cfg.kd_attn)     # a term with weight 0 is not computed
    p_t, hidden_t, attn_t = teacher_targets(teacher, batch, T, want_h, want_a)
    _record(student, want_h, want_a)
    try:
        logits = student(batch.src, batch.tgt_in)                               # (B, T, V)
        hidden_s = student.states["encoder"] + student.states["decoder"] if want_h else []
        attn_s = [m.attn for m in student.attention_modules()] if want_a else []
    finally:
        _record(student, False, False)
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    target = batch.tgt_out.reshape(-1)
    loss = F.cross_entropy(flat, target, ignore_index=PAD, label_smoothing=cfg.label_smoothing)
    if cfg.kd_logits:
        kd = F.soft_cross_entropy(flat, p_t.reshape(-1, V), mask=target != PAD, temperature=T)
        loss = loss + (cfg.kd_logits * T * T) * kd
    if cfg.kd_hidden:
        for hs, ht in zip(hidden_s, hidden_t):
            loss = loss + cfg.kd_hidden * F.mse_loss(hs, ht)
    if cfg.kd_attn:
        for a_s, a_t in zip(attn_s, attn_t):
            loss = loss + cfg.kd_attn * F.mse_loss(a_s, a_t)
    return loss


def sequence_kd_task(teacher_path: str, task_dir: str, out_dir: str, beam: int = 1, batch_size: int = 64,
                     max_len: int = None, length_penalty: float = 1.0, force: bool = False,
                     quiet: bool = False) -> dict:
    """Sequence-level knowledge distillation data (Kim & Rush, "Sequence-Level Knowledge
    Distillation", EMNLP 2016): the teacher's own translations of the training sources,

        y_hat(x) = argmax_y p_teacher(y | x)      greedy (beam=1) or beam search of width ``beam``,

    become the training targets of a new task folder ``out_dir``; the student then learns
    p(y_hat | x), the mode the teacher found, instead of the references. valid and test (and the
    tokenizer) are copied unchanged, so scores stay comparable with the original task.
    task.json gets the name "<name>-seqkd" and a "seqkd" entry (teacher, beam, source task).

    The sources are decoded in batches of similar length (sorted, then put back in order), cut to
    the teacher's training source length; outputs are at most ``max_len`` tokens (default: the
    teacher's training target length). An empty output keeps the reference target (counted in
    "kept_reference"). The folder is built beside ``out_dir`` and renamed into place when complete;
    an existing ``out_dir`` is replaced only with ``force=True``.
    Returns {"task", "pairs", "kept_reference", "seconds", "teacher_on_train": metric of the
    teacher's outputs against the references}.
    """
    from minitbt import metrics
    from minitbt.data import EOS, PAD, decode, encode, load_tokenizer
    from minitbt.datasets import _swap_into_place, read_split, task_info, write_lines
    from minitbt.decode import beam_search, greedy
    from minitbt.model_io import load_model
    from minitbt.train import check_vocabulary

    if beam < 1 or batch_size < 1:
        raise ValueError(f"beam and batch_size must be >= 1, got {beam} and {batch_size}")
    if os.path.exists(out_dir) and not force:
        raise FileExistsError(f"{out_dir} exists: pass force=True to replace it, or choose another folder")
    info, tokenizer = task_info(task_dir), load_tokenizer(task_dir)
    teacher, meta = load_model(teacher_path)
    check_vocabulary(teacher_path, meta, tokenizer, teacher.config.vocab_size, "teacher")
    teacher.eval()
    trained = meta.get("train_config", {})
    max_src = trained.get("max_src_len") or teacher.config.max_len - 1
    max_len = min(max_len or trained.get("max_tgt_len") or 64, teacher.config.max_len)
    sources, references = read_split(task_dir, "train")

    t0 = time.perf_counter()
    ids = [np.append(s[: max_src - 1], EOS).astype(np.int32) for s in encode(tokenizer, sources)]
    order = np.argsort([len(s) for s in ids], kind="stable")
    outputs = [None] * len(ids)
    starts = range(0, len(ids), batch_size)
    if not quiet:
        from tqdm import tqdm
        starts = tqdm(starts, desc=f"teacher {'beam ' + str(beam) if beam > 1 else 'greedy'}", unit="batch")
    for lo in starts:
        rows = order[lo: lo + batch_size]
        src = np.full((len(rows), max(len(ids[r]) for r in rows)), PAD, dtype=np.int32)    # (B, S)
        for i, r in enumerate(rows):
            src[i, : len(ids[r])] = ids[r]
        hyps = (beam_search(teacher, src, beam, max_len, 0, length_penalty) if beam > 1
                else greedy(teacher, src, max_len))
        for r, h in zip(rows, hyps):
            outputs[r] = decode(tokenizer, h)
    seconds = time.perf_counter() - t0
    kept = [i for i, o in enumerate(outputs) if not o.strip()]
    targets = [references[i] if not o.strip() else " ".join(o.split()) for i, o in enumerate(outputs)]
    scores = metrics.score(info["kind"], outputs, references)

    out_dir = os.path.normpath(out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(out_dir)}-", dir=parent)
    try:
        write_lines(os.path.join(tmp, "train.source.gz"), sources)
        write_lines(os.path.join(tmp, "train.target.gz"), targets)
        for name in ("valid.source.gz", "valid.target.gz", "test.source.gz", "test.target.gz", "tokenizer.json"):
            shutil.copyfile(os.path.join(task_dir, name), os.path.join(tmp, name))
        task = {**info, "name": f"{info.get('name', os.path.basename(os.path.normpath(task_dir)))}-seqkd",
                "seqkd": {"teacher": teacher_path, "beam": beam, "max_len": max_len, "from": task_dir}}
        with open(os.path.join(tmp, "task.json"), "w", encoding="utf-8") as f:
            json.dump(task, f)
        _swap_into_place(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return {"task": out_dir, "pairs": len(targets), "kept_reference": len(kept), "seconds": round(seconds, 1),
            "teacher_on_train": {k: v for k, v in scores.items() if k != "bleu_signature"}}
