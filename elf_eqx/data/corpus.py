"""Paths to the data shipped with the package: the KJV subset."""

from __future__ import annotations

from pathlib import Path

from elf_eqx.errors import DataError

_CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
_CORPUS_FILES = {"train": "kjv_subset.jsonl", "valid": "kjv_subset_valid.jsonl"}


def embedded_corpus_path(split: str = "train") -> Path:
    """The shipped public-domain KJV subset for ``split`` ("train" or "valid"): a JSONL file of
    ``{"id", "text"}`` chapter records, the no-download default corpus."""
    if split not in _CORPUS_FILES:
        raise DataError(f"embedded corpus has splits {sorted(_CORPUS_FILES)}, not {split!r}")
    path = _CORPUS_DIR / _CORPUS_FILES[split]
    if not path.is_file():
        raise DataError(f"embedded corpus file is missing from the installed package: {path}")
    return path
