"""The one way to open a training run's checkpoints for reading (sampling, converting, the model
source): its output directory, its ``checkpoints`` folder or one step folder, with the newest
readable step chosen unless a step is given (see :meth:`CheckpointManager.readable`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import equinox as eqx

from elf_eqx.config import ELFConfig
from elf_eqx.families import network_template
from elf_eqx.training.checkpoint import STATE, CheckpointManager, CheckpointMismatchError

T = TypeVar("T")


class _NotDamage(CheckpointMismatchError):
    """Carries an error about what a readable checkpoint holds past the damage fallback."""

    def __init__(self, err: Exception):
        super().__init__(str(err))
        self.err = err


@dataclasses.dataclass(frozen=True)
class RunCheckpoints:
    """A run's checkpoints opened for reading (see :func:`open_run`); close it, or use ``with``."""

    manager: CheckpointManager
    run_dir: Path
    """The run's output directory (where ``metrics.jsonl``, ``samples/`` and a copied encoder live)."""
    step: int | None
    """The step chosen explicitly (``step=`` or a step folder), else ``None`` (newest readable)."""

    def load(self, read: Callable[[int], T]) -> tuple[T, int]:
        """``(read(step), step)`` for the chosen step, or the newest readable one (see
        :meth:`CheckpointManager.readable`)."""
        return self.manager.readable(read, self.step)

    def models(
        self, which: tuple[str, ...], check: Callable[[dict[str, Any]], None] | None = None
    ) -> tuple[dict[str, eqx.Module], dict[str, Any], int]:
        """The state parts ``which`` (``"ema"``, ``"model"``) as networks of the stored family (ELF when
        none is stored) built from the stored architecture config,
        the step's JSON record, and the step, all from one readable step. ``check(record)`` runs
        before any array is read; what it raises is raised as it is."""

        def read(step: int) -> tuple[dict[str, eqx.Module], dict[str, Any]]:
            record = self.manager.metadata(step)
            if check is not None:
                try:
                    check(record)
                except Exception as err:
                    raise _NotDamage(err) from err
            signature = record["signature"]
            template = network_template(signature.get("family", "elf"), ELFConfig(**signature["elf"]))
            return {part: self.manager.restore_part(template, part, step) for part in which}, record

        try:
            (models, record), step = self.load(read)
        except _NotDamage as wrapped:
            raise wrapped.err from None
        return models, record, step

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> "RunCheckpoints":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_run(path: str | os.PathLike, step: int | None = None) -> RunCheckpoints:
    """Open a run for reading: ``path`` is its output directory, its ``checkpoints`` folder (or any
    folder of step folders) or one step folder (which fixes the step). ``step`` picks a step
    explicitly; by default the newest readable one is used."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        manager, folder_step, run_dir = CheckpointManager(path, read_only=True), None, path
    elif path.name.isdigit() and (path / STATE).is_dir():
        manager, folder_step, run_dir = (CheckpointManager(path.parent, read_only=True, subdir=""), int(path.name),
                                         path.parent.parent)
    elif path.is_dir():
        manager, folder_step, run_dir = CheckpointManager(path, read_only=True, subdir=""), None, path.parent
    else:
        raise FileNotFoundError(f"{path} is neither an output directory nor a checkpoint step folder")
    if folder_step is not None and step is not None and step != folder_step:
        manager.close()
        raise ValueError(f"step={step} conflicts with the step folder {path}")
    return RunCheckpoints(manager, run_dir, step if step is not None else folder_step)
