"""What a training run writes besides checkpoints: metrics as JSONL (append-only, flushed per
record), ``run_info.json`` (each start: config, devices, peak; :mod:`elf_eqx.observe.run_info`),
and the optional wandb and TensorBoard mirrors (:mod:`elf_eqx.observe.wandb_run`,
:mod:`elf_eqx.observe.tensorboard`: no torch).

On resume from step N, the records of steps after N (logged before a crash, and about to be
logged again) are dropped from ``metrics.jsonl``, which is rewritten atomically; so the file
holds exactly one record per logged step however often the run was interrupted.

In a bucket (``gs://``, ``s3://``), where nothing can be appended to, the log is a series of parts,
``metrics.parts/<first step>.jsonl``: each flush (every ``--log-every`` steps and before each
checkpoint) rewrites the current part whole (one object), and a part holds at most
:data:`PART_RECORDS` records before the next begins. :func:`metric_lines` reads either form back as
one stream; a resume drops later records there too, by deleting or rewriting parts (each a whole
object, so a kill never leaves a duplicate). What a kill loses is what was logged since the last
flush, as on local disk the records after the last checkpoint are dropped anyway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from elf_eqx.io import storage
from elf_eqx.io.atomic import write_text_atomic
from elf_eqx.observe.run_info import record_start
from elf_eqx.observe.tensorboard import TensorBoardWriter
from elf_eqx.observe.wandb_run import WandbRun, WandbSettings


METRICS = "metrics.jsonl"
PARTS = "metrics.parts"
PART_RECORDS = 1000
"""Records per part of a log in a bucket: each flush rewrites the current part, so this bounds the
bytes one flush uploads, and the parts a long run leaves (a million steps logged every 10: 100)."""


def _kept(line: str, step: int | None) -> bool:
    try:
        record = json.loads(line)
        return line.endswith("\n") and (step is None or int(record["step"]) <= step)
    except (ValueError, KeyError, TypeError):
        return False


def _parts(directory: storage.AnyPath) -> list[storage.AnyPath]:
    return sorted((p for p in storage.list_folder(directory / PARTS) if p.name.endswith(".jsonl")
                   and p.name[:-6].isdigit()), key=lambda p: int(p.name[:-6]))


def _read_part(part: storage.AnyPath) -> list[str]:
    """A part's lines; one that vanished between the listing and the read (a resume dropped it) is empty."""
    try:
        return storage.read_bytes(part).decode("utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return []


def metric_lines(directory: str | Path | storage.AnyPath) -> list[str]:
    """The metrics log of the run folder ``directory`` as its JSONL lines, in order: its
    ``metrics.jsonl``, or (a run in a bucket) its parts read back as one stream. Lines that do not
    parse (a local write cut short) are left out."""
    directory = storage.as_path(directory)
    if storage.is_remote(directory):
        lines = [line for part in _parts(directory) for line in _read_part(part)]
    else:
        path = directory / METRICS
        lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    return [line for line in lines if _kept(line, None)]


def drop_parts_after(directory: storage.AnyPath, step: int) -> int:
    """A bucket log's :func:`drop_records_after`: parts that start after ``step`` are deleted, the
    one that holds ``step`` is rewritten without the later records. Returns the records dropped."""
    dropped = 0
    for part in _parts(directory):
        lines = _read_part(part)
        if int(part.name[:-6]) > step:
            part.unlink()
            dropped += len(lines)
            continue
        kept = [line for line in lines if _kept(line, step)]
        if len(kept) < len(lines):
            storage.write_bytes(part, "".join(kept).encode())
            dropped += len(lines) - len(kept)
    return dropped


def drop_records_after(path: str | Path, step: int) -> int:
    """Rewrite the JSONL metrics file ``path`` (atomically) without the records of steps after
    ``step`` and without lines that do not parse (a write cut short by a kill); returns how many
    lines were dropped. A missing file, or one with nothing to drop, is left untouched."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _kept(line, step)]
    if len(kept) < len(lines):
        write_text_atomic(path, "".join(kept))
    return len(lines) - len(kept)


class MetricsLog:
    """Appends one JSON object per line to ``<dir>/metrics.jsonl`` (in a bucket: to its parts, see
    the module docstring; :meth:`flush` writes them).

    ``resume_step`` (the step the run restarts from; 0 for a fresh start) first drops the
    records of later steps, and any half-written last line, via :func:`drop_records_after`.
    With ``wandb`` (``True`` or the run's :class:`WandbSettings`) and ``tensorboard`` (event files in
    ``<dir>/tensorboard``) the numbers go to those too (imported only when asked); ``config`` is the
    run config they and ``run_info.json`` record.
    """

    def __init__(self, directory: str | Path | storage.AnyPath, *, config: dict | None = None,
                 wandb: bool | WandbSettings = False, tensorboard: bool = False, resume_step: int | None = None):
        self.directory, self.config = storage.as_path(directory), config
        self.remote = storage.is_remote(self.directory)
        self.path = self.directory / (PARTS if self.remote else METRICS)
        self._file = None
        self._part: tuple[int, list[str]] | None = None  # a bucket log's current part: first step, lines
        self._unflushed = False
        if self.remote:
            if resume_step is not None:
                drop_parts_after(self.directory, resume_step)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                drop_records_after(self.path, resume_step)
            self._file = self.path.open("a", buffering=1)
        self._wandb = None
        self._tb = None
        if wandb:
            self._wandb = WandbRun(directory, wandb if isinstance(wandb, WandbSettings) else WandbSettings(), config)
        if tensorboard:
            self._tb = TensorBoardWriter(self.directory / "tensorboard")

    def record_start(self, start: dict[str, Any]) -> None:
        """Add this start of the run (its first step, devices, peak...) to ``run_info.json``."""
        record_start(self.directory, self.config, start)

    def write(self, step: int, values: dict[str, Any]) -> None:
        """Record ``values`` (numbers or strings) for ``step``."""
        record = {"step": int(step), **{k: (float(v) if not isinstance(v, str) else v) for k, v in values.items()}}
        line = json.dumps(record) + "\n"
        if self._file is not None:
            self._file.write(line)
            self._file.flush()
        else:
            if self._part is None or len(self._part[1]) >= PART_RECORDS:
                self.flush()
                self._part = (int(step), [])
            self._part[1].append(line)
            self._unflushed = True
        numeric = {k: v for k, v in record.items() if isinstance(v, float)}
        if self._wandb is not None:
            self._wandb.scalars(step, numeric)
        if self._tb is not None:
            self._tb.scalars(step, numeric)

    def samples(self, step: int, texts: list[str]) -> None:
        """The sample texts written at ``step`` (a table in wandb; the file itself is the record)."""
        if self._wandb is not None:
            self._wandb.samples(step, texts)

    def flush(self) -> None:
        """Make every record written so far durable: a local file is flushed on every write; a
        bucket log's current part is rewritten whole."""
        if self._part is not None and self._unflushed:
            first, lines = self._part
            storage.write_bytes(self.path / f"{first:010d}.jsonl", "".join(lines).encode())
            self._unflushed = False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self.flush()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()
