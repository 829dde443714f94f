"""Thin wrappers over the metrics the field reports: sacrebleu's BLEU and chrF, rouge-score's ROUGE."""


def bleu(hypotheses, references) -> dict:
    """Corpus BLEU and chrF (sacrebleu defaults: 13a tokenisation, exp smoothing)."""
    import sacrebleu
    _check(hypotheses, references)
    bleu_metric, chrf_metric = sacrebleu.BLEU(), sacrebleu.CHRF()
    b = bleu_metric.corpus_score(hypotheses, [references])
    c = chrf_metric.corpus_score(hypotheses, [references])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2),
            "bleu_signature": str(bleu_metric.get_signature())}


def rouge(hypotheses, references) -> dict:
    """Mean ROUGE-1/2/L F1 x 100 (rouge-score with the Porter stemmer, as in the TBT/BART papers)."""
    from rouge_score import rouge_scorer
    _check(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for h, r in zip(hypotheses, references):
        for key, s in scorer.score(r, h).items():
            totals[key] += s.fmeasure
    n = max(1, len(hypotheses))
    return {key: round(100 * v / n, 2) for key, v in totals.items()}


def lead(sources, n_words: int = 0) -> list:
    """The trivial baseline: each source's first ``n_words`` words (0: the whole source, i.e. a
    copy). For summarization the lead is what a model must beat; for translation, the copy."""
    return [" ".join(s.split()[:n_words]) if n_words else s for s in sources]


def score(task_kind: str, hypotheses, references) -> dict:
    """BLEU/chrF for "translation", ROUGE for "summarization"."""
    if task_kind == "translation":
        return bleu(hypotheses, references)
    if task_kind == "summarization":
        return rouge(hypotheses, references)
    raise ValueError(f"unknown task kind {task_kind!r}")


def _check(hypotheses, references):
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
