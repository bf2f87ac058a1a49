"""Reading JSONL files whose every line is one JSON object, with errors that name file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from elf_eqx.errors import DataError, MissingInputError


def json_objects(
    lines: Iterable[str], where: str, error: type[Exception] = DataError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank JSONL line of ``lines``; a line that is not a
    JSON object raises ``error`` naming ``where:<line number>``."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{where}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise error(f"{where}:{number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def json_lines(path: str | Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file; ``what`` names the file's
    role (e.g. ``--samples``) in errors: :class:`~elf_eqx.errors.MissingInputError` when it is
    not there, :class:`~elf_eqx.errors.DataError` for a line that is not a JSON object."""
    from elf_eqx.io.storage import user_path

    path = user_path(path, what)
    if not path.is_file():
        raise MissingInputError(f"{what} file not found: {path}")
    with path.open(encoding="utf-8") as lines:
        try:
            yield from json_objects(lines, str(path))
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
