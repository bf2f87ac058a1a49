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
    rows: datasets.Dataset | Any
    """The laid-out rows: a ``datasets.Dataset``, or a prepared folder's
    :class:`~elf_eqx.data.prepared.PreparedRows` (``fetch``/``select``, only the rows asked for read)."""
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
            # Packing joins documents within each batch of the map: workers would add their own
            # boundaries, so packed rows are laid out in one process (they do not depend on num_proc).
            num_proc=None if spec.packing else num_proc,
            fingerprint=key,
        )

    rows, hit = load_or_build(cache, "rows", key, build)
    return PreparedData(loaded.name, rows, spec, tokens.conditional, tokens.cache_hit, hit)


def open_prepared(source: str, tokenizer: Any, spec: DataSpec, *, flag: str = "--data") -> PreparedData:
    """A prepared folder (``python -m elf_eqx.prepare``; local or in a bucket) as a run's data,
    checked against the run's layout and tokenizer."""
    from elf_eqx.data.prepared import PreparedRows, check_fits

    rows = PreparedRows(source, flag=flag)
    check_fits(rows, spec, tokenizer_fingerprint(tokenizer), str(source))
    return PreparedData(str(rows.manifest.get("source", source)), rows, spec, bool(rows.manifest["conditional"]),
                        True, True)


def prepared_about(source: str, split: str, tokenizer: Any, tokenizer_name: str | None = None) -> dict[str, Any]:
    """What a prepared folder's manifest records of where its rows came from."""
    return {"source": str(source), "split": split,
            "tokenizer": tokenizer_name or str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__)),
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}


def run_data(source: str, tokenizer: Any, spec: DataSpec, *, split: str = "train", cache_dir: str | None = None,
             process_index: int = 0, process_count: int = 1, wait: float = 3600.0) -> PreparedData:
    """A training run's data: a prepared folder as it is; raw data in one process as
    :func:`prepare_data` gives it (cached locally); raw data in several processes, or with the cache
    in a bucket, prepared once by process 0 into ``<cache>/prepared-<key>`` while the others wait
    for its ``manifest.json`` (at most ``wait`` seconds), then read by every process, each its own rows."""
    from elf_eqx.data.prepared import is_prepared, wait_for, write_prepared
    from elf_eqx.io import storage

    if is_prepared(source):
        return open_prepared(source, tokenizer, spec)
    shared = cache_dir is not None and storage.is_remote(cache_dir)
    if process_count == 1 and not shared:
        return prepare_data(source, tokenizer, spec, split=split, cache_dir=cache_dir)
    cache = storage.user_path(cache_dir, "--cache-dir") if cache_dir is not None else default_cache_dir()
    key = cache_key(_LAYOUT_VERSION, "prepared", str(source), split, tokenizer_fingerprint(tokenizer), spec.to_dict())
    target = cache / f"prepared-{key}"
    if process_index == 0:
        from elf_eqx.data.prepared import MANIFEST

        if not (target / MANIFEST).is_file():
            data = prepare_data(source, tokenizer, spec, split=split, cache_dir=None if shared else cache_dir)
            write_prepared(data.rows, spec, target, conditional=data.conditional,
                           about=prepared_about(source, split, tokenizer), keep_existing=True)
    else:
        wait_for(target, wait, f"--data {source}")
    return open_prepared(str(target), tokenizer, spec, flag="--cache-dir")
