"""Training checkpoints: ``<output_dir>/checkpoints/<step>/`` through ``orbax.checkpoint``.

Each step folder holds two orbax items: ``state``, the arrays of the :class:`TrainState` (model,
EMA, optimizer state, step), and ``meta``, a JSON record of the caller's metadata (the data
loader position, ...), the run's base PRNG key, the run record
(:class:`~elf_eqx.training.run_record.RunRecord`, under ``run_config``) and the model signature.

Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it when complete, so a
process killed mid-save leaves the earlier steps untouched and a temporary folder that is never
listed as a step (and is replaced by the next save of that step). In a bucket (``gs://``,
``s3://``: no rename) orbax's commit-file protocol is used instead: the step is written in place
and counts only once its ``commit_success.txt`` is written, last. Old steps are removed only by
keep-last-N, after a new save has completed.

A step that cannot be read (checked cheaply first, see :mod:`elf_eqx.training.checkpoint_integrity`,
then by restoring it) is reported in one line and skipped in favour of the newest readable one;
it is never deleted. :func:`elf_eqx.training.run_directory.open_run` is the one way to open a run directory for reading.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.path import atomicity

from elf_eqx.io import storage

# CheckpointMismatchError and UnreadableCheckpointError are imported from here too.
from elf_eqx import errors
from elf_eqx.errors import CheckpointMismatchError, ConfigError, MissingInputError, UnreadableCheckpointError, UserError
from elf_eqx.parallel import agreement
from elf_eqx.training.checkpoint_integrity import damage, quiet_read_only_warning, record_sizes, set_aside
from elf_eqx.training.run_record import RunRecord
from elf_eqx.training.signature import as_json, key_from_json, key_to_json, model_signature, signature_diff
from elf_eqx.training.state_tree import abstract_leaf, fill_template, flatten_nested, misfits, named_leaves, to_nested, unexpected
from elf_eqx.training.step import TrainState

STATE, META = "state", "meta"
FORMAT = 1
_MAX_LISTED = 8
T = TypeVar("T")


def _reason(err: BaseException) -> str:
    """An exception as a short one-line reason (TensorStore errors run to many lines)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _attempt(call: Callable[[], T], catch: type[BaseException]) -> tuple[T | None, BaseException | None]:
    """``(call(), None)``, or ``(None, error)`` when it raises ``catch``."""
    try:
        return call(), None
    except catch as err:
        return None, err


def _raise_agreed(name: str, failed: BaseException | None) -> str | None:
    """Agree with the other processes on this decision: the first failure any process reports
    (in process order) is every process's. A :class:`UserError` is raised on every process (this
    process's own when it has one, else one of the same class and words); any other failure is
    returned as its one-line reason (``None``: no process failed)."""
    if isinstance(failed, UserError):
        mine = {"user": type(failed).__name__, "text": str(failed)}
    else:
        mine = None if failed is None else {"user": None, "text": _reason(failed)}
    agreed = agreement.first_reason(name, mine)
    if agreed is None:
        return None
    if agreed["user"] is None:
        return agreed["text"]
    if isinstance(failed, UserError) and type(failed).__name__ == agreed["user"]:
        raise agreement.everywhere(failed)
    cls = getattr(errors, agreed["user"], None)
    if not (isinstance(cls, type) and issubclass(cls, UserError)):
        cls = UnreadableCheckpointError
    raise agreement.everywhere(cls(agreed["text"]))


