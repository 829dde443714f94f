"""docs/score_ci.py: its per-sentence statistics give back the scores of minitbt.metrics, so its
bootstrap resamples the same metric that `minitbt eval` reports."""
import importlib.util
import os

import numpy as np
import pytest

from minitbt import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("score_ci", os.path.join(ROOT, "docs", "score_ci.py"))
score_ci = importlib.util.module_from_spec(spec)
spec.loader.exec_module(score_ci)

REFS = ["the cat sat on the mat", "a library for reading image files", "tools for the command line",
        "ein kleines Programm", "Daten lesen und schreiben"]
HYPS = ["the cat sat on a mat", "library to read image files", "command line tools",
        "ein Programm", ""]


@pytest.mark.parametrize("kind,key", [("translation", "bleu"), ("summarization", "rouge1")])
def test_sentence_statistics_sum_to_the_corpus_score(kind, key):
    stats, score = score_ci.sentence_stats(kind, HYPS, REFS)
    assert stats.shape[0] == len(HYPS)
    assert round(score(stats.sum(axis=0)), 2) == metrics.score(kind, HYPS, REFS)[key]
    sub = np.array([0, 2, 2, 4])                               # a resample is a corpus of its own
    want = metrics.score(kind, [HYPS[i] for i in sub], [REFS[i] for i in sub])[key]
    assert round(score(stats[sub].sum(axis=0)), 2) == want
