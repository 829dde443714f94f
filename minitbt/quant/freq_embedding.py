"""Frequency-aware embedding bits for binary-coding quantization (Chung et al., "Extremely Low Bit
Transformer Quantization for On-Device Neural Machine Translation", Findings of EMNLP 2020).

Token frequencies are very skewed (a small part of the vocabulary covers most of the running text),
so the paper gives frequent words more quantization bits than rare ones, each word vector with its own
binary-coding scales. Here: rank the tokens by how often the embedding looks them up in the training
split, and give the rows of each rank group the group's number of bits k_r. Row r (a word vector of
dimension d) is then fitted on its own, with BinaryCodingWeight's per-row algorithm at k_r bits:

    W_r ~ sum_{i=1..k_r} a_{r,i} b_{r,i},   b_{r,i} in {-1,+1}^d     (greedy, then alternating refinement)
    backward: identity STE

The schedule is text, groups from the most frequent token down, separated by "/": "bits:fraction",
the last group "bits" taking the rest of the vocabulary, e.g.

    "4:0.05/2:0.2/1"   ranks [0, 5%) -> 4 bits, [5%, 25%) -> 2 bits, the other 75% -> 1 bit
                       mean bits per embedding weight = 0.05*4 + 0.2*2 + 0.75*1 = 1.35

Group sizes are round(cumulative fraction * V), so the mean depends only on the schedule and V.
Ties in the counts rank the lower id first; tokens never seen rank last.

The per-row bits are the buffer ``row_bits`` (V,) of the quantizer, saved in the state dict: a
checkpoint stores only the recipe (``QuantRecipe.embed_schedule``), which rebuilds a quantizer with the
right schedule and a placeholder ranking (by id), and loading the state dict restores the ranking.

``codes()`` returns PlaneCodes padded to k_max = max bits planes: codes (k_max, V, d), scale
(k_max, V, 1), where a row with k_r < k_max bits has scale 0 (and code +1) in planes k_r..k_max-1,
so ``sum_i scale_i * codes_i`` is still the quantized table exactly.

    >>> counts = task_token_counts("data/ddtp-en-de")                      # (V,) from the train split
    >>> q = quantize_model(fp, "bcq-4-2-32", embed_schedule="4:0.05/2:0.2/1", token_counts=counts)
"""
from __future__ import annotations

import numpy as np

from minitbt.quant.base import PlaneCodes
from minitbt.quant.weight import BinaryCodingWeight, WeightQuantizer
from minitbt.tensor import Tensor


def parse_schedule(spec: str) -> list:
    """"4:0.05/2:0.2/1" -> [(4, 0.05), (2, 0.2), (1, None)]; a ValueError says what is wrong."""
    groups = []
    parts = [p.strip() for p in str(spec).split("/")]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        bits, colon, frac = (s.strip() for s in part.partition(":"))
        try:
            k = int(bits)
            f = None if last else float(frac)
        except ValueError:
            raise ValueError(f"embed schedule {spec!r}: group {part!r} is not 'bits:fraction' "
                             f"(the last group: 'bits')") from None
        if last and colon:
            raise ValueError(f"embed schedule {spec!r}: the last group takes the rest of the vocabulary, "
                             f"write it as bits only ({bits!r})")
        if not 1 <= k <= 8:
            raise ValueError(f"embed schedule {spec!r}: binary coding supports 1..8 bits, got {k}")
        if f is not None and not 0 < f < 1:
            raise ValueError(f"embed schedule {spec!r}: a fraction must be in (0, 1), got {f}")
        groups.append((k, f))
    if sum(f for _, f in groups[:-1]) >= 1:
        raise ValueError(f"embed schedule {spec!r}: the fractions must sum to less than 1 (the last group "
                         f"takes the rest)")
    return groups


def format_schedule(groups) -> str:
    """The canonical text of a parsed schedule."""
    return "/".join(f"{k}:{f:g}" if f is not None else str(k) for k, f in groups)


def schedule_bits(groups, n: int) -> np.ndarray:
    """(n,) the bits of rank 0 (most frequent) .. n-1 under the schedule."""
    bits = np.empty(n, dtype=np.int8)
    start, cum = 0, 0.0
    for k, f in groups:
        cum = 1.0 if f is None else cum + f
        end = n if f is None else min(n, int(round(cum * n)))
        bits[start:end] = k
        start = end
    return bits


