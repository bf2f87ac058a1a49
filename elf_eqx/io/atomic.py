"""Writing results so that nothing already written is lost and no reader (or a kill) ever sees a
half-written one: files and folders are written under a hidden unique name beside their
destination and renamed into place only when complete; an existing destination is replaced only
when the caller says so.

- :func:`refuse_existing`: the one overwrite guard of every CLI.
- :func:`staged_file` / :func:`write_text_atomic` / :func:`write_bytes_atomic` / :func:`write_json_atomic`.
- :func:`staged_folder`: a whole folder (a trained judge, a cached dataset, a copied encoder).

Each also takes a bucket path (``gs://``, ``s3://``; :mod:`elf_eqx.io.storage`), where there is no
rename: a file is staged locally and uploaded as one object (whole or absent), a folder is staged
locally and uploaded file by file with its completion marker last.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from elf_eqx.errors import OutputExistsError
from elf_eqx.io import storage


def refuse_existing(path: str | Path | storage.AnyPath, overwrite: bool = False, *, flag: str | None = "--overwrite",
                    other: str | None = None) -> storage.AnyPath:
    """``path`` as a :class:`Path`; :class:`~elf_eqx.errors.OutputExistsError` (a
    ``FileExistsError``) when it exists and ``overwrite`` is off.

    The message names the path and the flag that allows replacing it (``flag=None``: the tool
    never replaces anything) and, with ``other``, the flag that picks another destination."""
    path = storage.as_path(path)
    if path.exists() and not overwrite:
        if flag is None:
            raise OutputExistsError(f"{path} exists and is never overwritten"
                                    + (f"; choose another {other}" if other else ""))
        raise OutputExistsError(f"{path} exists; pass {flag} to replace it"
                                + (f", or another {other}" if other else ""))
    return path


def partial_name(destination: Path) -> Path:
    """A hidden name beside ``destination``, unique per call, keeping its suffix (some writers,
    e.g. matplotlib, pick the format from it): ``dir/.name.partial-<hex><suffix>``."""
    return destination.with_name(f".{destination.stem}.partial-{uuid.uuid4().hex[:12]}{destination.suffix}")


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def staged_file(destination: str | Path) -> Iterator[Path]:
    """Yield a path (not yet created) beside ``destination``; whatever the block writes there is
    flushed to disk and replaces ``destination`` when the block ends normally, and is deleted when
    it raises. Parent folders are created."""
    if storage.is_remote(destination):
        with tempfile.TemporaryDirectory(prefix="elf_eqx-stage-") as tmp:
            partial = Path(tmp) / f"staged{Path(str(destination)).suffix}"
            yield partial
            storage.write_bytes(storage.as_path(destination), partial.read_bytes())
        return
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_name(destination)
    try:
        yield partial
        _fsync(partial)
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path | storage.AnyPath, data: bytes) -> storage.AnyPath:
    """Write ``data`` to ``path`` through :func:`staged_file` (a bucket object: one upload); returns ``path``."""
    if storage.is_remote(path):
        storage.write_bytes(storage.as_path(path), data)
        return storage.as_path(path)
    with staged_file(path) as partial:
        partial.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path | storage.AnyPath, text: str) -> storage.AnyPath:
    """Write ``text`` (UTF-8) to ``path`` through :func:`staged_file`; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path | storage.AnyPath, value: Any, *, indent: int | None = 1) -> storage.AnyPath:
    """Write ``value`` as JSON (plus a newline) to ``path`` through :func:`staged_file`."""
    return write_text_atomic(path, json.dumps(value, indent=indent) + "\n")


@contextlib.contextmanager
def staged_folder(destination: str | Path | storage.AnyPath, *, overwrite: bool = False,
                  flag: str | None = "--overwrite", keep_existing: bool = False,
                  marker: str | None = None) -> Iterator[Path]:
    """Yield a fresh empty folder beside ``destination`` (a unique hidden name, so concurrent runs
    aimed at one destination never delete each other's work); on normal exit it is renamed to
    ``destination``, on any exception it is deleted.

    An existing ``destination`` is refused up front (:func:`refuse_existing` with ``flag``) unless
    ``overwrite``; when one appears during the run it is replaced with ``overwrite``, else the
    finished folder is kept under its staging name and named in the error. ``keep_existing`` is
    for caches whose entries are the same whoever writes them: an existing destination wins and
    the staged copy is dropped. In a bucket the folder is staged locally and uploaded, its
    ``marker`` file (what readers take as "complete") last."""
    if storage.is_remote(destination):
        remote = storage.as_path(destination)
        if not keep_existing:
            refuse_existing(remote, overwrite, flag=flag)
        with tempfile.TemporaryDirectory(prefix="elf_eqx-stage-") as tmp:
            yield Path(tmp)
            if keep_existing and marker is not None and (remote / marker).exists():
                return
            if overwrite and remote.exists():
                storage.remove_tree(remote, first=marker)
            storage.upload_folder(Path(tmp), remote, last=marker)
        return
    destination = Path(destination)
    if not keep_existing:
        refuse_existing(destination, overwrite, flag=flag)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = partial_name(destination)
    staging.mkdir()  # unlike tempfile.mkdtemp (mode 0700), honours the umask like any output folder
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if destination.exists():
        if keep_existing:
            shutil.rmtree(staging, ignore_errors=True)
            return
        if not overwrite:
            raise OutputExistsError(f"{destination} appeared during this run; the finished result is kept at {staging}")
        shutil.rmtree(destination)
    try:
        staging.rename(destination)
    except OSError:
        if not (keep_existing and destination.exists()):  # lost a race to an identical cache entry
            raise
        shutil.rmtree(staging, ignore_errors=True)
