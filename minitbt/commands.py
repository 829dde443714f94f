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


# ---- using a trained model -------------------------------------------------------------------
def _load(args):
    """(model, tokenizer, meta) from --model, packed if asked; the tokenizer from the checkpoint
    header, else from --tokenizer / --task."""
    from tokenizers import Tokenizer
    from minitbt.data import load_tokenizer
    from minitbt.model_io import load_model
    if getattr(args, "packed", False):
        from minitbt.packed import load_packed_or_pack
        model, meta = load_packed_or_pack(args.model)
    else:
        model, meta = load_model(args.model)
    task_dir = getattr(args, "tokenizer", None) or getattr(args, "task", None)
    if meta.get("tokenizer"):
        tok = Tokenizer.from_str(meta["tokenizer"])
    elif task_dir:
        tok = load_tokenizer(task_dir)
    else:
        raise ValueError(f"{args.model} carries no tokenizer: pass --tokenizer TASK_DIR")
    return model, tok, meta


def _generate(model, tok, texts, args, max_src_len, max_len=64, batch_size=32):
    """Decode a list of texts; greedy when --beam 1. The texts are decoded in batches of
    similar source length (sorted, then put back in order): a batch then wastes little on
    padding and stops as soon as its longest output ends."""
    import numpy as np
    from minitbt.data import EOS, PAD, decode, encode
    from minitbt.decode import beam_search, greedy
    ids = [np.append(s[: max_src_len - 1], EOS) for s in encode(tok, texts)]
    order = np.argsort([len(s) for s in ids], kind="stable")
    out = [None] * len(ids)
    for lo in range(0, len(ids), batch_size):
        rows = order[lo: lo + batch_size]
        src = np.full((len(rows), max(len(ids[r]) for r in rows)), PAD, dtype=np.int32)
        for i, r in enumerate(rows):
            src[i, : len(ids[r])] = ids[r]
        if args.beam > 1:
            hyps = beam_search(model, src, args.beam, max_len, args.min_len, args.length_penalty)
        else:
            hyps = greedy(model, src, max_len, args.min_len)
        for r, h in zip(rows, hyps):
            out[r] = decode(tok, h)
    return out


def _max_src_len(model, meta):
    return meta.get("train_config", {}).get("max_src_len") or model.config.max_len - 1


def _max_len(args, meta):
    return args.max_len or meta.get("train_config", {}).get("max_tgt_len") or 64


def translate(args):
    texts = [args.text] if args.text is not None else [l.rstrip("\n") for l in sys.stdin]
    if not texts or any(not t.strip() for t in texts):
        raise ValueError("empty input text: give a non-empty sentence (or non-empty lines on standard input)")
    model, tok, meta = _load(args)
    for line in _generate(model, tok, texts, args, _max_src_len(model, meta), _max_len(args, meta)):
        print(line)
    return 0


summarize = translate


def eval(args):
    import time
    from minitbt import metrics
    from minitbt.datasets import read_split, task_info
    info = task_info(args.task)
    sources, targets = read_split(args.task, args.split)
    if args.limit:
        sources, targets = sources[: args.limit], targets[: args.limit]
    model, tok, meta = _load(args)
    t0 = time.perf_counter()
    hyps = _generate(model, tok, sources, args, _max_src_len(model, meta), _max_len(args, meta))
    seconds = time.perf_counter() - t0
    scores = metrics.score(info["kind"], hyps, targets)
    path = args.hyp_out or os.path.splitext(args.model)[0] + f".{info['name']}.{args.split}.hyp"
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(h + "\n" for h in hyps))
    print(json.dumps({"task": info["name"], "split": args.split, "n": len(hyps), "beam": args.beam,
                      "max_len": _max_len(args, meta),
                      "packed": bool(args.packed), "decode_seconds": round(seconds, 1), **scores,
                      "hypotheses": path}))
    return 0


def summary(args):
    from minitbt.model_io import load_model
    from minitbt.summary import summary as summarize_model
    model, _ = load_model(args.model)
    print(summarize_model(model))
    return 0


def export(args):
    from minitbt import checkpoint
    from minitbt.data import load_tokenizer
    from minitbt.datasets import task_info
    extra = {}
    if args.task:
        extra = {"tokenizer": load_tokenizer(args.task).to_str(), "task": task_info(args.task)}
    if args.packed:
        from minitbt.model_io import load_model
        from minitbt.packed import pack_model, save_packed
        model, meta = load_model(args.model)
        save_packed(args.out, pack_model(model), tokenizer=meta.get("tokenizer") or extra.get("tokenizer"))
    else:
        state, meta, _ = checkpoint.load(args.model)
        meta.pop("train_state", None)
        meta = {**extra, **meta} if meta.get("tokenizer") else {**meta, **extra}
        checkpoint.save(args.out, state, meta, half=args.half)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    return 0
