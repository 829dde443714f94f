"""Knowledge distillation for quantization-aware training (TBT, Liu et al. 2023; BiT, Liu et al. 2022).

The student (quantized, initialised from the FP model) learns from a frozen teacher:

    L = w_ce  CE(student logits, labels)
      + w_kd  mean_t  -sum_v p_teacher(v) log p_student(v)                (soft CE, T = 1)
      + w_att sum_{attention maps}  MSE(P_student, P_teacher)             (encoder self, decoder self, cross)
      + w_hid sum_{layers, embedding output included} MSE(H_student, H_teacher)

Multi-step distillation (BiT): FP -> a higher-precision student (e.g. 1-1-8) -> 1-1-1, each
stage the teacher of the next (``distill_chain``).
"""
import os
from dataclasses import replace

import numpy as np

from minitbt import functional as F
from minitbt.data import PAD
from minitbt.tensor import no_grad


def _record(model, on: bool):
    model.record_states = on
    for m in model.attention_modules():
        m.record_attn = on
        if not on:
            m.attn = None
    if not on:
        model.states = None


def teacher_targets(teacher, batch):
    """Run the frozen teacher once: its probabilities, hidden states and attention maps (arrays)."""
    _record(teacher, True)
    try:
        with no_grad():
            logits = teacher(batch.src, batch.tgt_in).data
        hidden = [h.data for h in teacher.states["encoder"] + teacher.states["decoder"]]
        attn = [m.attn.data for m in teacher.attention_modules()]
    finally:
        _record(teacher, False)
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return p, hidden, attn


def distillation_loss(student, teacher, batch, cfg):
    """The TBT loss above; weights from cfg (kd_logits, kd_hidden, kd_attn; CE weight 1)."""
    p_t, hidden_t, attn_t = teacher_targets(teacher, batch)
    _record(student, True)
    try:
        logits = student(batch.src, batch.tgt_in)                               # (B, T, V)
        hidden_s = student.states["encoder"] + student.states["decoder"]
        attn_s = [m.attn for m in student.attention_modules()]
    finally:
        _record(student, False)
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    target = batch.tgt_out.reshape(-1)
    loss = F.cross_entropy(flat, target, ignore_index=PAD, label_smoothing=cfg.label_smoothing)
    if cfg.kd_logits:
        loss = loss + cfg.kd_logits * F.soft_cross_entropy(flat, p_t.reshape(-1, V), mask=target != PAD)
    if cfg.kd_hidden:
        for hs, ht in zip(hidden_s, hidden_t):
            loss = loss + cfg.kd_hidden * F.mse_loss(hs, ht)
    if cfg.kd_attn:
        for a_s, a_t in zip(attn_s, attn_t):
            loss = loss + cfg.kd_attn * F.mse_loss(a_s, a_t)
    return loss


def distill_chain(fp_checkpoint: str, recipes, cfg, resume: bool = False) -> list:
    """Multi-step distillation: for recipes ["1-1-8", "1-1-1"], train 1-1-8 from the FP model
    (teacher FP), then 1-1-1 from the 1-1-8 student (teacher 1-1-8). Each stage writes to
    <cfg.out>/<recipe>/ and starts from its teacher's weights. Returns the stages' records."""
    from minitbt.train import train
    records, teacher = [], fp_checkpoint
    for recipe in recipes:
        stage = replace(cfg, quant=recipe, teacher=teacher, init=teacher, out=os.path.join(cfg.out, recipe))
        records.append(train(stage, resume=resume and os.path.exists(os.path.join(stage.out, "last.npz"))))
        teacher = os.path.join(stage.out, "best.npz")
    return records
