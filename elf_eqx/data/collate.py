"""Rows of token ids to a padded NumPy batch with the masks of docs/method.md#latents, #objective."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Bool, Int

from elf_eqx.errors import DataError
from elf_eqx.data.spec import DataSpec


def collate(
    rows: Sequence[Sequence[int] | Int[np.ndarray, " _n"]],
    cond_lengths: Sequence[int] | Int[np.ndarray, " B"],
    spec: DataSpec,
) -> dict[str, Int[np.ndarray, "B L"] | Bool[np.ndarray, "B L"]]:
    """Pad ``B`` rows (condition ids then target ids, each ≤ L = ``spec.max_length`` long;
    row ``b`` has ``cond_lengths[b]`` condition ids) into a batch of ``(B, L)`` arrays:

    - ``input_ids`` int32: the ids, then ``spec.pad_id`` (pad mode) or ``spec.eos_id`` (eos mode).
    - ``valid_mask`` bool: the row's real ids, condition and target; padding is never valid,
      also in eos mode. The encoder attends only to these.
    - ``cond_mask`` bool: the condition positions (all False for unconditional data).
    - ``loss_mask`` bool: the scored positions: valid target ids (pad mode), or every target
      position including the EOS padding (eos mode). Never a condition position.
    """
    length = spec.max_length
    lengths = np.fromiter((len(row) for row in rows), np.int64, len(rows))
    cond = np.asarray(cond_lengths, np.int64).reshape(-1)
    if cond.shape[0] != len(rows):
        raise DataError(f"collate: {len(rows)} rows but {cond.shape[0]} condition lengths")
    if np.any(lengths > length):
        raise DataError(f"collate: a row has {lengths.max()} ids, more than max_length={length}")
    if np.any((cond < 0) | (cond > lengths)):
        raise DataError("collate: a condition length is negative or longer than its row")
    input_ids = np.full((len(rows), length), spec.fill_id, np.int32)
    for b, row in enumerate(rows):
        input_ids[b, : lengths[b]] = row
    positions = np.arange(length)[None, :]
    valid_mask = positions < lengths[:, None]
    cond_mask = positions < cond[:, None]
    loss_mask = ~cond_mask & (valid_mask if spec.pad_mode == "pad" else True)
    return {
        "input_ids": input_ids,
        "valid_mask": valid_mask,
        "cond_mask": cond_mask,
        "loss_mask": loss_mask,
    }


