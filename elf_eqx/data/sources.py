"""Data sources to a ``datasets.Dataset`` of records with canonical columns.

A source is one of:
- a Hugging Face dataset id (``datasets.load_dataset(id, split=split)``), e.g. the reference's
  pre-tokenized ``embedded-language-flows/xsum_train_t5``;
- a ``datasets.save_to_disk`` folder (a ``DatasetDict`` folder is indexed by ``split``);
- a JSONL file with ``text`` (unconditional), ``input``/``output`` (conditional) or
  pre-tokenized ``input_ids`` (+ optional ``condition_input_ids``) fields;
- a plain ``.txt`` file: one document per block of lines separated by blank lines (a file
  without blank lines is thus one document; chunking cuts it into rows later);
- a directory of ``.txt``/``.jsonl`` files (searched recursively, sorted by path), all of one kind;
- the name ``"embedded"``: the KJV subset shipped in the package (split "train", or
  "valid"/"validation"/"test" for its held-out chapters).

Records are of one kind: "tokens" (``input_ids`` [+ ``condition_input_ids``]), "pair"
(``input``, ``output``) or "text" (``text``), checked in that order; other columns are dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import datasets

from elf_eqx.data.corpus import embedded_corpus_path
from elf_eqx.io.jsonl import json_objects
from elf_eqx.errors import DataError

SourceKind = Literal["tokens", "pair", "text"]
EMBEDDED = "embedded"

# Bump when a reader's output changes, so caches keyed by a source's fingerprint are renewed.
_READER_VERSION = "1"
_FILE_SUFFIXES = (".jsonl", ".txt")
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "tokens": ("input_ids",),
    "pair": ("input", "output"),
    "text": ("text",),
}


@dataclasses.dataclass(frozen=True)
class Source:
    """Loaded records: ``dataset`` holds only the canonical columns of ``kind``;
    ``fingerprint`` changes whenever the records may have changed (a cache key)."""

    name: str
    dataset: datasets.Dataset
    kind: SourceKind
    fingerprint: str

    @property
    def conditional(self) -> bool:
        """Whether records carry a condition (``input``, or ``condition_input_ids``)."""
        return self.kind == "pair" or "condition_input_ids" in self.dataset.column_names


def load_source(source: str | Path, split: str = "train") -> Source:
    """Load ``source`` (see the module docstring) as records; ``split`` picks the split of a
    hub dataset or a ``DatasetDict`` folder. Raises ``DataError`` on a missing path, an empty
    source, or records without the needed fields."""
    if isinstance(source, str) and source == EMBEDDED:
        file = embedded_corpus_path("train" if split == "train" else "valid")
        return _load_files([file], file)
    path = Path(source).expanduser()
    if path.exists():
        return _load_path(path, split)
    text = str(source)
    looks_like_path = text.startswith(("/", ".", "~")) or path.suffix in (*_FILE_SUFFIXES, ".json")
    if looks_like_path or text.count("/") > 1 or not text:
        raise DataError(f"data source not found: {text}")
    return _load_hub(text, split)


def _load_path(path: Path, split: str) -> Source:
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return _load_saved(path, split)
        return _load_files(sorted(p for p in path.rglob("*") if p.suffix in _FILE_SUFFIXES and p.is_file()), path)
    if path.suffix not in _FILE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type (expected .jsonl or .txt, or a folder)")
    return _load_files([path], path)


def _load_hub(name: str, split: str) -> Source:
    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as error:  # the hub raises many types; all mean "cannot have it"
        raise DataError(f"could not load Hugging Face dataset {name!r} (split {split!r}): {_first_line(error)}") from error
    return _from_dataset(name, dataset, f"hub:{name}:{split}")


def _load_saved(path: Path, split: str) -> Source:
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as error:  # datasets raises many types for a damaged or empty folder
        raise DataError(f"{path}: cannot load this save_to_disk folder ({_first_line(error)})") from error
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{path}: no split {split!r} (has {sorted(loaded)})")
        loaded = loaded[split]
    return _from_dataset(str(path), loaded, f"disk:{path.resolve()}:{split}")


def _from_dataset(name: str, dataset: datasets.Dataset, origin: str) -> Source:
    kind = _kind_of(set(dataset.column_names), name)
    columns = list(_KIND_FIELDS[kind])
    if kind == "tokens" and "condition_input_ids" in dataset.column_names:
        columns.append("condition_input_ids")
    dataset = dataset.select_columns(columns)
    if len(dataset) == 0:
        raise DataError(f"{name}: dataset has no records")
    return Source(name, dataset, kind, _hash(origin, dataset._fingerprint))


def _kind_of(fields: set[str], where: str) -> SourceKind:
    for kind, needed in _KIND_FIELDS.items():
        if set(needed) <= fields:
            return kind  # type: ignore[return-value]
    found = ", ".join(sorted(fields)) or "none"
    raise DataError(
        f"{where}: records need a 'text' field, 'input' and 'output' fields, or 'input_ids' (found: {found})"
    )


def _load_files(files: list[Path], root: Path) -> Source:
    """Records of ``files``; ``root`` is the folder they were found in, or the one file."""
    if not files:
        raise DataError(f"{root}: no .txt or .jsonl files in this folder")
    kind: SourceKind | None = None
    columns: dict[str, list[Any]] = {}
    digests = []
    for file in files:
        raw = file.read_bytes()
        digests.append(f"{file.relative_to(root) if file != root else file.name}:{hashlib.sha256(raw).hexdigest()}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{file}: not UTF-8 text") from None
        file_kind, records = _read_txt(text) if file.suffix == ".txt" else _read_jsonl(text, file)
        if kind is not None and set(records) != set(columns):
            raise DataError(f"{file}: has fields {sorted(records)} but earlier files have {sorted(columns)}")
        kind = file_kind
        for field, values in records.items():
            columns.setdefault(field, []).extend(values)
    assert kind is not None
    if not next(iter(columns.values())):
        raise DataError(f"{root}: no records")
    dataset = datasets.Dataset.from_dict(columns)
    return Source(str(root), dataset, kind, _hash(_READER_VERSION, *digests))


def _fields_of(kind: SourceKind, columns: dict[str, list[Any]]) -> tuple[str, ...]:
    extra = ("condition_input_ids",) if kind == "tokens" and "condition_input_ids" in columns else ()
    return _KIND_FIELDS[kind] + extra


def _read_txt(text: str) -> tuple[SourceKind, dict[str, list[Any]]]:
    """One document per blank-line-separated block; lines in a block keep their newlines."""
    blocks = [block.strip() for block in re.split(r"\n[ \t\r\f\v]*\n", text)]
    return "text", {"text": [block for block in blocks if block]}


def _read_jsonl(text: str, file: Path) -> tuple[SourceKind, dict[str, list[Any]]]:
    kind: SourceKind | None = None
    columns: dict[str, list[Any]] = {}
    for number, record in json_objects(text.splitlines(), str(file), DataError):
        if kind is None:
            kind = _kind_of(set(record), f"{file}:{number}")
            columns = {field: [] for field in _fields_of(kind, {k: [] for k in record})}
        for field, values in columns.items():
            values.append(_field_value(record, field, kind, f"{file}:{number}"))
    if kind is None:
        raise DataError(f"{file}: no records")
    return kind, columns


def _field_value(record: dict[str, Any], field: str, kind: SourceKind, where: str) -> Any:
    if field not in record:
        raise DataError(f"{where}: missing field {field!r}")
    value = record[field]
    if kind == "tokens":
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise DataError(f"{where}: field {field!r} must be a list of integer token ids")
    elif not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
