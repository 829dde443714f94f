"""Task folders on disk: reading and writing splits, training the BPE tokenizer, and
turning a user's own parallel text into a task (``minitbt prepare``).

A task folder (the shipped ones are data/ddtp-en-de and data/debian-summ):
    <task>/{train,valid,test}.{source,target}.gz   gzip text, one example per line
    <task>/tokenizer.json                          HF `tokenizers` BPE; <pad>=0 <bos>=1 <eos>=2 <unk>=3
"""
import gzip
import os

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
    with opener(path, "rb") as f:
        text = f.read().decode("utf-8")
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


def write_task(out_dir, splits, vocab_size=8000, kind=None):
    """Write {split: (sources, targets)} as <out_dir>/<split>.{source,target}.gz, train one
    joint tokenizer.json on both sides of the train split (the model shares one embedding),
    and, when ``kind`` is given, task.json."""
    os.makedirs(out_dir, exist_ok=True)
    for split, (src, tgt) in splits.items():
        assert len(src) == len(tgt), f"{split}: {len(src)} sources vs {len(tgt)} targets"
        write_lines(os.path.join(out_dir, f"{split}.source.gz"), src)
        write_lines(os.path.join(out_dir, f"{split}.target.gz"), tgt)
    src, tgt = splits["train"]
    train_tokenizer(src + tgt, vocab_size, os.path.join(out_dir, "tokenizer.json"))
    if kind is not None:
        import json
        with open(os.path.join(out_dir, "task.json"), "w", encoding="utf-8") as f:
            json.dump({"name": os.path.basename(os.path.normpath(out_dir)), "kind": kind}, f)


def prepare_user_task(src_dir, out_dir, kind="translation", vocab_size=8000, seed=0):
    """Prepare a user's own parallel text for minitbt.

    `src_dir` holds train.source/train.target and optionally valid.* and test.* (plain or
    .gz, one example per line). A missing valid or test split is carved out of train
    (5% each, seeded by line). Writes the shipped layout (see `write_task`) to `out_dir`."""
    def find(split, side):
        for name in (f"{split}.{side}", f"{split}.{side}.gz"):
            if os.path.exists(os.path.join(src_dir, name)):
                return os.path.join(src_dir, name)
        return None

    splits = {}
    for split in SPLITS:
        paths = find(split, "source"), find(split, "target")
        if None not in paths:
            splits[split] = tuple([norm(s) for s in read_lines(p)] for p in paths)
        elif split == "train":
            raise FileNotFoundError(f"{src_dir} needs train.source and train.target (.gz ok)")
    src, tgt = splits["train"]
    order = np.random.default_rng(seed).permutation(len(src))
    n_held = int(round(0.05 * len(src)))
    held = {}
    for split in ("valid", "test"):
        if split not in splits:
            held[split], order = sorted(order[:n_held]), order[n_held:]
            splits[split] = ([src[i] for i in held[split]], [tgt[i] for i in held[split]])
    keep = sorted(order)
    splits["train"] = ([src[i] for i in keep], [tgt[i] for i in keep])
    write_task(out_dir, splits, vocab_size, kind)
    return {split: len(s) for split, (s, _) in splits.items()}


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
