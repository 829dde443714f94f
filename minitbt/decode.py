"""Greedy and beam-search decoding with the incremental KV cache.

Works with any model that offers ``encode(src) -> (memory, src)``, ``init_cache()`` and
``decode(new_tokens, memory, src, cache, offset) -> logits`` (``src``: whatever the model's decoder
needs of the source beside its memory, one row per sentence): the training-time
Seq2SeqTransformer (float or fake-quantized) and the packed model alike. Each step feeds
only the newest token; the keys and values of earlier steps come from the cache.

The fast path: a compiled model (minitbt.packed.compiled, ``model.compiled``) runs the same two
searches in C (minitbt/_decoder.h, ``tbt_greedy`` and ``tbt_beam``), one source at a time.
"""
import numpy as np

from minitbt.data import BOS, EOS, PAD
from minitbt.tensor import Tensor, no_grad


def _logits(x):
    return x.data if isinstance(x, Tensor) else x


def greedy(model, src: np.ndarray, max_len: int = 64, min_len: int = 0) -> list:
    """Pick argmax p(y_t | y_<t, x) at every step. src (B, S) -> list of B id lists (no specials)."""
    if getattr(model, "compiled", False):
        return model.greedy(src, max_len, min_len)
    src = np.asarray(src)
    B = src.shape[0]
    max_len = min(max_len, model.config.max_len)          # the position table's length
    with no_grad():
        memory, src_rows = model.encode(src)
        cache = model.init_cache()
        token = np.full((B, 1), BOS, dtype=np.int32)
        out = np.full((B, max_len), PAD, dtype=np.int32)
        done = np.zeros(B, dtype=bool)
        for t in range(max_len):
            logits = _logits(model.decode(token, memory, src_rows, cache, offset=t))[:, -1]   # (B, V)
            if t < min_len:
                logits = logits.copy()
                logits[:, EOS] = -np.inf
            nxt = logits.argmax(axis=-1).astype(np.int32)
            nxt[done] = PAD
            out[:, t] = nxt
            done |= nxt == EOS
            if done.all():
                break
            token = nxt[:, None]
    return [_strip(row) for row in out]


def _strip(ids) -> list:
    ids = [int(i) for i in ids]
    if EOS in ids:
        ids = ids[: ids.index(EOS)]
    return [i for i in ids if i != PAD]


def _reorder_cache(cache, rows):
    """Keep the cached keys/values of the beams that survive (rows index the batch axis)."""
    for layer in cache:
        for part in layer.values():
            for key, val in part.items():
                part[key] = Tensor(val.data[rows]) if isinstance(val, Tensor) else val[rows]


def beam_search(model, src: np.ndarray, beam_size: int = 4, max_len: int = 64, min_len: int = 0,
                length_penalty: float = 1.0) -> list:
    """Beam search, one source at a time, all beams of a source decoded as one batch.

    A finished hypothesis y scores  log p(y | x) / |y|^length_penalty  (|y| counts <eos>);
    <eos> is forbidden before ``min_len`` tokens. Returns a list of id lists, one per source.
    """
    if getattr(model, "compiled", False):
        return model.beam_search(src, beam_size, max_len, min_len, length_penalty)
    results = []
    for row in np.asarray(src):
        results.append(_beam_one(model, row[None, :], beam_size, max_len, min_len, length_penalty))
    return results


def _beam_one(model, src, k, max_len, min_len, alpha):
    max_len = min(max_len, model.config.max_len)
    with no_grad():
        memory, src_rows = model.encode(src)
        cache = model.init_cache()
        seqs = np.full((1, 0), PAD, dtype=np.int32)      # (beams, t)
        scores = np.zeros(1)                              # log p of each live beam
        token = np.full((1, 1), BOS, dtype=np.int32)
        finished = []                                     # (normalised score, ids)
        for t in range(max_len):
            logits = _logits(model.decode(token, memory, src_rows, cache, offset=t))[:, -1].astype(np.float64)
            logp = logits - logits.max(axis=-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(axis=-1, keepdims=True))   # (beams, V)
            if t < min_len:
                logp[:, EOS] = -np.inf
            cand = (scores[:, None] + logp).ravel()
            V = logp.shape[1]
            top = np.argsort(-cand, kind="stable")[: 2 * k]
            keep_rows, keep_tok, keep_score = [], [], []
            for c in top:
                beam, tok = divmod(int(c), V)
                if not np.isfinite(cand[c]):
                    continue
                if tok == EOS:
                    finished.append((cand[c] / (t + 1) ** alpha, seqs[beam].tolist()))
                else:
                    keep_rows.append(beam)
                    keep_tok.append(tok)
                    keep_score.append(cand[c])
                if len(keep_rows) == k:
                    break
            best_live = max(keep_score) / (max_len ** alpha if alpha >= 0 else 1) if keep_score else -np.inf
            if len(finished) >= k and max(f[0] for f in finished) >= best_live or not keep_rows:
                break
            rows = np.array(keep_rows)
            seqs = np.concatenate([seqs[rows], np.array(keep_tok, dtype=np.int32)[:, None]], axis=1)
            scores = np.array(keep_score)
            if t == 0:                                    # one beam became k: widen the memory once
                memory = Tensor(np.repeat(memory.data, len(rows), axis=0)) if isinstance(memory, Tensor) \
                    else np.repeat(memory, len(rows), axis=0)
                src_rows = np.repeat(src_rows, len(rows), axis=0)
                _reorder_cache(cache, rows)
            else:
                _reorder_cache(cache, rows)
                if len(rows) != memory.shape[0]:
                    memory, src_rows = memory[: len(rows)] if not isinstance(memory, Tensor) \
                        else Tensor(memory.data[: len(rows)]), src_rows[: len(rows)]
            token = seqs[:, -1:]
        if not finished:                                  # max_len reached: score live beams
            finished = [(s / max(1, seqs.shape[1]) ** alpha, q.tolist()) for s, q in zip(scores, seqs)]
    return max(finished, key=lambda f: f[0])[1]
