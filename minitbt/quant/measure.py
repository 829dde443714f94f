"""Measuring two compression options on a trained model (the figures of docs/quantization.md):

    python -m minitbt.quant.measure prune --model models/ddtp-en-de-fp.npz --task data/ddtp-en-de
        FQT's FFN pruning (prune.py): per threshold k, the units each layer loses, with the maxima
        taken over the first N validation sentences and the loss measured on the next N
    python -m minitbt.quant.measure embed-bits --model models/ddtp-en-de-fp.npz --task data/ddtp-en-de
        frequency-aware embedding bits (freq_embedding.py) against uniform binary coding: mean bits,
        the reconstruction error weighted by held-out token frequency, and the validation loss with
        only the embedding quantized (post-training, no QAT)

Both are teacher-forced on the validation split and take well under a minute on one core.
"""
from __future__ import annotations

import argparse

import numpy as np

from minitbt.tensor import no_grad


def mean_loss(model, batches) -> float:
    """Teacher-forced cross-entropy per target token (nats)."""
    total, n = 0.0, 0
    pad = model.config.pad_id
    with no_grad():
        for b in batches:
            z = model(b.src, b.tgt_in).data.astype(np.float64)              # (B, T, V)
            t = np.asarray(b.tgt_out)
            z, t = z[t != pad], t[t != pad]                                 # (N, V), (N,)
            m = z.max(axis=1)
            lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
            total += float((lse - z[np.arange(len(t)), t]).sum())
            n += len(t)
    return total / n


def _valid_batches(model, task, n, max_tokens=2000):
    """(first n validation sentences, the next n) as lists of Batches, and the data."""
    from minitbt.data import Seq2SeqData, load_tokenizer
    cap = model.config.max_len
    data = Seq2SeqData.from_task(task, "valid", load_tokenizer(task), cap, cap, limit=2 * n)
    idx = np.arange(len(data))
    step = max(1, max_tokens // cap)

    def cut(sel):
        return [data.collate(sel[i:i + step]) for i in range(0, len(sel), step)]
    return cut(idx[:n]), cut(idx[n:]), data


def measure_prune(model, task, n, thresholds):
    from minitbt.quant.prune import prune_ffn
    measure, held_out, data = _valid_batches(model, task, n)
    base = mean_loss(model, held_out)
    print(f"maxima over {min(n, len(data))} validation sentences; loss on the next {max(len(data) - n, 0)}: "
          f"unpruned {base:.4f} nats/token")
    for k in thresholds:
        pruned, report = prune_ffn(model, measure, threshold=k)
        print()
        print(report)
        print(f"held-out loss {mean_loss(pruned, held_out):.5f} (unpruned {base:.5f})")


def measure_embed_bits(model, task, n, schedules):
    from minitbt.data import Seq2SeqData, load_tokenizer
    from minitbt.quant.freq_embedding import FrequencyAwareBCQ, count_tokens, task_token_counts
    from minitbt.quant.recipe import quantize_model
    V = model.config.vocab_size
    counts = task_token_counts(task)                                        # ranking: the train split
    _, held_out, _ = _valid_batches(model, task, n)
    valid = Seq2SeqData.from_task(task, "valid", load_tokenizer(task), 10 ** 9, 10 ** 9)
    c = count_tokens(valid, V).astype(np.float64)                           # weights: held-out frequency
    W = model.embed.weight.data.astype(np.float64)
    top = np.argsort(-counts, kind="stable")[: max(1, V // 20)]
    share = c[top].sum() / c.sum()
    print(f"vocabulary {V}; the 5% most frequent tokens of the train split are {100 * share:.1f}% of the "
          f"validation tokens")
    print(f"{'embedding':<24}{'bits/weight':>12}{'err (token-weighted)':>22}{'err top 5%':>12}{'err other':>10}"
          f"{'valid loss':>12}")
    rest = np.setdiff1d(np.arange(V), top)
    print(f"{'float32':<24}{32:>12}{0:>22.4f}{0:>12.4f}{0:>10.4f}{mean_loss(model, held_out):>12.4f}")
    for spec in [str(k) for k in (1, 2, 3)] + list(schedules):
        q = FrequencyAwareBCQ(spec, V).set_counts(counts)
        E = q.codes(W).dequantize()
        e = ((W - E) ** 2).sum(axis=1) / np.maximum((W ** 2).sum(axis=1), 1e-30)   # (V,) relative, per row
        weighted = float((c * e).sum() / c.sum())
        qm = quantize_model(model, f"bcq-{q.precision}-32-32", embed_schedule=spec, token_counts=counts)
        name = f"uniform {spec}-bit" if "/" not in spec else spec
        print(f"{name:<24}{q.mean_bits:>12.3f}{weighted:>22.4f}{e[top].mean():>12.4f}{e[rest].mean():>10.4f}"
              f"{mean_loss(qm, held_out):>12.4f}")


def main(argv=None):
    from minitbt.model_io import load_model
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("prune", "embed-bits"))
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True, help="task folder (train split: token counts; valid: the measures)")
    p.add_argument("--sentences", type=int, default=300, help="N validation sentences (default 300)")
    p.add_argument("--thresholds", default="0,1,2,3", help="prune: values of k, comma-separated")
    p.add_argument("--schedules", default="4:0.05/2:0.2/1,3:0.25/2:0.5/1",
                   help="embed-bits: frequency-aware schedules, comma-separated")
    args = p.parse_args(argv)
    model, _ = load_model(args.model)
    if args.what == "prune":
        measure_prune(model, args.task, args.sentences, [float(s) for s in args.thresholds.split(",")])
    else:
        measure_embed_bits(model, args.task, args.sentences, [s for s in args.schedules.split(",") if s])


if __name__ == "__main__":
    main()
