"""What each ``minitbt`` sub-command does (the argument parsing lives in cli.py).

Every option is checked before any work (loading a model, reading data, training): a bad value
is a ValueError naming the option, which cli.main turns into one line and exit code 2.
"""
import json
import math
import os
import sys
from dataclasses import fields, replace

from minitbt.datasets import norm, prepare_user_task

MAX_BEAM = 64      # a wider beam costs beam x memory and time for no gain on these tasks


def prepare(args):
    counts = prepare_user_task(args.src_dir, args.out, kind=args.kind, vocab_size=args.vocab_size,
                               force=args.force, tokenizer_from=args.tokenizer)
    made = f"{args.tokenizer}'s tokenizer.json" if args.tokenizer else "tokenizer.json"
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" pairs, {made}")
    return 0


def train(args):
    """A new run: the preset (tiny by default) with the flags given over it. ``--resume``: the
    settings saved in <out>/last.npz, with the flags given (and a preset, if named) over them;
    train() refuses any that differ unless --allow-change names them."""
    from minitbt.config import PRESETS, TrainConfig, config_from_preset
    from minitbt.train import saved_config, train as run
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    allow = [name.strip().replace("-", "_") for name in args.allow_change.split(",") if name.strip()]
    if allow and not args.resume:
        raise ValueError("--allow-change only applies with --resume")
    if args.resume:
        base = config_from_preset(args.preset or "tiny")
        base = saved_config(overrides.get("out", base.out))
        if args.preset:
            base = replace(base, **PRESETS[args.preset])
        cfg = replace(base, **overrides)
    else:
        cfg = config_from_preset(args.preset or "tiny", **overrides)
    record = run(cfg, resume=args.resume, allow_change=allow)
    print(json.dumps(record))
    if record.get("stopped_by"):                   # kill or Ctrl-C: the run is saved, the exit says why
        print(f"minitbt train: interrupted ({record['stopped_by']}) after step {record['step']}; "
              f"{os.path.join(cfg.out, 'last.npz')} written, continue with --resume", file=sys.stderr)
        return 130 if record["stopped_by"] == "SIGINT" else 143
    return 0


# ---- using a trained model -------------------------------------------------------------------
def _load(args, kind: str):
    """(model, tokenizer, meta) from --model, packed if asked; the tokenizer from the checkpoint
    header, else from --tokenizer / --task. A model trained for the other kind of task
    (translation / summarization) is refused."""
    from minitbt.data import load_tokenizer
    from minitbt.model_io import load_model, tokenizer_from_header
    if getattr(args, "packed", False):
        from minitbt import checkpoint
        from minitbt.packed import load_packed_or_pack
        from minitbt.packed.compiled import HAVE_DECODER, NotCompilable, compile_model
        _, header, _ = checkpoint.load(args.model)
        if header.get("quant") or header.get("packed"):
            model, meta = load_packed_or_pack(args.model)
        elif HAVE_DECODER:                  # a float model has nothing to pack: the compiled decoder runs it
            model, meta = load_model(args.model)
        else:
            raise ValueError(f"{args.model} is a float model: --packed needs a quantized one "
                             f"(or the compiled decoder, which was not built)")
        if HAVE_DECODER and not getattr(args, "numpy", False):   # the compiled decoder, C (minitbt/_decoder.h)
            try:
                model = compile_model(model)
            except NotCompilable as exc:
                print(f"note: the NumPy packed model runs this one ({exc})", file=sys.stderr)
    else:
        model, meta = load_model(args.model)
    trained_for = meta.get("task", {}).get("kind")
    if trained_for and trained_for != kind:
        use = "translate" if trained_for == "translation" else "summarize"
        raise ValueError(f"{args.model} is a {trained_for} model ({meta['task']['name']}), not a {kind} "
                         f"model: use `minitbt {use}`, or another --model")
    task_dir = getattr(args, "tokenizer", None) or getattr(args, "task", None)
    tok = tokenizer_from_header(meta, args.model)
    if tok is None and task_dir:
        tok = load_tokenizer(task_dir)
    elif tok is None:
        raise ValueError(f"{args.model} carries no tokenizer: pass --tokenizer TASK_DIR")
    if tok.get_vocab_size() != model.config.vocab_size:
        raise ValueError(f"{args.model}: the model has {model.config.vocab_size} token ids but its tokenizer "
                         f"{tok.get_vocab_size()}")
    return model, tok, meta


