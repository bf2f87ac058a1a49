"""Files of the sampling CLI: condition inputs in, sample records out (JSONL).

A samples file has one JSON object per sample: ``index``, ``text`` (decoded), ``token_ids``
(the model tokenizer's ids up to the first EOS/pad), ``input`` and ``reference`` for conditional
samples, and ``settings`` (everything that produced it). ``python -m elf_eqx.eval`` reads it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elf_eqx.io.jsonl import json_lines
from elf_eqx.io.atomic import refuse_existing, write_text_atomic


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
            raise ValueError(f"{path}:{number}: expected an object with a string 'input' field")
        reference = record.get("output")
        inputs.append(ConditionInput(record["input"], reference if isinstance(reference, str) else None))
    if not inputs:
        raise ValueError(f"{path}: no records")
    return inputs


def target_ids(row: np.ndarray, target: np.ndarray, stop_ids: Sequence[int]) -> list[int]:
    """The ids of one sample ``row (L,)`` at its target positions ``target (L,)``, up to (not
    including) the first id in ``stop_ids`` (EOS, pad)."""
    ids = [int(t) for t in np.asarray(row)[np.asarray(target, bool)]]
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i]
    return ids


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


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """``path`` if writing it would destroy nothing (or ``overwrite`` is set); else an error."""
    path = refuse_existing(path, overwrite, other="--output")
    if path.is_dir():
        raise IsADirectoryError(f"--output {path} is a folder; give a .jsonl file name")
    return path


def write_samples_jsonl(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write ``records`` as JSONL atomically (a killed run leaves no partial file)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_text_atomic(path, text)
    return Path(path)
