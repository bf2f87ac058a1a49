"""Normalise judge training text like the decoded samples it will score.

ELF samples are decoded by the model's own tokenizer (often uncased, e.g. MiniLM's BERT
WordPiece), so their casing, accents and spacing differ from the raw corpus. Passing the corpus
through the same encode+decode makes the judge's training text look like those samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def roundtrip_texts(tokenizer: Any, texts: Sequence[str]) -> list[str]:
    """Each text encoded (no special tokens, no truncation) and decoded again with ``tokenizer``,
    skipping special tokens exactly as the ELF sample decoder does."""
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in ids]


def normalise_texts(texts: Sequence[str], *, lowercase: bool = False, roundtrip: Any | None = None) -> list[str]:
    """``texts`` round-tripped through the ``roundtrip`` tokenizer (if given), then lowercased
    (if asked); empty results are dropped."""
    out = roundtrip_texts(roundtrip, texts) if roundtrip is not None else list(texts)
    if lowercase:
        out = [t.lower() for t in out]
    return [t for t in out if t.strip()]
