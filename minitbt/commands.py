"""What each ``minitbt`` sub-command does (the argument parsing lives in cli.py)."""
import json
import os
import sys
from dataclasses import fields

from minitbt.datasets import prepare_user_task


def prepare(args):
    counts = prepare_user_task(args.src_dir, args.out, kind=args.kind, vocab_size=args.vocab_size)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " pairs, tokenizer.json")
    return 0


def train(args):
    from minitbt.train import TrainConfig, config_from_preset, train as run
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    cfg = config_from_preset(args.preset, **overrides)
    record = run(cfg, resume=args.resume)
    print(json.dumps(record))
    return 0
