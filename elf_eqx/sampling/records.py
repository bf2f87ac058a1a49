"""Files of the sampling CLI: condition inputs in, sample records out (JSONL).

A samples file has one JSON object per sample: ``index``, ``text`` (decoded), ``token_ids``
(the output ids of :func:`output_ids`), ``input`` and ``reference`` for conditional samples, and
``settings`` (everything that produced it: the ``family``, that family's own sampler settings —
ELF's also its flow constants — the ``nfe``, the seed, the source, ...). ``python -m elf_eqx.eval``
reads it; :func:`record_sampler` reads a record's sampler settings back, from records of every
version (those written before the families had settings of their own carry ELF's for every family).

Sample rows become text as the reference's evaluation does it (docs/method.md#sampling): each
row's own condition prefix is stripped, at most ``max_length − max_input_length`` ids are kept,
everything from the first EOS on is dropped, and the rest is detokenized with special tokens
skipped, so a stray pad inside the text is dropped and the words after it are kept.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Bool, Int

from elf_eqx.data import DataSpec

from elf_eqx.errors import ConfigError, DataError
from elf_eqx.families import ELF_FAMILY, Family, family_named
from elf_eqx.io.jsonl import json_lines
from elf_eqx.io.atomic import refuse_existing, write_text_atomic
from elf_eqx.io.storage import AnyPath, user_path
from elf_eqx.sampling.settings_base import SamplerSettingsBase


@dataclasses.dataclass(frozen=True)
class ConditionInput:
    """One condition text and, when the input file has it, the gold output."""

    text: str
    reference: str | None = None


def read_condition_inputs(path: str | Path) -> list[ConditionInput]:
    """The records of a JSONL file with an ``input`` field (``output``, when present, is the
    reference). Errors name the file and line."""
    inputs = []
    for number, record in json_lines(path, "--input"):
        if not isinstance(record.get("input"), str):
            raise DataError(f"{path}:{number}: expected an object with a string 'input' field")
        reference = record.get("output")
        inputs.append(ConditionInput(record["input"], reference if isinstance(reference, str) else None))
    if not inputs:
        raise DataError(f"{path}: no records")
    return inputs


def output_ids(
    tokens: Int[np.ndarray, "B L"], cond_mask: Bool[np.ndarray, "B L"], *, eos_id: int, max_output_length: int
) -> list[list[int]]:
    """The output ids of ``B`` sample rows ``tokens (B, L)``: row ``b`` without its own condition
    prefix (the ``cond_mask[b]`` positions, which lead the row), its next ``max_output_length`` ids
    (``max_length − max_input_length``), cut before the first ``eos_id``. Other special ids (a
    stray pad) stay in; :func:`decode_outputs` drops them from the text."""
    tokens, cond_mask = np.asarray(tokens), np.asarray(cond_mask, bool)
    if tokens.shape != cond_mask.shape:
        raise ValueError(f"sample tokens {tokens.shape} and condition mask {cond_mask.shape} differ in shape")
    if max_output_length < 0:
        raise ValueError(f"max_output_length must be at least 0, got {max_output_length}")
    rows = []
    for row, cond in zip(tokens, cond_mask):
        start = int(cond.sum())
        if not cond[:start].all():
            raise ValueError("a sample row's condition positions do not lead the row")
        ids = [int(t) for t in row[start : start + max_output_length]]
        rows.append(ids[: ids.index(eos_id)] if eos_id in ids else ids)
    return rows


def decode_outputs(
    tokenizer: Any, tokens: Int[np.ndarray, "B L"], cond_mask: Bool[np.ndarray, "B L"], spec: DataSpec
) -> tuple[list[str], list[list[int]]]:
    """``(texts, ids)`` of ``B`` sample rows ``tokens (B, L)`` with condition mask ``cond_mask (B, L)``
    laid out by ``spec``: :func:`output_ids` (EOS ``spec.eos_id``, at most ``max_length −
    max_input_length`` ids), each decoded with special tokens skipped. Every place that turns
    sample rows into text uses this."""
    ids = output_ids(tokens, cond_mask, eos_id=spec.eos_id,
                     max_output_length=spec.max_length - (spec.max_input_length or 0))
    return [tokenizer.decode(row, skip_special_tokens=True) for row in ids], ids


def sample_record(
    index: int, text: str, token_ids: list[int], settings: dict[str, Any], condition: ConditionInput | None
) -> dict[str, Any]:
    """One line of a samples file."""
    record: dict[str, Any] = {"index": index, "text": text, "token_ids": token_ids}
    if condition is not None:
        record["input"] = condition.text
        if condition.reference is not None:
            record["reference"] = condition.reference
    record["settings"] = settings
    return record


def record_sampler(settings: dict[str, Any]) -> tuple[Family, SamplerSettingsBase]:
    """The family and its sampler settings that a record's ``settings`` name. A record without a
    family is ELF's (written before the baselines); the settings of other families (in a
    baseline's record written before each family had its own: ELF's) and the rest of the record
    are not the family's and are ignored."""
    family = family_named(settings.get("family", ELF_FAMILY.name), "the sample record's family")
    return family, family.sampler_settings(settings)


def check_writable(path: str | Path, overwrite: bool) -> AnyPath:
    """``path`` if writing it would destroy nothing (or ``overwrite`` is set); else an error."""
    path = refuse_existing(user_path(path, "--output"), overwrite, other="--output")
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder; give a .jsonl file name")
    return path


def write_samples_jsonl(path: str | Path | AnyPath, records: Sequence[dict[str, Any]]) -> AnyPath:
    """Write ``records`` as JSONL atomically (a killed run leaves no partial file)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return write_text_atomic(path, text)
