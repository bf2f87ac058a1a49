"""Write a folder under a temporary name and rename it into place only when complete, so a
failed or killed run never leaves a half-written result at the destination."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def check_destination(destination: str | Path, overwrite: bool) -> Path:
    """``destination`` as a path; raises ``FileExistsError`` if it exists and ``overwrite`` is off."""
    destination = Path(destination)
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} exists; pass --overwrite to replace it")
    return destination


@contextlib.contextmanager
def staged_folder(destination: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh empty folder beside ``destination``; on normal exit it replaces
    ``destination``, on any exception it is deleted. The temporary name is unique per run, so
    concurrent runs aimed at the same destination cannot delete each other's work."""
    destination = check_destination(destination, overwrite)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.with_name(f".{destination.name}.partial-{uuid.uuid4().hex[:12]}")
    staging.mkdir()  # unlike tempfile.mkdtemp (mode 0700), honours the umask like any output folder
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if destination.exists() and not overwrite:  # another run finished there meanwhile: keep both
        raise FileExistsError(f"{destination} appeared during this run; the finished result is kept at {staging}")
    if destination.exists():
        shutil.rmtree(destination)
    staging.rename(destination)
