"""What an export reads a model from (:func:`open_export_source`): one of our runs (or a step of one,
or a distillation's newest student), read one tensor at a time straight from its checkpoint, whatever
mesh saved it — the model is never whole in this host's memory, one tensor at most — or any other
model source (a release, an exported model, local or on the hub) loaded whole, as
:func:`~elf_eqx.release.model_source.load_model_source` loads it."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np

from elf_eqx.config import ELFConfig
from elf_eqx.errors import CheckpointMismatchError, UnreadableCheckpointError
from elf_eqx.io import storage
from elf_eqx.io.safetensors_io import TensorInfo
from elf_eqx.release.as_run import release_data_spec_for, release_run_record
from elf_eqx.release.model_source import (
    check_architecture,
    load_model_source,
    training_run_of,
    run_origin,
    run_weights_check,
    local_encoder,
)
from elf_eqx.release.tasks import task_of
from elf_eqx.sharing.folder import network_tensors
from elf_eqx.training.run_directory import RunCheckpoints, open_run
from elf_eqx.training.run_record import RunRecord
from elf_eqx.training.state_tree import misfits, named_leaves, unexpected

_PART = {"ema": "ema", "raw": "model"}
_MAX_LISTED = 6


@dataclasses.dataclass(frozen=True)
class ExportSource:
    """A model to export: its run record, which weights of which step of what, its tensors (names,
    shapes, dtypes) and how to read each, and where its run folder is (metrics, eval records)."""

    record: RunRecord
    weights: Literal["ema", "raw"]
    step: int | None
    origin: str
    config: ELFConfig
    """The network's architecture (as its weights are)."""
    tensors: list[TensorInfo]
    read: Callable[[TensorInfo], np.ndarray]
    """One tensor's values, read when asked for."""
    encoder: str
    """Where the frozen encoder can be loaded from on this machine (what a bundle copies)."""
    tokenizer: str
    """Where the tokenizer can be loaded from on this machine (what the export saves)."""
    run_dir: storage.AnyPath | None
    """The run's output directory (``None``: not one of our runs)."""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What the checkpoint was saved with (a converted one: what from)."""

    @property
    def parameters(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)


def _from_run(run: RunCheckpoints, path: storage.AnyPath, weights: str, encoder: str | None, tokenizer: str | None,
              architecture: str | None) -> ExportSource:
    part, check = _PART[weights], run_weights_check(path, (weights,))

    def read_layout(step: int) -> tuple[RunRecord, dict[str, Any], Any]:
        record = run.manager.run_record(step)
        metadata = run.manager.metadata(step).get("metadata") or {}
        check(record, metadata, step)
        template = record.model_family.network_template(record.architecture)
        expected = {(part, *names): leaf for names, leaf in named_leaves(template)}
        stored = {(part, *names): m for names, m in run.manager.stored_leaves(part, step).items()}
        problems = misfits(expected, stored) + unexpected(expected, stored)
        if problems:
            raise CheckpointMismatchError(f"checkpoint step {step} in {run.manager.directory} does not fit its run "
                                          f"record's {record.model_family.name} network: "
                                          f"{'; '.join(problems[:_MAX_LISTED])}")
        return record, metadata, template

    (record, metadata, template), step = run.load(read_layout)
    check_architecture(path, template, architecture)
    tensors = network_tensors(template)
    names = {info.name: leaf_names for leaf_names, info in tensors}

    def read(info: TensorInfo) -> np.ndarray:
        try:
            return run.manager.read_leaf(part, names[info.name], step)
        except Exception as err:  # orbax/TensorStore on a file damaged since the checks
            reason = " ".join(str(err).split())[:300]
            raise UnreadableCheckpointError(f"checkpoint step {step} in {run.manager.directory}: {part}.{info.name} "
                                            f"cannot be read ({type(err).__name__}: {reason})") from err

    return ExportSource(record=record, weights=weights, step=step,
                        origin=run_origin(path, step, weights, record, template.config, metadata),
                        config=template.config, tensors=[info for _, info in tensors], read=read,
                        encoder=encoder or local_encoder(record.encoder, run.run_dir),
                        tokenizer=tokenizer or record.tokenizer, run_dir=run.run_dir, metadata=metadata)


@contextlib.contextmanager
def open_export_source(
    source: str,
    *,
    weights: Literal["ema", "raw"] = "ema",
    step: int | None = None,
    encoder: str | None = None,
    tokenizer: str | None = None,
    task: str | None = None,
    architecture: str | None = None,
    revision: str | None = None,
) -> Iterator[ExportSource]:
    """``source`` opened for export (``with``: a run's checkpoints stay open while its tensors are
    read). ``encoder``/``tokenizer`` load another encoder or tokenizer than the recorded ones;
    ``task`` names a release's task; ``architecture`` checks the preset; ``revision`` is a hub
    source's."""
    run_path = training_run_of(source)
    if run_path is not None:
        with open_run(run_path, step) as run:
            yield _from_run(run, run_path, weights, encoder, tokenizer, architecture)
        return
    bundle = load_model_source(source, weights=weights, step=step, encoder=encoder, tokenizer=tokenizer, task=task,
                               architecture=architecture, revision=revision)
    if bundle.record is not None:  # an exported model: its record, with the encoder and tokenizer found here
        record = bundle.record
    else:  # a release, as a converted release's run record holds it
        record = release_run_record(bundle, release_data_spec_for(bundle, task_of(source, task), tokenizer))
    tensors = network_tensors(bundle.model)
    leaves = {info.name: leaf for (_, info), (_, leaf) in zip(tensors, named_leaves(bundle.model))}
    yield ExportSource(record=record, weights=weights, step=bundle.step, origin=bundle.origin,
                       config=bundle.model.config, tensors=[info for _, info in tensors],
                       read=lambda info: np.asarray(leaves[info.name]), encoder=bundle.encoder,
                       tokenizer=bundle.tokenizer, run_dir=None)
