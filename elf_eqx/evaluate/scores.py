"""The evaluation of a set of samples as docs/method.md#evaluation defines it: Gen. PPL and entropy
(unconditional), BLEU and ROUGE (conditional). ``python -m elf_eqx.eval`` is a thin layer on these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from elf_eqx.errors import IncompatibleModelError
from elf_eqx.evaluate.judge import GPT2, JUDGE_MAX_LENGTH
from elf_eqx.evaluate.bleu import corpus_bleu
from elf_eqx.evaluate.entropy import mean_entropy
from elf_eqx.evaluate.gen_ppl import corpus_gen_ppl, judge_token_rows, scored_rows
from elf_eqx.evaluate.rouge import rouge_scores

MIN_JUDGE_VOCAB = 256  # a byte-level BPE has at least the 256 byte tokens


def check_judge_tokenizer(judge_tokenizer: Any) -> int:
    """The tokenizer's EOS id, after refusing a tokenizer without EOS or without a vocabulary."""
    if judge_tokenizer.eos_token_id is None:
        raise IncompatibleModelError("the judge tokenizer has no EOS token")
    if len(judge_tokenizer) < MIN_JUDGE_VOCAB:
        # transformers builds an empty GPT-2 tokenizer, silently, from a folder without tokenizer files.
        raise IncompatibleModelError(f"the judge tokenizer has only {len(judge_tokenizer)} ids; is the judge "
                                     "folder missing tokenizer.json (or vocab.json + merges.txt)?")
    return judge_tokenizer.eos_token_id


def evaluate_entropy(texts: Sequence[str], judge_tokenizer: Any) -> dict[str, Any]:
    """Mean unigram entropy (nats) of ``N`` decoded samples over their judge token ids (no EOS,
    not truncated), averaged over the non-empty samples (NaN when all are empty).
    Returns ``{entropy, num_samples, num_empty, num_tokens}``."""
    if not texts:
        raise ValueError("no samples to evaluate")
    check_judge_tokenizer(judge_tokenizer)
    rows = judge_token_rows(judge_tokenizer, texts)
    entropy, num_empty = mean_entropy(rows)
    return {"entropy": entropy, "num_samples": len(texts), "num_empty": num_empty,
            "num_tokens": sum(len(row) for row in rows)}


def evaluate_unconditional(
    texts: Sequence[str],
    judge: GPT2,
    judge_tokenizer: Any,
    *,
    batch_size: int = 8,
    append_eos: bool = True,
    compute_dtype: Any = jnp.float32,
    max_length: int = JUDGE_MAX_LENGTH,
    progress: bool = False,
) -> dict[str, Any]:
    """Gen. PPL and mean unigram entropy of ``N`` decoded samples.

    Gen. PPL (:mod:`elf_eqx.evaluate.gen_ppl`): each text retokenized for the judge, one EOS
    appended when ``append_eos`` (default: the MDLM/Duo padding-with-EOS convention), truncated to
    ``min(max_length, judge n_positions)``, scored in batches of ``batch_size``; NaN when nothing
    is scored. Entropy: :func:`evaluate_entropy`.

    Returns ``{gen_ppl, entropy, num_samples, num_empty, num_tokens, num_scored_tokens,
    num_truncated}``: ``num_empty`` samples have no judge token, ``num_tokens`` counts the texts'
    judge tokens, ``num_truncated`` samples were cut to the judge's context.
    """
    if not texts:
        raise ValueError("no samples to evaluate")
    eos_id = check_judge_tokenizer(judge_tokenizer)
    rows = judge_token_rows(judge_tokenizer, texts)
    largest = max([max(row) for row in rows if row] + [eos_id])
    if largest >= judge.config.vocab_size:
        raise IncompatibleModelError(f"the judge tokenizer gives id {largest} but the judge's vocabulary has "
                                     f"{judge.config.vocab_size} ids: tokenizer and judge do not belong together")
    entropy, num_empty = mean_entropy(rows)
    context = min(max_length, judge.config.n_positions)
    judged = scored_rows(rows, eos_id=eos_id, max_length=context, append_eos=append_eos)
    ppl = corpus_gen_ppl(judge, judged, eos_id=eos_id, batch_size=batch_size, compute_dtype=compute_dtype,
                         progress=progress)
    return {
        "gen_ppl": ppl.gen_ppl,
        "entropy": entropy,
        "num_samples": len(texts),
        "num_empty": num_empty,
        "num_tokens": sum(len(row) for row in rows),
        "num_scored_tokens": ppl.num_scored_tokens,
        "num_truncated": sum(len(row) + int(append_eos) > context for row in rows),
    }


def evaluate_conditional(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """``{bleu, rouge1, rouge2, rougeL, num_samples}`` of ``N`` generated outputs against their
    ``N`` references: sacrebleu corpus BLEU (lowercase, effective order) and mean rouge-score
    F-measure with stemming, all on a 0–100 scale."""
    return {"bleu": corpus_bleu(hypotheses, references), **rouge_scores(hypotheses, references),
            "num_samples": len(hypotheses)}
