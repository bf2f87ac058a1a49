"""Source to laid-out rows in one call: load, tokenize (cached), check ids, lay out (cached)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import datasets

from elf_eqx.data.cache import cache_key, default_cache_dir, load_or_build, tokenizer_fingerprint
from elf_eqx.errors import DataError
from elf_eqx.data.layout import layout_rows
from elf_eqx.data.sources import Source, load_source
from elf_eqx.data.spec import DataSpec
from elf_eqx.data.tokenization import check_token_ids, tokenize_source

_LAYOUT_VERSION = "1"


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Rows ready for ``Loader``: ``rows`` has ``input_ids`` (≤ L ids: condition then target)
    and ``cond_length``; ``spec`` holds the ids and lengths used. The two flags say which
    stages came from the on-disk cache."""

    name: str
    rows: datasets.Dataset
    spec: DataSpec
    conditional: bool
    tokens_from_cache: bool
    rows_from_cache: bool


def prepare_data(
    source: str | Path | Source,
    tokenizer: Any,
    spec: DataSpec,
    *,
    split: str = "train",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    num_proc: int | None = None,
) -> PreparedData:
    """Load ``source`` (path, hub id or a loaded ``Source``), tokenize it with ``tokenizer``
    (``add_special_tokens=False``), check every id < ``len(tokenizer)`` and lay it out into
    rows per ``spec`` (chunking, packing or condition/target truncation). Both stages are
    cached under ``cache_dir`` (default ``default_cache_dir()``) unless ``use_cache=False``."""
    if spec.vocab_size != len(tokenizer):
        raise DataError(f"spec.vocab_size={spec.vocab_size} but len(tokenizer)={len(tokenizer)}")
    loaded = source if isinstance(source, Source) else load_source(source, split)
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    tokens = tokenize_source(loaded, tokenizer, cache_dir=cache, num_proc=num_proc)
    tokenizer_name = str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__))
    key = cache_key(_LAYOUT_VERSION, tokens.fingerprint, tokenizer_fingerprint(tokenizer), spec.to_dict())

    def build() -> datasets.Dataset:
        check_token_ids(tokens.dataset, len(tokenizer), loaded.name, tokenizer_name)
        return layout_rows(
            tokens.dataset,
            spec,
            conditional=tokens.conditional,
            strip_pad=loaded.kind == "tokens",
            name=loaded.name,
            num_proc=num_proc,
            fingerprint=key,
        )

    rows, hit = load_or_build(cache, "rows", key, build)
    return PreparedData(loaded.name, rows, spec, tokens.conditional, tokens.cache_hit, hit)
