"""Task folders on disk: reading and writing splits, training the BPE tokenizer, and
turning a user's own parallel text into a task (``minitbt prepare``).

A task folder (the shipped ones are data/ddtp-en-de and data/debian-summ):
    <task>/{train,valid,test}.{source,target}.gz   gzip text, one example per line
    <task>/tokenizer.json                          HF `tokenizers` BPE; <pad>=0 <bos>=1 <eos>=2 <unk>=3
"""
import gzip
import os
import shutil
import tempfile

import numpy as np

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]          # ids 0, 1, 2, 3
SPLITS = ["train", "valid", "test"]
REBUILD = "apt-get -o Acquire::Languages=en,de update && python data/prepare.py --out data --seed 0"


def norm(text):
    """Collapse every run of whitespace (newlines included) into one space."""
    return " ".join(text.split())


def write_lines(path, lines):
    """Write lines as gzip text with mtime=0 and no stored name (byte-identical rebuilds)."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write("".join(line + "\n" for line in lines).encode("utf-8"))


def read_lines(path):
    """Read a one-example-per-line text file, plain or .gz (only "\\n" ends a line)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise ValueError(f"{path} is not a readable gzip file (corrupt or truncated): {exc}") from None
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n") if text else []


def read_split(task_dir, split):
    """Return (sources, targets) of one split, e.g. read_split("data/ddtp-en-de", "train")."""
    out = []
    for side in ("source", "target"):
        path = os.path.join(task_dir, f"{split}.{side}.gz")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found; rebuild the shipped data with "
                                    f"`{REBUILD}` or your own with `minitbt prepare`")
        out.append(read_lines(path))
    if len(out[0]) != len(out[1]):
        raise ValueError(f"{task_dir}/{split}: {len(out[0])} sources but {len(out[1])} targets")
    return out[0], out[1]


def train_tokenizer(texts, vocab_size, path):
    """Train a readable BPE tokenizer (NFKC, Metaspace "▁" word marks, no byte fallback)
    on an iterable of strings, save it to `path` and return it.
    Special tokens: <pad>=0, <bos>=1, <eos>=2, <unk>=3 (characters never seen -> <unk>)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    tok.save(path)
    return tok


def words_stats(lines):
    """(mean, median) number of whitespace-separated words per line."""
    n = np.array([len(s.split()) for s in lines]) if lines else np.zeros(1)
    return float(n.mean()), float(np.median(n))


def stats_table(task_dir):
    """Markdown table of counts and word-length statistics per split of a task folder."""
    rows = ["| split | pairs | source words mean / median | target words mean / median |",
            "|---|---:|---:|---:|"]
    for split in SPLITS:
        src, tgt = read_split(task_dir, split)
        (sm, smed), (tm, tmed) = words_stats(src), words_stats(tgt)
        rows.append(f"| {split} | {len(src)} | {sm:.1f} / {smed:g} | {tm:.1f} / {tmed:g} |")
    return "\n".join(rows)


def write_task(out_dir, splits, vocab_size=8000, kind=None, name=None, tokenizer_from=None):
    """Write {split: (sources, targets)} as <out_dir>/<split>.{source,target}.gz, train one
    joint tokenizer.json on both sides of the train split (the model shares one embedding), or
    copy ``tokenizer_from``'s (a task folder), and, when ``kind`` is given, task.json."""
    os.makedirs(out_dir, exist_ok=True)
    for split, (src, tgt) in splits.items():
        if len(src) != len(tgt):
            raise ValueError(f"{split}: {len(src)} sources but {len(tgt)} targets")
        write_lines(os.path.join(out_dir, f"{split}.source.gz"), src)
        write_lines(os.path.join(out_dir, f"{split}.target.gz"), tgt)
    if tokenizer_from is not None:
        shutil.copyfile(os.path.join(tokenizer_from, "tokenizer.json"), os.path.join(out_dir, "tokenizer.json"))
    else:
        src, tgt = splits["train"]
        train_tokenizer(src + tgt, vocab_size, os.path.join(out_dir, "tokenizer.json"))
    if kind is not None:
        import json
        with open(os.path.join(out_dir, "task.json"), "w", encoding="utf-8") as f:
            json.dump({"name": name or os.path.basename(os.path.normpath(out_dir)), "kind": kind}, f)