def _check_decoding(args) -> None:
    """The decoding options, before the model is loaded (the model-dependent limit: _max_len)."""
    if not 1 <= args.beam <= MAX_BEAM:
        raise ValueError(f"--beam must be between 1 (greedy) and {MAX_BEAM}, got {args.beam}")
    if args.max_len is not None and args.max_len < 1:
        raise ValueError(f"--max-len must be >= 1, got {args.max_len}")
    if args.min_len < 0:
        raise ValueError(f"--min-len must be >= 0, got {args.min_len}")
    if not math.isfinite(args.length_penalty):
        raise ValueError(f"--length-penalty must be a finite number, got {args.length_penalty}")


def _check_output_file(path: str, flag: str) -> None:
    """A file we will write must have a writable folder and not be a folder itself."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a folder, not a file")
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: the folder {folder} is not writable")


def _read_texts(args) -> list:
    """The texts to decode, whitespace-normalised as the training data was (datasets.norm)."""
    if args.text is not None:
        try:
            args.text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the text argument is not valid UTF-8") from None
        texts = [args.text]
    else:
        raw = sys.stdin.buffer.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"standard input is not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                             f"{exc.start})") from None
        texts = text.split("\n")
        if texts and texts[-1] == "":
            texts.pop()
    texts = [norm(t) for t in texts]
    if not texts or any(not t for t in texts):
        raise ValueError("empty input text: give a non-empty sentence (or non-empty lines on standard input)")
    return texts


def _generate(model, tok, texts, args, max_src_len, max_len=64, batch_size=32):
    """Decode a list of texts; greedy when --beam 1. With --split-sentences each text is cut
    into sentences (data.split_sentences), each sentence is decoded on its own, and a text's
    outputs are joined with spaces. The pieces are decoded in batches of similar source length
    (sorted, then put back in order): a batch then wastes little on padding and stops as soon
    as its longest output ends."""
    from minitbt.data import split_sentences
    if getattr(args, "split_sentences", False):
        owner, pieces = [], []
        for i, text in enumerate(texts):
            for sentence in split_sentences(text):
                owner.append(i)
                pieces.append(sentence)
        joined = [[] for _ in texts]
        for i, out in zip(owner, _generate_pieces(model, tok, pieces, args, max_src_len, max_len, batch_size)):
            joined[i].append(out)
        return [" ".join(o for o in outs if o) for outs in joined]
    return _generate_pieces(model, tok, texts, args, max_src_len, max_len, batch_size)


def _generate_pieces(model, tok, texts, args, max_src_len, max_len, batch_size):
    import numpy as np
    from minitbt.data import EOS, PAD, decode, encode
    from minitbt.decode import beam_search, greedy
    encoded = encode(tok, texts)
    for i, s in enumerate(encoded):
        if len(s) > max_src_len - 1 and getattr(args, "warn_long", True):
            print(f"warning: input {i + 1} has {len(s)} tokens; the model reads only its first {max_src_len - 1} "
                  f"(about {len(decode(tok, s[: max_src_len - 1]).split())} words): split long texts into "
                  f"sentences (--split-sentences)", file=sys.stderr)
    ids = [np.append(s[: max_src_len - 1], EOS) for s in encoded]
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


def _max_len(args, model, meta):
    """--max-len, else the model's training target length (else 64); at most the position table."""
    limit = model.config.max_len
    if args.max_len is not None and args.max_len > limit:
        raise ValueError(f"--max-len {args.max_len} is longer than the model's position table ({limit} tokens)")
    max_len = args.max_len or min(meta.get("train_config", {}).get("max_tgt_len") or 64, limit)
    if args.min_len > max_len:
        raise ValueError(f"--min-len {args.min_len} is above the maximum output length {max_len}")
    return max_len


def _decode_texts(args, kind):
    _check_decoding(args)
    texts = _read_texts(args)
    model, tok, meta = _load(args, kind)
    for line in _generate(model, tok, texts, args, _max_src_len(model, meta), _max_len(args, model, meta)):
        print(line)
    return 0


def translate(args):
    return _decode_texts(args, "translation")


def summarize(args):
    return _decode_texts(args, "summarization")


