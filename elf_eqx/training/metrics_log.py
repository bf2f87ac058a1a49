"""What a training run writes besides checkpoints: metrics as JSONL (append-only, flushed per
record), ``run_info.json`` (each start: config, devices, peak; :mod:`elf_eqx.observe.run_info`),
and the optional wandb and TensorBoard mirrors (:mod:`elf_eqx.observe.wandb_run`,
:mod:`elf_eqx.observe.tensorboard`: no torch).

On resume from step N, the records of steps after N (logged before a crash, and about to be
logged again) are dropped from ``metrics.jsonl``, which is rewritten atomically; so the file
holds exactly one record per logged step however often the run was interrupted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from elf_eqx.io.atomic import write_text_atomic
from elf_eqx.observe.run_info import record_start
from elf_eqx.observe.tensorboard import TensorBoardWriter
from elf_eqx.observe.wandb_run import WandbRun, WandbSettings


def drop_records_after(path: str | Path, step: int) -> int:
    """Rewrite the JSONL metrics file ``path`` (atomically) without the records of steps after
    ``step`` and without lines that do not parse (a write cut short by a kill); returns how many
    lines were dropped. A missing file, or one with nothing to drop, is left untouched."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            keep = line.endswith("\n") and int(record["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
    if len(kept) < len(lines):
        write_text_atomic(path, "".join(kept))
    return len(lines) - len(kept)


class MetricsLog:
    """Appends one JSON object per line to ``<dir>/metrics.jsonl``.

    ``resume_step`` (the step the run restarts from; 0 for a fresh start) first drops the
    records of later steps, and any half-written last line, via :func:`drop_records_after`.
    With ``wandb`` (``True`` or the run's :class:`WandbSettings`) and ``tensorboard`` (event files in
    ``<dir>/tensorboard``) the numbers go to those too (imported only when asked); ``config`` is the
    run config they and ``run_info.json`` record.
    """

    def __init__(self, directory: str | Path, *, config: dict | None = None, wandb: bool | WandbSettings = False,
                 tensorboard: bool = False, resume_step: int | None = None):
        self.directory, self.config = Path(directory), config
        self.path = self.directory / "metrics.jsonl"
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
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        numeric = {k: v for k, v in record.items() if isinstance(v, float)}
        if self._wandb is not None:
            self._wandb.scalars(step, numeric)
        if self._tb is not None:
            self._tb.scalars(step, numeric)

    def samples(self, step: int, texts: list[str]) -> None:
        """The sample texts written at ``step`` (a table in wandb; the file itself is the record)."""
        if self._wandb is not None:
            self._wandb.samples(step, texts)

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()
