"""Raw text records to token ids, once, cached on disk (docs/method.md#latents)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import datasets
import pyarrow.compute as pc

from elf_eqx.data.cache import cache_key, load_or_build, tokenizer_fingerprint
from elf_eqx.errors import DataError
from elf_eqx.data.sources import Source

_TOKENIZE_VERSION = "1"
_IDS = datasets.List(datasets.Value("int32"))


@dataclasses.dataclass(frozen=True)
class TokenizedSource:
    """Token-id records: ``dataset`` has ``input_ids`` (the document, or the target) and, when
    ``conditional``, ``condition_input_ids``; each a variable-length list of int32 ids.
    ``fingerprint`` identifies the ids (source and tokenizer); ``cache_hit`` says whether they
    came from the cache (always False for pre-tokenized sources, which need no work)."""

    name: str
    dataset: datasets.Dataset
    conditional: bool
    fingerprint: str
    cache_hit: bool


def tokenize_source(
    source: Source,
    tokenizer: Any,
    *,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    batch_size: int = 1000,
) -> TokenizedSource:
    """Tokenize ``source``'s text with ``tokenizer(..., add_special_tokens=False)`` via a
    batched ``datasets.map``; with ``cache_dir``, the result is cached there keyed by the source
    fingerprint and the tokenizer fingerprint, so a second call does no tokenization.
    Pre-tokenized ("tokens") sources pass through unchanged."""
    if source.kind == "tokens":
        key = cache_key("pretokenized", source.fingerprint)
        return TokenizedSource(source.name, source.dataset, source.conditional, key, False)
    key = cache_key(_TOKENIZE_VERSION, source.fingerprint, tokenizer_fingerprint(tokenizer))
    fields = {"input_ids": "output", "condition_input_ids": "input"} if source.kind == "pair" else {"input_ids": "text"}

    def encode(batch: Mapping[str, Any]) -> dict[str, list[list[int]]]:
        out = {}
        for column, field in fields.items():
            texts = batch[field]
            if any(not isinstance(text, str) for text in texts):
                raise DataError(f"{source.name}: a record's field {field!r} is not a string")
            out[column] = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return out

    def build() -> datasets.Dataset:
        return source.dataset.map(
            encode,
            batched=True,
            batch_size=batch_size,
            num_proc=num_proc,
            remove_columns=source.dataset.column_names,
            features=datasets.Features({column: _IDS for column in fields}),
            new_fingerprint=key,
            desc=f"tokenize {Path(source.name).name}",
        )

    dataset, hit = load_or_build(Path(cache_dir) if cache_dir is not None else None, "tokens", key, build)
    return TokenizedSource(source.name, dataset, source.conditional, key, hit)


def check_token_ids(dataset: datasets.Dataset, vocab_size: int, dataset_name: str, tokenizer_name: str) -> None:
    """Raise ``DataError`` unless every id in the ``input_ids``/``condition_input_ids`` columns
    lies in ``[0, vocab_size)`` (``vocab_size = len(tokenizer)``)."""
    table = dataset.with_format("arrow")[:]
    for column in ("input_ids", "condition_input_ids"):
        if column not in table.column_names:
            continue
        values = pc.list_flatten(table.column(column))
        if len(values) == 0:
            continue
        low, high = pc.min_max(values).values()
        low, high = low.as_py(), high.as_py()
        if low is None:
            raise DataError(f"dataset {dataset_name!r}: column {column!r} holds null token ids")
        if low < 0 or high >= vocab_size:
            bad = high if high >= vocab_size else low
            raise DataError(
                f"dataset {dataset_name!r}: token id {bad} in {column!r} is outside [0, {vocab_size}) "
                f"of tokenizer {tokenizer_name!r}; were the ids made with another tokenizer?"
            )