def eval(args):
    import time
    from minitbt import metrics
    from minitbt.datasets import read_split, task_info
    from minitbt.data import load_tokenizer, same_tokenizer
    _check_decoding(args)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    info = task_info(args.task)
    path = args.hyp_out or os.path.splitext(args.model)[0] + f".{info['name']}.{args.split}.hyp"
    _check_output_file(path, "--hyp-out")
    sources, targets = read_split(args.task, args.split)
    if args.limit:
        sources, targets = sources[: args.limit], targets[: args.limit]
    if not sources:
        raise ValueError(f"{args.task}: the {args.split} split is empty")
    model, tok, meta = _load(args, info["kind"])
    if not same_tokenizer(tok, load_tokenizer(args.task)):
        raise ValueError(f"{args.model} was trained with another tokenizer than {args.task}'s: "
                         f"its scores there would mean nothing")
    args.warn_long = False          # the split's long sources are cut as they were in training
    max_len = _max_len(args, model, meta)
    t0 = time.perf_counter()
    hyps = _generate(model, tok, sources, args, _max_src_len(model, meta), max_len)
    seconds = time.perf_counter() - t0
    scores = metrics.score(info["kind"], hyps, targets)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(h + "\n" for h in hyps))
    print(json.dumps({"task": info["name"], "split": args.split, "n": len(hyps), "beam": args.beam,
                      "max_len": max_len, "split_sentences": bool(args.split_sentences),
                      "packed": bool(args.packed), "decode_seconds": round(seconds, 1), **scores,
                      "hypotheses": path}))
    return 0


def seqkd(args):
    """The teacher's outputs on the train sources become a new task's train targets (distill.py)."""
    from minitbt.distill import sequence_kd_task
    if not 1 <= args.beam <= MAX_BEAM:
        raise ValueError(f"--beam must be between 1 (greedy) and {MAX_BEAM}, got {args.beam}")
    report = sequence_kd_task(args.teacher, args.task, args.out, beam=args.beam, force=args.force)
    print(json.dumps(report))
    return 0


def baseline(args):
    """Scores of the first --words words of each source, as a model's scores are reported."""
    from minitbt import metrics
    from minitbt.datasets import read_split, task_info
    if args.words < 0:
        raise ValueError(f"--words must be >= 0, got {args.words}")
    info = task_info(args.task)
    sources, targets = read_split(args.task, args.split)
    scores = metrics.score(info["kind"], metrics.lead(sources, args.words), targets)
    print(json.dumps({"task": info["name"], "split": args.split, "n": len(sources),
                      "baseline": f"lead-{args.words}" if args.words else "copy", **scores}))
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
    _check_output_file(args.out, "--out")
    if args.format == "safetensors" and args.packed:
        raise ValueError("--format safetensors writes the latent weights and learned scales, not the packed "
                         "bits: drop --packed (the loaded model packs again)")
    extra = {}
    if args.task:
        extra = {"tokenizer": load_tokenizer(args.task).to_str(), "task": task_info(args.task)}
    if args.format == "safetensors":
        from minitbt.model_io import load_model
        from minitbt.safetensors_io import KEPT, save_safetensors
        model, meta = load_model(args.model)
        meta = {**extra, **meta} if meta.get("tokenizer") else {**meta, **extra}
        save_safetensors(args.out, model, half=args.half,
                         **{k: v for k, v in meta.items() if k in KEPT and k not in ("model_config", "quant")})
    elif args.packed:
        from minitbt.model_io import load_model
        from minitbt.packed import pack_model, save_packed
        model, meta = load_model(args.model)
        save_packed(args.out, pack_model(model), tokenizer=meta.get("tokenizer") or extra.get("tokenizer"))
    else:
        state, meta, _ = checkpoint.load(args.model)
        meta.pop("train_state", None)
        meta = {**extra, **meta} if meta.get("tokenizer") else {**meta, **extra}
        if args.half and meta.get("quant"):               # float16, every quantized weight's code kept
            from minitbt.model_io import half_state, load_model
            state, moved, changed = half_state(load_model(args.model)[0])
            print(f"float16: rounding moved {moved} weights across a quantizer threshold; "
                  f"{moved - changed} moved back, {changed} keep a changed code")
        checkpoint.save(args.out, state, meta, half=args.half)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    return 0
