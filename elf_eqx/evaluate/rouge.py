"""ROUGE-1/2/L of conditional generation (docs/method.md#evaluation): rouge-score F-measure, Porter
stemming, ×100, averaged over samples. rouge-score lowercases and keeps only ``[a-z0-9]`` tokens;
its stemmer is nltk's ``PorterStemmer``, which needs no downloaded data."""

from __future__ import annotations

from collections.abc import Sequence

from elf_eqx.evaluate.pairs import check_pairs

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean F-measure ×100 over ``N`` (hypothesis, reference) pairs: ``{rouge1, rouge2, rougeL}``
    (``rougeL``: sentence-level longest common subsequence, not the summary-level ``rougeLsum``)."""
    from rouge_score import rouge_scorer

    check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        scores = scorer.score(reference, hypothesis)  # rouge-score's order: (target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / len(hypotheses) for name, total in totals.items()}