class FrequencyAwareBCQ(WeightQuantizer):
    """Binary-coding quantization of an embedding with k_r bits for row r, k_r from the token's
    frequency rank:  W_r ~ sum_{i<=k_r} a_{r,i} b_{r,i},  b in {-1,+1}^d;  identity STE.

    ``schedule``: text such as "4:0.05/2:0.2/1" (module docstring); ``rows``: V. ``set_counts(counts)``
    ranks the rows by counts (until then: by id). ``precision`` is the largest k_r; ``mean_bits`` the
    average bits per weight. Called on the looked-up rows with their ids (``q(rows, rows=ids)``, what
    QuantEmbedding does) or on the whole table (``q(W)``).
    Source: Chung et al., Findings of EMNLP 2020 (binary coding: Xu et al., ICLR 2018).
    """

    per_row = True
    row_local = False     # the bits depend on the row's id: QuantEmbedding passes the ids (row_indexed)
    row_indexed = True

    def __init__(self, schedule: str, rows: int, iters: int = 2):
        super().__init__()
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
            raise ValueError(f"FrequencyAwareBCQ needs the number of rows (the vocabulary size), got {rows!r}")
        self.groups = parse_schedule(schedule)
        self.schedule = format_schedule(self.groups)
        self.rows, self.iters = int(rows), int(iters)
        self.precision = max(k for k, _ in self.groups)
        self.register_buffer("row_bits", schedule_bits(self.groups, self.rows))   # placeholder: rank = id

    def set_counts(self, counts) -> "FrequencyAwareBCQ":
        """Give row r the bits of its rank by ``counts`` (V,), the most frequent first."""
        counts = np.asarray(counts)
        if counts.shape != (self.rows,):
            raise ValueError(f"token counts must have shape ({self.rows},) (one per embedding row), got {counts.shape}")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError("token counts must be finite and >= 0")
        order = np.argsort(-counts.astype(np.float64), kind="stable")             # rank -> row
        bits = np.empty(self.rows, dtype=np.int8)
        bits[order] = schedule_bits(self.groups, self.rows)
        self.row_bits = bits
        return self

    @property
    def mean_bits(self) -> float:
        return float(np.mean(self.row_bits))

    def __call__(self, w, rows=None):
        if not isinstance(w, Tensor):
            w = Tensor(w)
        return self.forward(w, rows)

    def forward(self, w: Tensor, rows=None) -> Tensor:
        y = self.codes(w.data, rows).dequantize().astype(w.data.dtype, copy=False)
        return Tensor.make(y, (w,), lambda g: (g,), type(self).__name__)          # identity STE

    def codes(self, w, rows=None) -> PlaneCodes:
        """PlaneCodes of ``w``: the whole table (V, d), or looked-up rows (..., d) with their ids ``rows`` (...)."""
        w = np.asarray(w.data if isinstance(w, Tensor) else w)
        bits = self.row_bits if rows is None else self.row_bits[np.asarray(rows)]
        if bits.shape != w.shape[:-1]:
            raise ValueError(f"FrequencyAwareBCQ: {w.shape[:-1]} rows of weights but bits for {bits.shape} "
                             f"(pass the ids of looked-up rows as rows=)")
        K, d = self.precision, w.shape[-1]
        w2, b2 = w.reshape(-1, d), bits.reshape(-1)                               # (n, d), (n,)
        codes = np.ones((K,) + w2.shape, dtype=np.int8)                           # (K, n, d)
        scale = np.zeros((K, len(w2), 1), dtype=w.dtype)                          # (K, n, 1): 0 = unused plane
        for k in np.unique(b2):
            sel = b2 == k
            qc = BinaryCodingWeight(int(k), self.iters).codes(w2[sel])            # the per-row fit at k bits
            codes[:k, sel] = qc.codes
            scale[:k, sel] = qc.scale
        return PlaneCodes(codes.reshape((K,) + w.shape), scale.reshape((K,) + w.shape[:-1] + (1,)),
                          np.zeros((), w.dtype))

    def extra_repr(self):
        return f"schedule {self.schedule}, {self.mean_bits:.3g} bits per weight on average, per row, iters={self.iters}"


def count_tokens(data, vocab_size: int) -> np.ndarray:
    """(V,) how often the embedding looks up each id over a Seq2SeqData: the sources (with <eos>)
    and the decoder inputs (<bos> + target ids)."""
    from minitbt.data import BOS
    ids = np.concatenate([np.asarray(s) for s in data.src] + [np.asarray(t[:-1]) for t in data.tgt]
                         + [np.zeros(0, np.int64)])                       # sources, then decoder inputs but <bos>
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids run from {ids.min()} to {ids.max()}, outside a vocabulary of {vocab_size}")
    counts = np.bincount(ids.astype(np.int64), minlength=vocab_size)
    counts[BOS] += len(data.tgt)
    return counts


def task_token_counts(task_dir: str, split: str = "train", tokenizer=None) -> np.ndarray:
    """(V,) token counts of a task's split (the training split by default), untruncated."""
    from minitbt.data import Seq2SeqData, load_tokenizer
    tok = tokenizer or load_tokenizer(task_dir)
    big = 10 ** 9
    return count_tokens(Seq2SeqData.from_task(task_dir, split, tok, big, big), tok.get_vocab_size())
