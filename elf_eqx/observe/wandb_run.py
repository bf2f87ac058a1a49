"""The Weights & Biases mirror of a run (``--wandb``; ``pip install 'elf_eqx[wandb]'``), one wandb
run across restarts.

The first start makes a run id and keeps it in ``run_info.json`` (:mod:`elf_eqx.observe.run_info`)
before wandb is started; every later start of the same output directory resumes that id
(``resume="allow"``), so a run stopped by SIGTERM, killed or preempted continues as the same wandb
run. Offline (``WANDB_MODE=offline``) each start writes its own ``wandb/offline-run-*-<id>`` folder
under the output directory, and ``wandb sync`` of them appends to the one run. wandb keeps the first
values it received for a step: the steps a resumed run repeats (those after its checkpoint) are
the same numbers, since a resumed run reproduces the uninterrupted one.

Samples go to a table (``samples``: step, index, text) at every sample step.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

from elf_eqx.observe.run_info import read_run_info, write_run_info


@dataclasses.dataclass(frozen=True)
class WandbSettings:
    """Where the wandb run goes and what it is called (``None``: wandb's default, e.g. ``WANDB_PROJECT``)."""

    project: str | None = None
    entity: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()


def run_id(directory: str | Path, settings: WandbSettings) -> str:
    """The wandb run id of ``directory``: the stored one, else a new one, stored now."""
    info = read_run_info(directory)
    stored = info.get("wandb") or {}
    if stored.get("id"):
        return str(stored["id"])
    new = secrets.token_hex(6)
    info["wandb"] = {"id": new, "project": settings.project, "entity": settings.entity}
    write_run_info(directory, info)
    return new


class WandbRun:
    """A started wandb run: scalars, sample tables, finish."""

    def __init__(self, directory: str | Path, settings: WandbSettings, config: dict[str, Any] | None):
        import wandb  # optional dependency

        self._wandb = wandb
        self.id = run_id(directory, settings)
        self._run = wandb.init(id=self.id, resume="allow", project=settings.project, entity=settings.entity,
                               name=settings.name or _run_name(directory), tags=list(settings.tags) or None,
                               dir=str(directory), config=config, allow_val_change=True)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=int(step))

    def samples(self, step: int, texts: list[str]) -> None:
        """The sample texts of ``step`` as a table."""
        table = self._wandb.Table(columns=["step", "index", "text"], data=[[step, i, t] for i, t in enumerate(texts)])
        self._run.log({"samples": table}, step=int(step))

    def finish(self) -> None:
        self._run.finish()


def _run_name(directory: Any) -> str:
    """The output directory's last name (a bucket path's too)."""
    from elf_eqx.io import storage

    path = storage.as_path(directory)
    return path.resolve().name if isinstance(path, Path) else path.name
