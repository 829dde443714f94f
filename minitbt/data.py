"""From text to padded integer batches: tokenizing a task and length-bucketed batching.

    text pairs --BPE--> ids --truncate, add <bos>/<eos>--> examples --bucket by length,
    fill a token budget--> Batch(src (B, S), tgt_in (B, T), tgt_out (B, T))

Source:  ids + [eos].   Decoder input: [bos] + ids.   Decoder target: ids + [eos].
Padding uses id 0 (<pad>), which the loss ignores and the attention masks hide.
"""
import os
import re
from dataclasses import dataclass

import numpy as np

from minitbt.datasets import read_split

PAD, BOS, EOS, UNK = 0, 1, 2, 3


def load_tokenizer(task_dir: str):
    """The task's HF `tokenizers` BPE tokenizer (task_dir/tokenizer.json)."""
    from tokenizers import Tokenizer
    path = os.path.join(task_dir, "tokenizer.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no tokenizer at {path}: is {task_dir!r} a task folder? "
                                f"(make one with `minitbt prepare`)")
    try:
        tok = Tokenizer.from_file(path)
    except Exception as exc:           # the tokenizers library raises its own Exception subclasses
        raise ValueError(f"{path} is not a valid tokenizer.json ({str(exc).splitlines()[0][:120]})") from None
    return check_specials(tok, path)


def check_specials(tok, where: str):
    """The special tokens every minitbt tokenizer has: <pad>=0 <bos>=1 <eos>=2 <unk>=3."""
    specials = [tok.token_to_id(s) for s in ("<pad>", "<bos>", "<eos>", "<unk>")]
    if specials != [PAD, BOS, EOS, UNK]:
        raise ValueError(f"{where}: special tokens must be <pad>=0 <bos>=1 <eos>=2 <unk>=3, got {specials}")
    return tok


def same_tokenizer(a, b) -> bool:
    """Do two tokenizers map the same tokens to the same ids (and split text the same way)?"""
    return a.get_vocab() == b.get_vocab() and a.to_str() == b.to_str()


def encode(tokenizer, texts) -> list:
    """Token ids (no specials) of each text, as int32 arrays."""
    return [np.asarray(e.ids, dtype=np.int32) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


# A sentence ends at . ! or ? followed by white space, except after "e.g." and "i.e.".
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!e\.g\.)(?<!i\.e\.)\s+(?=\S)")


def split_sentences(text: str) -> list:
    """The sentences of a paragraph, for translating it one sentence at a time (the way the
    training pairs mostly are: half of ddtp-en-de's training sources are 10 words or fewer).
    "Run it. It works!" -> ["Run it.", "It works!"]; a text without a sentence end is one piece."""
    return _SENTENCE_END.split(text.strip()) if text.strip() else [text]


def decode(tokenizer, ids) -> str:
    """Text of a sequence of ids, stopping at the first <eos> and dropping <pad>/<bos>."""
    ids = [int(i) for i in ids]
    if EOS in ids:
        ids = ids[: ids.index(EOS)]
    return tokenizer.decode([i for i in ids if i not in (PAD, BOS)])


@dataclass
class Batch:
    src: np.ndarray       # (B, S) int32, <pad>-padded, ends in <eos>
    tgt_in: np.ndarray    # (B, T) int32, starts with <bos>
    tgt_out: np.ndarray   # (B, T) int32, ends with <eos>, <pad> where tgt_in is padding
    index: np.ndarray     # (B,) positions of these examples in the dataset

    @property
    def n_tokens(self) -> int:
        return int((self.tgt_out != PAD).sum())


class Seq2SeqData:
    """A split of a task as token ids, truncated to the length caps.

    ``n_truncated`` counts the examples whose source or target was cut.
    """

    def __init__(self, sources, targets, tokenizer, max_src_len: int = 128, max_tgt_len: int = 128):
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        self.sources, self.targets = list(sources), list(targets)
        src_ids, tgt_ids = encode(tokenizer, self.sources), encode(tokenizer, self.targets)
        cut = [len(s) > max_src_len - 1 or len(t) > max_tgt_len - 1 for s, t in zip(src_ids, tgt_ids)]
        self.n_truncated = int(sum(cut))
        self.src = [np.append(s[: max_src_len - 1], EOS).astype(np.int32) for s in src_ids]
        self.tgt = [np.append(t[: max_tgt_len - 1], EOS).astype(np.int32) for t in tgt_ids]
        self.src_len = np.array([len(s) for s in self.src])
        self.tgt_len = np.array([len(t) for t in self.tgt])

    @classmethod
    def from_task(cls, task_dir, split, tokenizer=None, max_src_len=128, max_tgt_len=128, limit=None):
        sources, targets = read_split(task_dir, split)
        if limit is not None:
            sources, targets = sources[:limit], targets[:limit]
        return cls(sources, targets, tokenizer or load_tokenizer(task_dir), max_src_len, max_tgt_len)

    def __len__(self):
        return len(self.src)

    def collate(self, index) -> Batch:
        """Pad the chosen examples into one Batch."""
        index = np.asarray(index)
        S = int(self.src_len[index].max())
        T = int(self.tgt_len[index].max())
        src = np.full((len(index), S), PAD, dtype=np.int32)
        tgt_in = np.full((len(index), T), PAD, dtype=np.int32)
        tgt_out = np.full((len(index), T), PAD, dtype=np.int32)
        for row, i in enumerate(index):
            s, t = self.src[i], self.tgt[i]
            src[row, : len(s)] = s
            tgt_in[row, 0] = BOS
            tgt_in[row, 1: len(t)] = t[:-1]
            tgt_out[row, : len(t)] = t
        return Batch(src, tgt_in, tgt_out, index)

    def batches(self, max_tokens: int, shuffle: bool = True, seed: int = 0, chunk: int = 100):
        """Index lists for one epoch: similar lengths together, each batch within a token budget.

        The cost of a batch is its size times its longest sequence (source or target, padded).
        With ``shuffle``, a seeded permutation is cut into chunks of ``chunk`` batches' worth of
        examples, each chunk sorted by length, and the batch order shuffled again: batches
        hold similar lengths yet differ from epoch to epoch (pass seed + epoch).
        """
        n = len(self)
        length = np.maximum(self.src_len, self.tgt_len)
        if length.max() > max_tokens:
            raise ValueError(f"an example of {length.max()} tokens does not fit a {max_tokens}-token batch")
        rng = np.random.default_rng(seed)
        order = rng.permutation(n) if shuffle else np.arange(n)
        per_chunk = max(1, chunk * max_tokens // max(1, int(np.median(length))))
        groups = []
        for lo in range(0, n, per_chunk):
            part = order[lo: lo + per_chunk]
            part = part[np.argsort(length[part], kind="stable")]
            start, longest = 0, 0
            for j, i in enumerate(part):
                longest_next = max(longest, length[i])
                if (j - start + 1) * longest_next > max_tokens:
                    groups.append(part[start:j])
                    start, longest_next = j, length[i]
                longest = longest_next
            groups.append(part[start:])
        if shuffle:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        return groups
