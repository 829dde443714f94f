"""The checks a training run makes before it starts and while it trains.

Before any work: the output folder is writable; ``--resume`` continues the run that was started,
with its settings (a changed one is refused by name unless asked for); ``--init`` and
``--teacher`` share the task's tokenizer. While it trains: a loss or gradient that stops being
finite ends the run before the weights change (``TrainingDiverged``). docs/training.md, "Bad input".
"""
import hashlib
import os
import tempfile
from dataclasses import fields

import numpy as np

from minitbt import checkpoint
from minitbt.config import TrainConfig
from minitbt.data import same_tokenizer
from minitbt.model_io import config_from_header, tokenizer_from_header

# What --resume lets change without being asked: none of these alter the weights' trajectory.
FREE_ON_RESUME = ("max_minutes", "log_every", "eval_every", "eval_sentences", "out")
# What it never lets change: the model and the data it came from.
FIXED_ON_RESUME = ("task", "quant", "method", "quant_options", "seed", "d_model", "n_heads", "d_ff", "n_layers",
                   "init")

class TrainingDiverged(ValueError):
    """The loss or the gradient became NaN or infinite: training stops before the weights do."""


def saved_config(out: str):
    """The TrainConfig that ``<out>/last.npz`` was trained with (what --resume continues)."""
    path = os.path.join(out, "last.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    _, meta, _ = checkpoint.load(path)
    if "train_config" not in meta or "train_state" not in meta:
        raise checkpoint.CheckpointError(f"--resume: {path} is not a training checkpoint (no train_config)")
    return config_from_header(TrainConfig, meta["train_config"], "train_config", path)


def check_resume(saved, cfg, allow_change=(), where: str = "the checkpoint") -> None:
    """--resume continues the run that was started: any other setting is refused, by name, unless
    it is in FREE_ON_RESUME or the user asked for it (``allow_change``, the CLI's --allow-change).
    Extending a finished run is such a case: ``--max-steps 6000 --allow-change max_steps``."""
    known = {f.name for f in fields(saved)}
    bad = sorted(set(allow_change) - known)
    if bad:
        raise ValueError(f"--allow-change: unknown setting(s) {bad}")
    changed = [f.name for f in fields(saved)
               if getattr(saved, f.name) != getattr(cfg, f.name) and f.name not in FREE_ON_RESUME]
    fixed = [n for n in changed if n in FIXED_ON_RESUME]
    refused = [n for n in changed if n not in FIXED_ON_RESUME and n not in allow_change]
    if fixed or refused:
        diff = ", ".join(f"{n}: {getattr(saved, n)!r} -> {getattr(cfg, n)!r}" for n in fixed + refused)
        hint = ("; these cannot change on resume (start a new run with --init instead)" if fixed else
                f"; pass --allow-change {','.join(refused)} to change them on purpose")
        raise ValueError(f"--resume: {where} was trained with other settings ({diff}){hint}")


def weights_fingerprint(model) -> str:
    """A short SHA-256 of a model's arrays (names and bytes): the teacher a run distils from."""
    h = hashlib.sha256()
    for name, array in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def check_same_teacher(saved: str | None, now: str, path: str, allow_change=()) -> None:
    """--resume distils from the teacher the run started with. The path alone is not enough: a
    file rewritten in place (a teacher run that was extended) would change the loss silently."""
    if saved is not None and saved != now and "teacher" not in allow_change:
        raise ValueError(f"--resume: the teacher {path} is not the one this run started with (its weights "
                         f"changed since); pass --allow-change teacher to distil from it on purpose")


def check_vocabulary(path: str, meta: dict, tokenizer, vocab_size: int, role: str) -> None:
    """--init / --teacher must share the task's tokenizer: the same ids for the same tokens."""
    other = tokenizer_from_header(meta, path)
    if other is not None and not same_tokenizer(other, tokenizer):
        raise ValueError(f"--{role} {path} was trained with another tokenizer than this task's; "
                         f"its token ids would mean other words")
    if vocab_size != tokenizer.get_vocab_size():
        raise ValueError(f"--{role} {path} has a vocabulary of {vocab_size} tokens, the task's "
                         f"tokenizer {tokenizer.get_vocab_size()}")


def check_out_dir(out: str, flag: str = "--out") -> None:
    """An output folder must exist or be creatable, and be writable: checked before any work."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{flag} {out} exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise ValueError(f"{flag} {out} is not a writable folder ({exc.strerror})") from None
