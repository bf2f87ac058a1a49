"""The one way to open a training run's checkpoints for reading (sampling, converting, the model
source, dry runs, sweeps, a distillation's teacher): its output directory, its ``checkpoints`` folder
or one step folder, with the newest readable step chosen unless a step is given (see
:meth:`CheckpointManager.readable`); its networks and its :class:`~elf_eqx.training.run_record.RunRecord`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import equinox as eqx

from elf_eqx.errors import ConfigError, MissingInputError
from elf_eqx.io import storage
from elf_eqx.io.storage import AnyPath
from elf_eqx.training.checkpoint import STATE, CheckpointManager
from elf_eqx.training.run_record import RunRecord

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RunCheckpoints:
    """A run's checkpoints opened for reading (see :func:`open_run`); close it, or use ``with``."""

    manager: CheckpointManager
    run_dir: AnyPath
    """The run's output directory (where ``metrics.jsonl``, ``samples/`` and a copied encoder live)."""
    step: int | None
    """The step chosen explicitly (``step=`` or a step folder), else ``None`` (newest readable)."""

    def load(self, read: Callable[[int], T]) -> tuple[T, int]:
        """``(read(step), step)`` for the chosen step, or the newest readable one (see
        :meth:`CheckpointManager.readable`)."""
        return self.manager.readable(read, self.step)

    def models(
        self, which: tuple[str, ...], check: Callable[[RunRecord, dict[str, Any], int], None] | None = None
    ) -> tuple[dict[str, eqx.Module], RunRecord, dict[str, Any], int]:
        """The state parts ``which`` (``"ema"``, ``"model"``) as networks of the stored family built
        from the stored architecture, the step's run record, the metadata saved with it (e.g. what a
        converted checkpoint holds), and the step, all from one readable step. ``check(record,
        metadata, step)`` runs before any array is read; the :class:`~elf_eqx.errors.UserError` it raises is
        raised as it is (a checkpoint that does not fit the request is not damage)."""

        def read(step: int) -> tuple[dict[str, eqx.Module], RunRecord, dict[str, Any]]:
            record = self.manager.run_record(step)
            metadata = self.manager.metadata(step).get("metadata") or {}
            if check is not None:
                check(record, metadata, step)
            template = record.model_family.network_template(record.architecture)
            return {part: self.manager.restore_part(template, part, step) for part in which}, record, metadata

        (models, record, metadata), step = self.load(read)
        return models, record, metadata, step

    def record(self) -> tuple[RunRecord, int]:
        """The run record of the chosen (or newest readable) step, and that step."""
        return self.load(self.manager.run_record)

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
    path = storage.as_path(path)
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


def read_run_record(path: str | os.PathLike, step: int | None = None) -> tuple[RunRecord, int]:
    """The run record stored with a run's chosen step (``path`` and ``step`` as :func:`open_run`
    takes them; by default the newest readable step), and that step."""
    with open_run(path, step) as run:
        return run.record()


def load_model_from_checkpoint(
    path: str | os.PathLike, which: Literal["ema", "model"] = "ema", *, step: int | None = None
) -> eqx.Module:
    """The EMA (or raw) weights of a checkpoint, for sampling, without building an optimizer.

    ``path`` is a run's output directory or its ``checkpoints`` folder (newest readable step, or
    ``step``) or one step folder. The network (ELF or a baseline's) and its architecture come from
    the checkpoint's run record.
    """
    with open_run(path, step) as run:
        return run.models((which,))[0][which]
