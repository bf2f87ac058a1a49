"""Corpus BLEU of conditional generation (docs/method.md#evaluation): sacrebleu, lowercase, effective order."""

from __future__ import annotations

from collections.abc import Sequence

from elf_eqx.evaluate.pairs import check_pairs


def bleu_metric():
    """The sacrebleu ``BLEU`` of the convention: default 13a tokenizer, exp smoothing, up to
    4-grams, ``lowercase=True``, ``effective_order=True`` (orders with no matches are dropped)."""
    from sacrebleu.metrics import BLEU

    return BLEU(lowercase=True, effective_order=True)


def scored_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """``(corpus BLEU 0–100, sacrebleu signature)`` of ``N`` hypotheses against ``N`` references,
    one reference per hypothesis; the signature (tokenizer, case, smoothing, version) is for reports."""
    check_pairs(hypotheses, references)
    metric = bleu_metric()
    score = metric.corpus_score(list(hypotheses), [list(references)]).score
    return float(score), str(metric.get_signature())


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0–100) of ``N`` hypotheses against ``N`` references."""
    return scored_bleu(hypotheses, references)[0]
