"""Reference-overlap metrics of conditional generation (ELF_SPEC.md §5): sacrebleu corpus BLEU
(lowercase, effective order) and rouge-score ROUGE-1/2/L F-measure with stemming, ×100."""

from __future__ import annotations

from collections.abc import Sequence


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no hypotheses to score")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0–100), lowercase, effective order, one reference per hypothesis."""
    from sacrebleu.metrics import BLEU

    _check(hypotheses, references)
    return float(BLEU(lowercase=True, effective_order=True).corpus_score(list(hypotheses), [list(references)]).score)


def rouge_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure ×100 (rouge-score, Porter stemming): ``{rouge1, rouge2, rougeL}``."""
    from rouge_score import rouge_scorer

    _check(hypotheses, references)
    names = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(names), use_stemmer=True)
    totals = dict.fromkeys(names, 0.0)
    for hyp, ref in zip(hypotheses, references):
        scores = scorer.score(ref, hyp)
        for name in names:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / len(hypotheses) for name, total in totals.items()}
