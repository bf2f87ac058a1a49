"""The GPT-2 judge that scores generated text (generative perplexity, ELF_SPEC.md §5)."""

from elf_eqx.judge.gpt2 import (
    GPT2,
    GPT2Config,
    generative_perplexity,
    generative_perplexity_of_texts,
    judge_nll,
    load_judge,
    load_judge_tokenizer,
    retokenize,
    scoring_mask,
    token_nll,
)

__all__ = [
    "GPT2",
    "GPT2Config",
    "generative_perplexity",
    "generative_perplexity_of_texts",
    "judge_nll",
    "load_judge",
    "load_judge_tokenizer",
    "retokenize",
    "scoring_mask",
    "token_nll",
]
