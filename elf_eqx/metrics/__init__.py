"""Sample-quality metrics: Gen. PPL and unigram entropy (unconditional), BLEU and ROUGE (conditional)."""

from elf_eqx.metrics.entropy import mean_entropy, unigram_entropy
from elf_eqx.metrics.evaluate import evaluate_conditional, evaluate_unconditional
from elf_eqx.metrics.overlap import corpus_bleu, rouge_scores

__all__ = [
    "corpus_bleu",
    "evaluate_conditional",
    "evaluate_unconditional",
    "mean_entropy",
    "rouge_scores",
    "unigram_entropy",
]
