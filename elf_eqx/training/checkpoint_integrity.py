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

from elf_eqx.io import storage

SIZES_FILE = "elf_sizes.json"
# What orbax itself needs in every committed item folder before any array can be read.
_ITEM_METADATA = ("_METADATA",)
_READ_ONLY_WARNING = "Given directory is read only"


def record_sizes(step_dir: storage.AnyPath) -> None:
    """Write ``elf_sizes.json`` (relative path → bytes of every file) into a completed step folder,
    atomically, so a kill mid-write leaves either no record or a complete one (in a bucket: one object)."""
    if storage.is_remote(step_dir):
        found = storage.file_sizes(step_dir)
        sizes = {name: size for name, size in found.items() if name != SIZES_FILE}
        storage.write_bytes(step_dir / SIZES_FILE, json.dumps(sizes).encode())
        return
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


def damage(step_dir: storage.AnyPath, items: Sequence[str], array_items: Sequence[str]) -> str | None:
    """Why the step folder ``step_dir`` cannot be read, or ``None`` when the cheap checks pass:
    each of ``items`` must be a folder, each of ``array_items`` must hold orbax's metadata, and
    every file in ``elf_sizes.json`` (when present) must exist with its recorded size. One listing
    of the folder (local or in a bucket) answers all of it."""
    if not step_dir.is_dir():
        return f"{step_dir} is not a folder"
    present = storage.file_sizes(step_dir)
    for item in items:
        if not any(name.startswith(f"{item}/") for name in present):
            return f"its {item!r} folder is missing"
    for item in array_items:
        for name in _ITEM_METADATA:
            if f"{item}/{name}" not in present:
                return f"{item}/{name} is missing"
    if SIZES_FILE not in present:
        return None
    try:
        sizes = json.loads((step_dir / SIZES_FILE).read_text())
    except (OSError, ValueError) as err:
        return f"{SIZES_FILE} is unreadable ({err})"
    bad = []
    for name, size in sizes.items():
        if name not in present:
            bad.append(f"{name} is missing")
        elif present[name] != size:
            bad.append(f"{name} has {present[name]} bytes, expected {size}")
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


COMMIT_FILE = "commit_success.txt"
"""Orbax's completion marker of a step in a bucket (its commit-file protocol)."""


def set_aside(step_dir: storage.AnyPath) -> storage.AnyPath:
    """Move a step folder out of the run's checkpoint listing, into ``<checkpoints>.set_aside/``
    (never deleting it); returns where it went. In a bucket the step is copied there, then its
    commit file deleted before the rest (so it leaves the listing at once, whole in its new place)."""
    target_root = step_dir.parent.with_name(step_dir.parent.name + ".set_aside")
    if not storage.is_remote(step_dir):
        target_root.mkdir(exist_ok=True)
    target, n = target_root / step_dir.name, 1
    while target.exists():
        target, n = target_root / f"{step_dir.name}-{n}", n + 1
    storage.move_tree(step_dir, target, marker=COMMIT_FILE)
    return target
