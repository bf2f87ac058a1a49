"""Generative perplexity of decoded samples under a GPT-2-family judge (docs/method.md#evaluation).

The samples are retokenized with the judge's tokenizer (no special tokens) and truncated to the
judge's context (at most 1,024 ids). Token ``i ≥ 1`` of a row is scored by ``−log p(x_i | x_<i)``
when it is not EOS or is the row's first EOS (:func:`elf_eqx.evaluate.judge.scoring_mask`); the
figure is corpus-level, ``exp(Σ NLL / Σ scored tokens)`` over all rows.

EOS convention: the MDLM/Duo evaluation retokenizes with padding = EOS, so the EOS right after
a sample's text (its first pad) is scored: the judge is asked whether the text ends there.
``append_eos=True`` (the default everywhere in :mod:`elf_eqx.evaluate`) reproduces that by
appending one EOS to each row before truncation; ``append_eos=False`` scores text tokens only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Bool, Int
from tqdm.auto import tqdm

from elf_eqx.evaluate.judge import GPT2, judge_nll

PAD_TO_MULTIPLE_OF = 64  # batch lengths are rounded up to this, so few shapes are compiled


@dataclasses.dataclass(frozen=True)
class GenPPL:
    """A corpus Gen. PPL and what it was computed from."""

    gen_ppl: float
    """``exp(total_nll / num_scored_tokens)``; NaN when no token was scored."""
    total_nll: float
    num_scored_tokens: int


def judge_token_rows(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each of ``N`` texts as the judge tokenizer's ids (no special tokens, not truncated)."""
    return [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]


def scored_rows(
    rows: Sequence[Sequence[int]], *, eos_id: int, max_length: int, append_eos: bool = True
) -> list[list[int]]:
    """The rows the judge reads: each row, then one EOS when ``append_eos``, cut to ``max_length``
    (a row that fills the context loses the appended EOS, as with the reference's truncation)."""
    return [(list(row) + [eos_id] if append_eos else list(row))[:max_length] for row in rows]


def padded_batch(
    rows: Sequence[Sequence[int]], *, batch_size: int, eos_id: int, max_length: int
) -> tuple[Int[np.ndarray, "B L"], Bool[np.ndarray, "B L"]]:
    """Right-padded ids ``(batch_size, L)`` int32 (pads hold EOS) and their validity mask
    ``(batch_size, L)`` for at most ``batch_size`` rows; missing rows are all padding. ``L`` is the
    longest row rounded up to :data:`PAD_TO_MULTIPLE_OF` (so few shapes compile), at most ``max_length``."""
    longest = max([len(row) for row in rows] + [1])
    length = min(max_length, -(-longest // PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF)
    ids = np.full((batch_size, length), eos_id, np.int32)
    mask = np.zeros((batch_size, length), bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = True
    return ids, mask


def corpus_gen_ppl(
    judge: GPT2,
    rows: Sequence[Sequence[int]],
    *,
    eos_id: int,
    batch_size: int = 8,
    compute_dtype: Any = jnp.float32,
    progress: bool = False,
) -> GenPPL:
    """Corpus Gen. PPL of ``N`` judge-token rows (already :func:`scored_rows`, each at most the
    judge's ``n_positions`` long), scored in batches of ``batch_size`` rows. Rows are grouped by
    length so short samples are not padded to the longest; the sum does not depend on the order.
    ``compute_dtype=jnp.bfloat16`` runs the judge's blocks in bf16 (logits stay float32).
    ``progress`` shows a tqdm bar over batches."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    max_length = judge.config.n_positions
    if any(len(row) > max_length for row in rows):
        raise ValueError(f"a row is longer than the judge's context ({max_length}); truncate with scored_rows")
    by_length = sorted(rows, key=len, reverse=True)
    total_nll, total_count = 0.0, 0
    starts = range(0, len(by_length), batch_size)
    for start in tqdm(starts, desc="Gen. PPL", unit="batch", disable=not progress or len(starts) < 2):
        ids, mask = padded_batch(by_length[start : start + batch_size], batch_size=batch_size, eos_id=eos_id,
                                 max_length=max_length)
        nll, counted = judge_nll(judge, jnp.asarray(ids), jnp.asarray(mask), eos_id, compute_dtype)
        nll, counted = np.asarray(nll, np.float64), np.asarray(counted)
        total_nll += float(nll[counted].sum())
        total_count += int(counted.sum())
    ppl = math.exp(total_nll / total_count) if total_count else float("nan")
    return GenPPL(gen_ppl=ppl, total_nll=total_nll, num_scored_tokens=total_count)
