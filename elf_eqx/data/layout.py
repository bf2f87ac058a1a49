"""Token-id records to rows of at most ``max_length`` ids (docs/method.md#objective).

A row is ``input_ids`` = condition ids then target ids (unpadded; the collator pads) and
``cond_length``, the number of condition ids at its start (0 for unconditional data).

- Unconditional, ``packing=False``: a document longer than L is cut into L-long pieces; the
  last, shorter piece is padded later. Empty documents give no rows.
- Unconditional, ``packing=True``: within each map batch of documents, the documents are
  concatenated, each followed by EOS, and cut into full L-long rows; the leftover tail of the
  batch (fewer than L ids) is dropped, so rows never straddle two map batches.
- Conditional: condition truncated to ``max_input_length``, target to ``L - len(condition)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets

from elf_eqx.errors import DataError
from elf_eqx.data.spec import DataSpec

ROW_FEATURES = datasets.Features(
    {"input_ids": datasets.List(datasets.Value("int32")), "cond_length": datasets.Value("int32")}
)


def layout_rows(
    dataset: datasets.Dataset,
    spec: DataSpec,
    *,
    conditional: bool,
    strip_pad: bool = False,
    name: str = "dataset",
    num_proc: int | None = None,
    batch_size: int = 1000,
    fingerprint: str | None = None,
) -> datasets.Dataset:
    """Rows (``input_ids`` of length ≤ ``spec.max_length``, ``cond_length``) from a dataset
    of ``input_ids`` (+ ``condition_input_ids`` when ``conditional``). ``strip_pad`` first
    removes trailing ``spec.pad_id`` ids (pre-tokenized data may arrive padded).
    ``fingerprint`` names the result in ``datasets``' own cache."""
    if conditional and not spec.max_input_length:
        raise DataError(f"{name}: conditional data needs max_input_length (the condition's length cap)")
    if conditional and spec.packing:
        raise DataError(f"{name}: packing applies to unconditional data only")

    def strip(ids: list[int]) -> list[int]:
        end = len(ids)
        while strip_pad and end and ids[end - 1] == spec.pad_id:
            end -= 1
        return ids[:end]

    def rows(batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        docs = [strip(ids) for ids in batch["input_ids"]]
        if conditional:
            conds = [strip(ids)[: spec.max_input_length] for ids in batch["condition_input_ids"]]
            out = [c + t[: spec.max_length - len(c)] for c, t in zip(conds, docs)]
            return {"input_ids": out, "cond_length": [len(c) for c in conds]}
        if spec.packing:
            out = _pack(docs, spec.eos_id, spec.max_length)
        else:
            out = [doc[i : i + spec.max_length] for doc in docs for i in range(0, len(doc), spec.max_length)]
        return {"input_ids": out, "cond_length": [0] * len(out)}

    laid_out = dataset.map(
        rows,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        features=ROW_FEATURES,
        new_fingerprint=fingerprint,
        desc="layout rows",
    )
    if len(laid_out) == 0:
        raise DataError(f"{name}: no rows of max_length {spec.max_length} (too little text?)")
    return laid_out


def _pack(docs: list[list[int]], eos_id: int, length: int) -> list[list[int]]:
    stream = [token for doc in docs if doc for token in (*doc, eos_id)]
    return [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)]