class CheckpointManager:
    """Saves and restores :class:`TrainState` checkpoints of one run under ``<output_dir>/checkpoints``.

    ``run_record`` is stored with every step (as ``run_config``, :meth:`RunRecord.to_dict`); its
    ``family``, ``elf``, ``encoder``, ``tokenizer`` and ``data_spec`` entries are the model signature,
    which must match the directory's latest checkpoint (checked on opening and on every save).
    :meth:`run_record` reads it back. Saves are synchronous unless
    ``async_save``; keep-last-``max_to_keep`` (``None`` keeps all) runs after each completed save.
    ``read_only`` opens an existing directory for restoring only. ``subdir`` is where the step
    folders live under ``output_dir`` (``""``: ``output_dir`` is that folder itself).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        max_to_keep: int | None = 3,
        run_record: RunRecord | None = None,
        async_save: bool = False,
        read_only: bool = False,
        subdir: str = "checkpoints",
    ):
        directory = storage.as_path(output_dir)
        directory = directory / subdir if subdir else directory
        self.directory = directory.absolute() if isinstance(directory, Path) else directory
        self.remote = storage.is_remote(self.directory)
        if read_only and not self.directory.is_dir():
            raise MissingInputError(f"no checkpoint directory at {self.directory}")
        if read_only:
            quiet_read_only_warning()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max_to_keep,
            save_interval_steps=0 if read_only else 1,
            enable_async_checkpointing=async_save,
            read_only=read_only,
            create=not read_only,
            # No rename in a bucket: a step is complete once its commit file is written (last).
            temporary_path_class=atomicity.CommitFileTemporaryPath if self.remote else None,
        )
        handlers = {STATE: ocp.PyTreeCheckpointHandler(), META: ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        self._run_config = None if run_record is None else as_json(run_record.to_dict(), "run config")
        self._signature: dict[str, Any] | None = None
        self._async = async_save
        self._unrecorded: list[int] = []  # async saves whose file sizes are not yet recorded
        if self._run_config is not None:
            self._check_signature(model_signature(self._run_config, None))

    # -- listing -----------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """The steps of all complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None`` when there is none."""
        return self._manager.latest_step()

    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is not None and step not in steps:
            raise MissingInputError(f"no complete checkpoint for step {step} in {self.directory}; steps: {steps}")
        if not steps:
            raise MissingInputError(f"no complete checkpoint in {self.directory}")
        return steps[-1] if step is None else step

    def damage(self, step: int) -> str | None:
        """Why ``step`` cannot be read, found without reading any array (its files against the sizes
        recorded at save time, orbax's metadata, the JSON record), or ``None``."""
        found = damage(self.directory / str(step), (STATE, META), (STATE,))
        if found is not None:
            return found
        try:
            self.metadata(step)
            self._manager.item_metadata(step)
        except Exception as err:  # whatever orbax or TensorStore raise on a damaged folder
            return _reason(err)
        return None

    def readable(self, read: Callable[[int], T], step: int | None = None) -> tuple[T, int]:
        """``(read(s), s)`` for the newest step ``s`` that passes :meth:`damage` and whose ``read``
        succeeds; each step skipped is reported in one warning line and left in place. An explicit
        ``step`` is the only one tried: if it cannot be read, :class:`UnreadableCheckpointError`.
        A :class:`~elf_eqx.errors.UserError` from ``read`` (a checkpoint of a different model, or one
        that does not fit what is asked of it: not damage) is raised at once. In a multi-process run
        every process calls it: process 0's listing is tried, and each step's checks and read are
        agreed (:mod:`elf_eqx.parallel.agreement`), so all processes return the same step or all
        raise the same error."""

        def listing() -> list[int]:
            return [self._resolve_step(step)] if step is not None else self.all_steps()[::-1]

        # Every decision below is agreed by all processes of a multi-process run (the first reason
        # given wins; with one process each is this process's own), so all of them restore the
        # same step or all refuse with the same message.
        steps, failed = _attempt(listing, UserError)
        _raise_agreed("checkpoint-listing", failed)
        steps = agreement.from_process_0("checkpoint-steps", steps)
        if not steps:
            raise agreement.everywhere(MissingInputError(f"no complete checkpoint in {self.directory}"))
        failures = []
        for s in steps:
            why = agreement.first_reason("checkpoint-damage", self.damage(s))
            if why is None:
                # A restore that fails in spite of the cheap checks is damage too.
                result, failed = _attempt(lambda: read(s), Exception)
                why = _raise_agreed("checkpoint-read", failed)
                if why is None:
                    return result, s
            if step is not None:
                raise agreement.everywhere(
                    UnreadableCheckpointError(f"checkpoint step {s} in {self.directory} cannot be read: {why}"))
            failures.append(f"step {s}: {why}")
            _warn(f"checkpoint step {s} in {self.directory} cannot be read ({why}); "
                  "left in place, trying the next older one")
        raise agreement.everywhere(
            UnreadableCheckpointError(f"no checkpoint in {self.directory} can be read: {'; '.join(failures)}"))

    def set_aside_after(self, step: int) -> list[storage.AnyPath]:
        """Move the steps newer than ``step`` (superseded by a resume from ``step``, or unreadable)
        out of the listing into ``checkpoints.set_aside/``, so the resumed run can save those
        step numbers again; nothing is deleted. Returns where they went. In a multi-process run
        process 0 moves them while the others wait; then every process reloads the listing and all
        must see the same newest step (else :class:`~elf_eqx.errors.ConfigError`: the output
        directory is not one folder shared by every host)."""
        moved = []
        if jax.process_index() == 0:
            for s in [s for s in self.all_steps() if s > step]:
                moved.append(set_aside(self.directory / str(s)))
                _warn(f"checkpoint step {s} is newer than the resume point {step}; moved to {moved[-1]}")
        if jax.process_count() > 1:
            agreement.barrier("checkpoint-set-aside")
            self._manager.reload()
            self.check_same_listing()
        elif moved:
            self._manager.reload()
        return moved

    def check_same_listing(self) -> None:
        """In a multi-process run: every process sees the same newest complete step, else
        :class:`~elf_eqx.errors.ConfigError` (on every process, the same line)."""
        newest = agreement.gather("checkpoint-newest", self.latest_step())
        if len(set(newest)) > 1:
            seen = ", ".join(f"process {i}: {'none' if n is None else f'step {n}'}" for i, n in enumerate(newest))
            raise agreement.everywhere(ConfigError(
                f"the processes see different checkpoints in {self.directory} (newest {seen}); --output-dir must be "
                "one folder every host reads and writes (a shared file system or a bucket)"))

    # -- saving ------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        key: jax.Array | None = None,
    ) -> None:
        """Checkpoint ``state`` (normally a :class:`TrainState`) as ``step`` with JSON ``metadata``
        (e.g. ``{"data": loader.state()}``) and the run's base PRNG ``key``.

        ``step`` must be newer than the latest checkpoint: nothing existing is overwritten.
        Returns once written (or, with ``async_save``, once the arrays are copied off device).
        """
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise ValueError(f"cannot save step {step}: {self.directory} already has step {latest}")
        metadata = as_json(dict(metadata or {}), "metadata")
        if key is not None and "key" in metadata:
            raise ValueError("metadata may not contain 'key' when key= is given (restore returns the key under 'key')")
        elf_config = state.model.config if isinstance(state, TrainState) else None
        signature = model_signature(self._run_config, elf_config)
        self._check_signature(signature)
        record = {
            "format": FORMAT,
            "step": step,
            "metadata": metadata,
            "key": None if key is None else key_to_json(key),
            "run_config": self._run_config,
            "signature": signature,
        }
        arrays = to_nested(named_leaves(state))
        args = ocp.args.Composite(**{STATE: ocp.args.PyTreeSave(arrays), META: ocp.args.JsonSave(record)})
        self._record_sizes()
        self._manager.save(step, args=args, force=True)
        self._signature = signature
        self._unrecorded.append(step)
        if not self._async:
            self._record_sizes()

    def _record_sizes(self) -> None:
        """Record the file sizes of completed saves (see :mod:`~elf_eqx.training.checkpoint_integrity`)."""
        if self._unrecorded:
            self._manager.wait_until_finished()
        for s in self._unrecorded:
            if (self.directory / str(s)).is_dir():  # keep-last-N may already have removed it
                record_sizes(self.directory / str(s))
        self._unrecorded.clear()

    def _check_signature(self, current: dict[str, Any]) -> None:
        latest = self.latest_step()
        if latest is None:
            return
        if self._signature is None:
            # The newest step whose JSON record reads: a damaged newest step must not block a resume.
            for s in self.all_steps()[::-1]:
                try:
                    self._signature = self.metadata(s).get("signature", {})
                    latest = s
                    break
                except Exception:  # reported when the step is restored
                    continue
            else:
                return
        diffs = signature_diff(self._signature, current)
        if diffs:
            raise CheckpointMismatchError(
                f"{self.directory} holds checkpoints of a different model (latest step {latest}); "
                f"differing: {'; '.join(diffs)}; use another output directory or the original settings"
            )

    def wait_until_finished(self) -> None:
        """Block until an asynchronous save (and its keep-last-N clean-up) has completed."""
        self._manager.wait_until_finished()
        self._record_sizes()

    def close(self) -> None:
        """Finish pending saves and release orbax's resources."""
        self._record_sizes()
        self._manager.close()

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- restoring ---------------------------------------------------------------------

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON record stored with ``step`` (default: latest): ``metadata``, ``key``,
        ``run_config``, ``signature``, ``step``."""
        step = self._resolve_step(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
        return restored[META]

    def run_record(self, step: int | None = None) -> RunRecord:
        """The run record stored with ``step`` (default: latest), in whatever format it was stored
        (:meth:`RunRecord.from_dict`), with the architecture the step's weights were saved with (its
        signature, which a step saved without a run config holds too)."""
        step = self._resolve_step(step)
        stored = self.metadata(step)
        values = dict(stored.get("run_config") or {})
        weights = (stored.get("signature") or {}).get("elf")
        if weights is not None:  # the fields a resume may change, which the signature leaves out, from the run config
            values["elf"] = {**(values.get("elf") or {}), **weights}
        return RunRecord.from_dict(values, where=f"the run config stored with step {step} in {self.directory}")

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore ``step`` (default: latest) into the structure of ``target`` and return it with
        the saved metadata (the PRNG key, if one was saved, under ``"key"``).

        ``target`` is a concrete state or an abstract one (``eqx.filter_eval_shape``); each array
        lands with the target leaf's sharding (a ``ShapeDtypeStruct`` without one: the first
        local device). Shapes and dtypes must match exactly, else :class:`CheckpointMismatchError`.
        """
        step = self._resolve_step(step)
        state = self._restore_into(target, step, prefix=())
        record = self.metadata(step)
        meta = dict(record["metadata"])
        if record.get("key") is not None:
            meta["key"] = key_from_json(record["key"])
        return state, meta

    def restore_part(self, target: Any, which: str, step: int | None = None) -> Any:
        """Restore only the saved state's top-level field ``which`` (e.g. ``"ema"``) into ``target``."""
        return self._restore_into(target, self._resolve_step(step), prefix=(which,))

    def stored_leaves(self, which: str, step: int | None = None) -> dict[tuple[str, ...], Any]:
        """The arrays stored under the state's top-level field ``which`` (e.g. ``"ema"``): their
        names below it → orbax's metadata of each (``.shape``, ``.dtype``), read without any array."""
        stored = flatten_nested(self._manager.item_metadata(self._resolve_step(step))[STATE].tree)
        return {names[1:]: m for names, m in stored.items() if names[:1] == (which,)}

    def read_leaf(self, which: str, names: tuple[str, ...], step: int) -> np.ndarray:
        """One stored array, ``which`` then ``names`` (as :meth:`stored_leaves` lists them), as a
        NumPy array on the host, whatever mesh saved it: only that array's files are read, so a
        model is read one tensor at a time (an export never holds it whole)."""
        full = (which, *names)
        restore = ocp.args.PyTreeRestore(item=to_nested([(full, 0)]),
                                         restore_args=to_nested([(full, ocp.RestoreArgs(restore_type=np.ndarray))]),
                                         partial_restore=True)
        restored = self._manager.restore(step, args=ocp.args.Composite(**{STATE: restore}))[STATE]
        return np.asarray(flatten_nested(restored)[full])

    def _restore_into(self, target: Any, step: int, prefix: tuple[str, ...]) -> Any:
        default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        expected = {(*prefix, *names): abstract_leaf(leaf, default) for names, leaf in named_leaves(target)}
        stored = flatten_nested(self._manager.item_metadata(step)[STATE].tree)
        if prefix:
            stored = {names: m for names, m in stored.items() if names[: len(prefix)] == prefix}
        problems = misfits(expected, stored) + unexpected(expected, stored)
        if problems:
            listed = "; ".join(problems[:_MAX_LISTED])
            more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {self.directory} does not fit the target state: {listed}{more}"
            )
        item = to_nested(list(expected.items()))
        restore = ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=bool(prefix)
        )
        restored = self._manager.restore(step, args=ocp.args.Composite(**{STATE: restore}))[STATE]
        arrays = {names[len(prefix):]: value for names, value in flatten_nested(restored).items()}
        return fill_template(target, arrays)
