"""Condition texts (conditional tasks) to the clean condition latents a sampler holds fixed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import numpy as np

from elf_eqx.data import DataSpec, collate
from elf_eqx.encoders.latent_encoder import LatentEncoder, TokenBatch
from elf_eqx.baselines.token_sampling import TokenCondition
from elf_eqx.sampler import Condition


def condition_ids(tokenizer: Any, texts: Sequence[str], max_input_length: int) -> list[list[int]]:
    """Token ids of each condition text (``add_special_tokens=False``, as in training), cut to
    ``max_input_length``."""
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [list(ids)[:max_input_length] for ids in encoded]


def encode_conditions(
    latent_encoder: LatentEncoder | None,
    rows: Sequence[Sequence[int] | np.ndarray],
    cond_lengths: Sequence[int] | np.ndarray,
    spec: DataSpec,
) -> Condition | TokenCondition:
    """The condition of ``B`` rows whose first ``cond_lengths[b]`` ids are the condition (ids after
    them, if any, are ignored): for ELF a :class:`Condition` of latents ``(B, L, D)`` at the
    condition positions, zero elsewhere, and the ``(B, L)`` condition mask; with no
    ``latent_encoder`` (the baselines) a :class:`TokenCondition` of the ids and the mask."""
    batch = TokenBatch.from_numpy(collate(rows, cond_lengths, spec))
    if latent_encoder is None:
        return TokenCondition(batch.input_ids, batch.cond_mask)
    latents = eqx.filter_jit(latent_encoder.encode_conditions)(batch)
    return Condition(latents, batch.cond_mask)
