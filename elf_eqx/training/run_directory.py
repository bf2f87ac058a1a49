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

from elf_eqx.errors import ConfigError, MissingInputError
from elf_eqx.config import ELFConfig
from elf_eqx.families import ELF_FAMILY, family_named
from elf_eqx.training.checkpoint import STATE, CheckpointManager

T = TypeVar("T")


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
        before any array is read; the :class:`~elf_eqx.errors.UserError` it raises is raised as it is
        (a checkpoint that does not fit the request is not damage)."""

        def read(step: int) -> tuple[dict[str, eqx.Module], dict[str, Any]]:
            record = self.manager.metadata(step)
            if check is not None:
                check(record)
            signature = record["signature"]
            family = family_named(signature.get("family", ELF_FAMILY.name), f"{self.run_dir}: stored family")
            template = family.network_template(ELFConfig(**signature["elf"]))
            return {part: self.manager.restore_part(template, part, step) for part in which}, record

        (models, record), step = self.load(read)
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
        raise MissingInputError(f"{path} is neither an output directory nor a checkpoint step folder")
    if folder_step is not None and step is not None and step != folder_step:
        manager.close()
        raise ConfigError(f"step={step} conflicts with the step folder {path}")
    return RunCheckpoints(manager, run_dir, step if step is not None else folder_step)
