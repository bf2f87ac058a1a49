"""The evaluation of a set of samples: Gen. PPL and entropy (unconditional), BLEU and ROUGE
(conditional), as ELF_SPEC.md §5 defines them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from elf_eqx.judge.gpt2 import GPT2, JUDGE_MAX_LENGTH, generative_perplexity
from elf_eqx.judge.gpt2 import retokenize
from elf_eqx.metrics.entropy import mean_entropy
from elf_eqx.metrics.overlap import corpus_bleu, rouge_scores


def evaluate_unconditional(
    texts: Sequence[str],
    judge: GPT2,
    judge_tokenizer: Any,
    *,
    batch_size: int = 8,
    append_eos: bool = True,
    compute_dtype: Any = jnp.float32,
) -> dict[str, float]:
    """Gen. PPL and mean unigram entropy of decoded samples.

    Each text is retokenized for the judge (no special tokens; truncated to the judge's context,
    at most 1,024). Gen. PPL is ``exp(Σ NLL / Σ counted tokens)`` over the corpus, counting every
    non-EOS token after the first position and the first EOS; with ``append_eos`` (default) an
    EOS follows each text, as the MDLM/Duo evaluation's EOS padding does, so ending the text is
    scored. Entropy is per sample over its judge token ids (EOS excluded), in nats, averaged over
    the non-empty samples. Returns ``{gen_ppl, entropy, num_samples, num_empty, num_tokens}``.
    """
    if not texts:
        raise ValueError("no samples to evaluate")
    max_length = min(JUDGE_MAX_LENGTH, judge.config.n_positions)
    plain = [list(judge_tokenizer(t, add_special_tokens=False)["input_ids"])[:max_length] for t in texts]
    entropy, empty = mean_entropy(plain)
    ids, mask = retokenize(judge_tokenizer, texts, max_length=max_length, append_eos=append_eos)
    ppl = generative_perplexity(judge, ids, mask, eos_id=judge_tokenizer.eos_token_id, batch_size=batch_size,
                                compute_dtype=compute_dtype)
    return {"gen_ppl": ppl, "entropy": entropy, "num_samples": len(texts), "num_empty": empty,
            "num_tokens": int(sum(len(p) for p in plain))}


def evaluate_conditional(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``{bleu, rouge1, rouge2, rougeL, num_samples}`` of generated outputs against references."""
    return {"bleu": corpus_bleu(hypotheses, references), **rouge_scores(hypotheses, references),
            "num_samples": len(hypotheses)}