def prepare_user_task(src_dir, out_dir, kind="translation", vocab_size=8000, seed=0, force=False,
                      tokenizer_from=None):
    """Prepare a user's own parallel text for minitbt.

    `src_dir` holds train.source/train.target and optionally valid.* and test.* (plain or
    .gz, one example per line). A missing valid or test split is carved out of train
    (5% each, seeded by line). Writes the shipped layout (see `write_task`) to `out_dir`.
    ``tokenizer_from``: a task folder whose tokenizer.json is reused (transfer from a model
    trained on that task) instead of training a new one.

    Safe by construction: the two sides of every split must have the same number of lines (else
    a ValueError names both files and counts); the task is built in a temporary folder beside
    `out_dir` and renamed into place only when complete, so an error or Ctrl-C leaves no
    half-written task; an existing `out_dir` is replaced only with ``force=True``."""
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"input folder not found: {src_dir}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"--out {out_dir} exists and is not a folder")
    if os.path.exists(out_dir) and not force:
        raise FileExistsError(f"{out_dir} exists: pass --force to replace it, or choose another --out")
    if tokenizer_from is not None and not os.path.exists(os.path.join(tokenizer_from, "tokenizer.json")):
        raise FileNotFoundError(f"--tokenizer {tokenizer_from}: no tokenizer.json there (give a task folder)")
    if vocab_size < len(SPECIALS) + 1:
        raise ValueError(f"--vocab-size must be at least {len(SPECIALS) + 1}, got {vocab_size}")
    def find(split, side):
        for name in (f"{split}.{side}", f"{split}.{side}.gz"):
            if os.path.exists(os.path.join(src_dir, name)):
                return os.path.join(src_dir, name)
        return None

    splits = {}
    for split in SPLITS:
        paths = find(split, "source"), find(split, "target")
        if None not in paths:
            src, tgt = ([norm(s) for s in read_lines(p)] for p in paths)
            if len(src) != len(tgt):
                raise ValueError(f"{paths[0]} has {len(src)} lines but {paths[1]} has {len(tgt)}: "
                                 f"line i of one must be the pair of line i of the other")
            splits[split] = src, tgt
        elif paths != (None, None):
            raise FileNotFoundError(f"{src_dir}: {split} has {os.path.basename(paths[0] or paths[1])} "
                                    f"but no {split}.{'target' if paths[0] else 'source'}")
        elif split == "train":
            raise FileNotFoundError(f"{src_dir} needs train.source and train.target (.gz ok)")
    src, tgt = splits["train"]
    if len(src) < 3:
        raise ValueError(f"{src_dir}: train has {len(src)} pairs; at least 3 are needed")
    order = np.random.default_rng(seed).permutation(len(src))
    n_held = int(round(0.05 * len(src)))
    held = {}
    for split in ("valid", "test"):
        if split not in splits:
            held[split], order = sorted(order[:n_held]), order[n_held:]
            splits[split] = ([src[i] for i in held[split]], [tgt[i] for i in held[split]])
    keep = sorted(order)
    splits["train"] = ([src[i] for i in keep], [tgt[i] for i in keep])
    for split, (s, _) in splits.items():
        if not s:
            raise ValueError(f"{src_dir}: the {split} split would be empty; give more pairs or a {split} file")
    out_dir = os.path.normpath(out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(out_dir)}-", dir=parent)
    try:
        write_task(tmp, splits, vocab_size, kind, name=os.path.basename(out_dir), tokenizer_from=tokenizer_from)
        _swap_into_place(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return {split: len(s) for split, (s, _) in splits.items()}


def _swap_into_place(new_dir, out_dir):
    """Rename the finished folder to ``out_dir``; an old one is moved aside first, removed after."""
    old = None
    if os.path.exists(out_dir):
        old = os.path.join(os.path.dirname(os.path.abspath(out_dir)), f".old-{os.path.basename(out_dir)}-{os.getpid()}")
        os.rename(out_dir, old)
    os.rename(new_dir, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def task_info(task_dir: str) -> dict:
    """The task's task.json ({"name", "kind": "translation" | "summarization", ...})."""
    import json
    path = os.path.join(task_dir, "task.json")
    if not os.path.isdir(task_dir):
        raise FileNotFoundError(f"task folder not found: {task_dir} (the shipped tasks are data/ddtp-en-de "
                                f"and data/debian-summ; make your own with `minitbt prepare`)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: a task folder needs task.json with its kind "
                                f"(`minitbt prepare` writes it)")
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    if info.get("kind") not in ("translation", "summarization"):
        raise ValueError(f"{path}: kind must be 'translation' or 'summarization', got {info.get('kind')!r}")
    return info
