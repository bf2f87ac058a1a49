"""Cheap checks that a checkpoint step folder can be read, made before restoring it.

After a save completes we record the size of every file in the step folder (``elf_sizes.json``).
Before restoring, the folder's items, orbax's metadata files and those sizes are checked, so a
copy cut short, a full disk or a bad sync is caught without reading any array. A step saved
without the record (older runs, or a kill between orbax's commit and the record) is checked for
its items and metadata only; a restore that still fails is then caught by the caller.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

SIZES_FILE = "elf_sizes.json"
# What orbax itself needs in every committed item folder before any array can be read.
_ITEM_METADATA = ("_METADATA",)
_READ_ONLY_WARNING = "Given directory is read only"


def record_sizes(step_dir: Path) -> None:
    """Write ``elf_sizes.json`` (relative path → bytes of every file) into a completed step folder,
    atomically, so a kill mid-write leaves either no record or a complete one."""
    sizes = {
        str(p.relative_to(step_dir)): p.stat().st_size
        for p in sorted(step_dir.rglob("*"))
        if p.is_file() and p.name != SIZES_FILE and not p.name.startswith(f".{SIZES_FILE}")
    }
    fd, tmp = tempfile.mkstemp(dir=step_dir, prefix=f".{SIZES_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(sizes, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, step_dir / SIZES_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def damage(step_dir: Path, items: Sequence[str], array_items: Sequence[str]) -> str | None:
    """Why the step folder ``step_dir`` cannot be read, or ``None`` when the cheap checks pass:
    each of ``items`` must be a folder, each of ``array_items`` must hold orbax's metadata, and
    every file in ``elf_sizes.json`` (when present) must exist with its recorded size."""
    if not step_dir.is_dir():
        return f"{step_dir} is not a folder"
    for item in items:
        if not (step_dir / item).is_dir():
            return f"its {item!r} folder is missing"
    for item in array_items:
        for name in _ITEM_METADATA:
            if not (step_dir / item / name).is_file():
                return f"{item}/{name} is missing"
    record = step_dir / SIZES_FILE
    if not record.is_file():
        return None
    try:
        sizes = json.loads(record.read_text())
    except (OSError, ValueError) as err:
        return f"{SIZES_FILE} is unreadable ({err})"
    bad = []
    for name, size in sizes.items():
        path = step_dir / name
        if not path.is_file():
            bad.append(f"{name} is missing")
        elif path.stat().st_size != size:
            bad.append(f"{name} has {path.stat().st_size} bytes, expected {size}")
    if bad:
        more = f" (and {len(bad) - 1} more damaged file(s))" if len(bad) > 1 else ""
        return bad[0] + more
    return None


class _DropReadOnlyWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_READ_ONLY_WARNING)


def quiet_read_only_warning() -> None:
    """Drop orbax's ``Given directory is read only`` warning (printed whenever a checkpoint is
    opened for reading, which is what we asked for); idempotent."""
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropReadOnlyWarning) for f in logger.filters):
        logger.addFilter(_DropReadOnlyWarning())


def set_aside(step_dir: Path) -> Path:
    """Move a step folder out of the run's checkpoint listing, into ``<checkpoints>.set_aside/``
    (never deleting it); returns where it went."""
    target_root = step_dir.parent.with_name(step_dir.parent.name + ".set_aside")
    target_root.mkdir(exist_ok=True)
    target, n = target_root / step_dir.name, 1
    while target.exists():
        target, n = target_root / f"{step_dir.name}-{n}", n + 1
    os.replace(step_dir, target)
    return target
