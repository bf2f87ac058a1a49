"""An on-disk cache of derived datasets, keyed by everything they were computed from."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

import datasets

from elf_eqx.io.atomic import staged_folder

_STATE_FILE = "state.json"  # written last by save_to_disk; a folder with it is complete


def default_cache_dir() -> Path:
    """``$ELF_EQX_DATA_CACHE``, else ``~/.cache/elf_eqx/data``."""
    env = os.environ.get("ELF_EQX_DATA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "elf_eqx" / "data"


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable ``parts``."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the tokenizer's class, name, ``len`` and full vocabulary/normalisation rules."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Truncation/padding are call-time state that encoding changes; the ids don't depend on them.
        config = json.loads(backend.to_str())
        config.pop("truncation", None)
        config.pop("padding", None)
        rules = json.dumps(config, sort_keys=True)
    else:
        rules = json.dumps(sorted(tokenizer.get_vocab().items()))
    name = getattr(tokenizer, "name_or_path", "")
    return cache_key(type(tokenizer).__name__, name, len(tokenizer), hashlib.sha256(rules.encode()).hexdigest())


def load_or_build(
    cache_dir: Path | None, kind: str, key: str, build: Callable[[], datasets.Dataset]
) -> tuple[datasets.Dataset, bool]:
    """The dataset cached at ``cache_dir/kind-key``, or ``build()`` saved there first.

    Returns ``(dataset, cache_hit)``. With ``cache_dir=None`` it only builds. Saving goes to a
    temporary folder renamed into place, so an interrupted run never leaves a partial entry.
    """
    if cache_dir is None:
        return build(), False
    path = Path(cache_dir) / f"{kind}-{key}"
    if (path / _STATE_FILE).is_file():
        return datasets.load_from_disk(str(path)), True
    dataset = build()
    # keep_existing: another process that finished the same entry first wrote the same thing
    with staged_folder(path, keep_existing=True) as staging:
        dataset.save_to_disk(str(staging))
    _drop_map_cache_files(dataset)
    return datasets.load_from_disk(str(path)), False


def _drop_map_cache_files(dataset: datasets.Dataset) -> None:
    """Delete the ``cache-*.arrow`` files ``datasets.map`` wrote for ``dataset`` beside its
    input: the saved copy replaces them, and they would double the disk used."""
    for entry in dataset.cache_files:
        file = Path(entry["filename"])
        if file.name.startswith("cache-"):
            file.unlink(missing_ok=True)
