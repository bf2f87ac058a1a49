"""A training run's output folder read as it stands, also while the run is still writing it: the
metrics records (a half-written last line is skipped), ``run_info.json``, the run config, the
checkpoints and whether each is complete (checked without reading an array,
:mod:`elf_eqx.training.checkpoint_integrity`), the sample files and evaluation records."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from elf_eqx.io import storage
from elf_eqx.training.metrics_log import PARTS, metric_lines
from elf_eqx.errors import MissingInputError
from elf_eqx.observe.run_info import RUN_INFO, read_run_info
from elf_eqx.observe.sample_files import sample_files
from elf_eqx.training.checkpoint import META, STATE
from elf_eqx.training.checkpoint_integrity import damage

METRICS = "metrics.jsonl"
TEMPORARY = ".orbax-checkpoint-tmp"


@dataclasses.dataclass(frozen=True)
class CheckpointStatus:
    """One checkpoint folder: its step, and why it cannot be read (``None``: complete)."""

    step: int
    problem: str | None
    where: str = "checkpoints"
    """``checkpoints``, or ``checkpoints.set_aside`` for one a resume moved aside."""

    @property
    def complete(self) -> bool:
        return self.problem is None


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """One ``python -m elf_eqx.eval`` result: its file, the checkpoint step its samples came from
    (``None``: not recorded) and its figures."""

    path: Path
    step: int | None
    figures: dict[str, float]
    judge: str | None = None
    """The Gen. PPL/entropy judge (``None``: BLEU/ROUGE only, or not recorded)."""
    num_samples: int | None = None
    settings: dict[str, Any] | None = None
    """The scored samples' common settings (``None``: several, or none recorded)."""


def read_records(run_dir: str | Path | storage.AnyPath) -> list[dict[str, Any]]:
    """The metrics records of the run folder ``run_dir`` (local or in a bucket), in order; lines
    that do not parse (a write in progress) are left out."""
    records = [json.loads(line) for line in metric_lines(run_dir)]
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("step"), int)]


def checkpoint_statuses(run_dir: storage.AnyPath) -> list[CheckpointStatus]:
    """Every checkpoint folder of the run by step: complete or why not; a save in progress or cut
    short (orbax's temporary folder) is listed as such; set-aside ones last."""
    out = []
    for where in ("checkpoints", "checkpoints.set_aside"):
        folder = run_dir / where
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            name = entry.name.split("-")[0] if where.endswith("set_aside") else entry.name
            if entry.is_dir() and name.isdigit():
                out.append(CheckpointStatus(int(name), damage(entry, (STATE, META), (STATE,)), where))
            elif entry.is_dir() and TEMPORARY in name and name.split(".")[0].isdigit():
                out.append(CheckpointStatus(int(name.split(".")[0]), "a save being written, or cut short "
                                            "(orbax's temporary folder; never read)", where))
    return sorted(out, key=lambda c: (c.where, c.step))


def _eval_step(result: dict[str, Any]) -> int | None:
    """The checkpoint step the scored samples came from: the common settings', else the first file's."""
    candidates = [result.get("settings")] + [s for entry in result.get("samples") or () for s in entry.get("settings") or ()]
    steps = [c["step"] for c in candidates if isinstance(c, dict) and isinstance(c.get("step"), int)]
    return steps[0] if steps else None


def read_eval(path: storage.AnyPath) -> EvalRecord | None:
    """The figures of one eval JSON (``None`` when it does not read as one)."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or "metrics" not in result:
        return None
    figures = {k: float(v) for k, v in result.items() if k in ("gen_ppl", "entropy", "bleu", "rouge1", "rouge2",
                                                               "rougeL") and isinstance(v, (int, float))}
    judge, count, settings = result.get("judge"), result.get("num_samples"), result.get("settings")
    return EvalRecord(path, _eval_step(result), figures, judge if isinstance(judge, str) else None,
                      count if isinstance(count, int) else None, settings if isinstance(settings, dict) else None)


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """What a run folder holds now (see :meth:`read`)."""

    path: storage.AnyPath
    records: list[dict[str, Any]]
    info: dict[str, Any]
    config: dict[str, Any] | None
    """The run config (sections nested): ``run_info.json``'s, else the newest checkpoint's."""
    checkpoints: list[CheckpointStatus]
    samples: list[tuple[int, storage.AnyPath]]
    evals: list[EvalRecord]

    @staticmethod
    def read(path: str | Path, extra_evals: Sequence[EvalRecord] = ()) -> "RunFolder":
        """Read the run folder ``path``; a path that is not one is a one-line
        :class:`~elf_eqx.errors.MissingInputError` naming it. ``extra_evals`` (eval records kept
        elsewhere) are added to those found in the folder."""
        path = storage.user_path(path, "the run folder")
        if storage.is_remote(path):  # a run in a bucket: its metrics parts, no eval files searched
            if not any((path / name).exists() for name in (PARTS, RUN_INFO, "checkpoints")):
                raise MissingInputError(f"{path} is not a training run folder (no {PARTS}, {RUN_INFO} or checkpoints/)")
            checkpoints = checkpoint_statuses(path)
            info = read_run_info(path)
            return RunFolder(path, read_records(path), info, info.get("config") or _checkpoint_config(path, checkpoints),
                             checkpoints, sample_files(path), list(extra_evals))
        if not path.is_dir():
            raise MissingInputError(f"run folder {path} does not exist")
        if not any((path / name).exists() for name in (METRICS, RUN_INFO, "checkpoints")):
            raise MissingInputError(f"{path} is not a training run folder (no {METRICS}, {RUN_INFO} or checkpoints/)")
        info = read_run_info(path)
        checkpoints = checkpoint_statuses(path)
        config = info.get("config") or _checkpoint_config(path, checkpoints)
        evals = [e for p in sorted(path.rglob("*.eval.json")) if "checkpoints" not in p.parts
                 and (e := read_eval(p)) is not None]
        return RunFolder(path, read_records(path), info, config, checkpoints, sample_files(path),
                         evals + list(extra_evals))


def _checkpoint_config(path: storage.AnyPath, checkpoints: list[CheckpointStatus]) -> dict[str, Any] | None:
    """The run config stored with the newest complete checkpoint (runs started before run_info.json)."""
    from elf_eqx.training.run_directory import open_run  # orbax: only for runs without run_info.json

    complete = [c.step for c in checkpoints if c.complete and c.where == "checkpoints"]
    if not complete:
        return None
    with open_run(path, complete[-1]) as run:
        record, _ = run.record()
    return record.run.to_dict()
