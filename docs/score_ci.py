"""How sure a row's ratio to FP is: a paired bootstrap over the test sentences (Koehn 2004).

    python docs/score_ci.py data/ddtp-en-de docs/runs/table/ddtp-fp.test.hyp docs/runs/table/ddtp-*.test.hyp
    python docs/score_ci.py data/debian-summ docs/runs/table/summ-fp.test.hyp docs/runs/table/summ-*.test.hyp

The first hypothesis file is the FP row. For each other row it prints the score (corpus BLEU for
translation, mean ROUGE-1 F1 for summarization: the metric of the issue's targets), its ratio to
the FP row, and the 95% interval of that ratio over 1,000 resamples of the test sentences; the
same resampled sentences score both systems, so the interval is of the ratio, not of each score.

BLEU is not a mean over sentences, so each resample sums the sentences' n-gram statistics and
scores the sum (sacrebleu's own statistics: the same numbers as `minitbt eval` gives on the whole
split). ROUGE-1 is a mean of per-sentence F1, and so is each resample's.
"""
import argparse
import os
import sys

import numpy as np

from minitbt.datasets import read_split, task_info


def sentence_stats(kind, hyps, refs):
    """(n, k) per-sentence statistics and a function of their column sums -> the score."""
    if kind == "translation":
        from sacrebleu.metrics import BLEU
        bleu = BLEU()
        stats = np.array(bleu._extract_corpus_statistics(hyps, [refs]), dtype=np.int64)
        return stats, lambda s: bleu._compute_score_from_stats(list(s)).score
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    f1 = np.array([[scorer.score(r, h)["rouge1"].fmeasure, 1.0] for h, r in zip(hyps, refs)])   # (F1, count)
    return f1, lambda s: 100 * s[0] / s[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("fp", help="the FP row's test hypotheses")
    ap.add_argument("rows", nargs="+", help="the other rows' test hypotheses")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.resamples < 1:
        ap.error("--resamples must be >= 1")

    def fail(msg):
        print(f"score_ci.py: {msg}", file=sys.stderr)
        sys.exit(2)

    try:
        kind = task_info(args.task)["kind"]
        _, refs = read_split(args.task, "test")
    except (OSError, ValueError) as e:
        fail(str(e))

    def load(path):
        if not os.path.isfile(path):
            fail(f"{path}: no such file")
        with open(path, encoding="utf-8") as f:
            hyps = f.read().split("\n")[:-1]
        if len(hyps) != len(refs):
            fail(f"{path}: {len(hyps)} lines, but the test split of {args.task} has {len(refs)} sentences")
        return sentence_stats(kind, hyps, refs)

    fp, score = load(args.fp)
    rows = [(p, load(p)[0]) for p in args.rows if os.path.abspath(p) != os.path.abspath(args.fp)]
    idx = np.random.default_rng(args.seed).integers(0, len(refs), (args.resamples, len(refs)))
    fp_boot = np.array([score(fp[i].sum(axis=0)) for i in idx])
    metric = "BLEU" if kind == "translation" else "ROUGE-1"
    print(f"| row | {metric} | ratio to FP | 95% interval ({args.resamples} resamples) |")
    print("|---|---|---|---|")
    print(f"| {os.path.basename(args.fp).split('.')[0]} | {score(fp.sum(axis=0)):.2f} | 1.00 | |")
    for path, st in rows:
        ratio = score(st.sum(axis=0)) / score(fp.sum(axis=0))
        boot = np.array([score(st[i].sum(axis=0)) for i in idx]) / fp_boot
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"| {os.path.basename(path).split('.')[0]} | {score(st.sum(axis=0)):.2f} | {ratio:.3f} | "
              f"{lo:.3f} – {hi:.3f} |")


if __name__ == "__main__":
    main()
