"""The files ``python -m elf_eqx.eval`` reads: samples JSONL (from ``python -m elf_eqx.sample``)
and ``{input, output}`` references JSONL. Every error names the file and, where there is one, the line."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from elf_eqx.errors import DataError
from elf_eqx.io.jsonl import json_lines


@dataclasses.dataclass(frozen=True)
class SampleRecord:
    """One line of a samples file."""

    text: str
    where: str
    """``file:line``, for messages."""
    input: str | None = None
    reference: str | None = None
    settings: dict[str, Any] | None = None


def optional_str(record: dict[str, Any], field: str, where: str) -> str | None:
    """``record[field]`` when present; an error when it is present but not a string."""
    value = record.get(field)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: '{field}' must be a string, got {type(value).__name__}")
    return value


def read_samples(path: str | Path) -> list[SampleRecord]:
    """The records of one samples file (each needs a string ``text``); an empty file is an error."""
    records = []
    for number, raw in json_lines(path, "--samples"):
        where = f"{path}:{number}"
        if not isinstance(raw.get("text"), str):
            raise DataError(f"{where}: a sample needs a string 'text' field")
        settings = raw.get("settings")
        records.append(SampleRecord(text=raw["text"], where=where, input=optional_str(raw, "input", where),
                                    reference=optional_str(raw, "reference", where),
                                    settings=settings if isinstance(settings, dict) else None))
    if not records:
        raise DataError(f"{path}: no samples")
    return records


@dataclasses.dataclass(frozen=True)
class ReferencePair:
    """One record of a references file: the condition and its gold output."""

    input: str | None
    output: str


def read_references(path: str | Path) -> list[ReferencePair]:
    """The records of an ``{input, output}`` JSONL file (``output`` required)."""
    pairs = []
    for number, raw in json_lines(path, "--references"):
        where = f"{path}:{number}"
        output = optional_str(raw, "output", where)
        if output is None:
            raise DataError(f"{where}: a reference record needs a string 'output' field")
        pairs.append(ReferencePair(optional_str(raw, "input", where), output))
    if not pairs:
        raise DataError(f"{path}: no references")
    return pairs


def align_references(samples: Sequence[SampleRecord], pairs: Sequence[ReferencePair], path: str | Path) -> list[str]:
    """The gold output of each sample, pairing samples and references by order.

    The counts must match, except that a longer references file is accepted when every sample and
    its reference have an ``input`` (the file's first records were the conditions, e.g. sampled
    with ``--num-samples N``). Where a sample and its reference both have an ``input``, the two
    must be equal.
    """
    inputs_known = all(s.input is not None and p.input is not None for s, p in zip(samples, pairs))
    if len(pairs) < len(samples) or (len(pairs) > len(samples) and not inputs_known):
        raise DataError(f"--references {path} has {len(pairs)} records but there are {len(samples)} samples "
                        "(they are paired by order)")
    for number, (sample, pair) in enumerate(zip(samples, pairs), start=1):
        if sample.input is not None and pair.input is not None and sample.input != pair.input:
            raise DataError(f"{sample.where}: its input differs from record {number} of --references {path}; "
                            "the files are not aligned")
    return [pair.output for pair in pairs[: len(samples)]]


def own_references(samples: Sequence[SampleRecord]) -> list[str] | None:
    """The samples' own ``reference`` fields: all of them, ``None`` when no sample has one, and an
    error naming the first sample without one when only some have."""
    missing = [s for s in samples if s.reference is None]
    if len(missing) == len(samples):
        return None
    if missing:
        raise DataError(f"{missing[0].where}: no 'reference' field while other samples have one; "
                        "pass --references FILE to score them all")
    return [s.reference for s in samples]
