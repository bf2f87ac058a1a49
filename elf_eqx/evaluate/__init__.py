"""Sample-quality metrics (docs/method.md#evaluation): Gen. PPL and unigram entropy (unconditional), BLEU
and ROUGE (conditional), and the samples/references files ``python -m elf_eqx.eval`` reads."""

from elf_eqx.evaluate.bleu import corpus_bleu, scored_bleu
from elf_eqx.evaluate.entropy import mean_entropy, unigram_entropy
from elf_eqx.evaluate.scores import check_judge_tokenizer, evaluate_conditional, evaluate_entropy, evaluate_unconditional
from elf_eqx.evaluate.gen_ppl import GenPPL, corpus_gen_ppl, judge_token_rows, scored_rows
from elf_eqx.evaluate.rouge import rouge_scores

__all__ = [
    "GenPPL",
    "check_judge_tokenizer",
    "corpus_bleu",
    "corpus_gen_ppl",
    "evaluate_conditional",
    "evaluate_entropy",
    "evaluate_unconditional",
    "judge_token_rows",
    "mean_entropy",
    "rouge_scores",
    "scored_bleu",
    "scored_rows",
    "unigram_entropy",
]
