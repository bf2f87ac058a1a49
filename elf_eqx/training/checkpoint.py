"""Training checkpoints: ``<output_dir>/checkpoints/<step>/`` through ``orbax.checkpoint``.

Each step folder holds two orbax items: ``state``, the arrays of the :class:`TrainState` (model,
EMA, optimizer state, step), and ``meta``, a JSON record of the caller's metadata (the data
loader position, ...), the run's base PRNG key, the resolved run config and the model signature.

Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it when complete, so a
process killed mid-save leaves the earlier steps untouched and a temporary folder that is never
listed as a step (and is replaced by the next save of that step). Old steps are removed only by
keep-last-N, after a new save has completed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import orbax.checkpoint as ocp

from elf_eqx.training.signature import as_json, key_from_json, key_to_json, model_signature, signature_diff
from elf_eqx.training.state_tree import abstract_leaf, fill_template, flatten_nested, misfits, named_leaves, to_nested, unexpected
from elf_eqx.config import ELFConfig
from elf_eqx.model import ELF
from elf_eqx.training.step import TrainState

STATE, META = "state", "meta"
FORMAT = 1
_MAX_LISTED = 8


class CheckpointMismatchError(ValueError):
    """The checkpoints do not belong to the model, or do not fit the state, being resumed."""


class CheckpointManager:
    """Saves and restores :class:`TrainState` checkpoints of one run under ``<output_dir>/checkpoints``.

    ``run_config`` (JSON-able) is stored with every step; its ``elf``, ``encoder``, ``tokenizer``
    and ``data_spec`` entries are the model signature, which must match the directory's latest
    checkpoint (checked on opening and on every save). Saves are synchronous unless
    ``async_save``; keep-last-``max_to_keep`` (``None`` keeps all) runs after each completed save.
    ``read_only`` opens an existing directory for restoring only. ``subdir`` is where the step
    folders live under ``output_dir`` (``""``: ``output_dir`` is that folder itself).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        max_to_keep: int | None = 3,
        run_config: Mapping[str, Any] | None = None,
        async_save: bool = False,
        read_only: bool = False,
        subdir: str = "checkpoints",
    ):
        self.directory = (Path(output_dir) / subdir).absolute()
        if read_only and not self.directory.is_dir():
            raise FileNotFoundError(f"no checkpoint directory at {self.directory}")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max_to_keep,
            save_interval_steps=0 if read_only else 1,
            enable_async_checkpointing=async_save,
            read_only=read_only,
            create=not read_only,
        )
        handlers = {STATE: ocp.PyTreeCheckpointHandler(), META: ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        self._run_config = None if run_config is None else as_json(dict(run_config), "run config")
        self._signature: dict[str, Any] | None = None
        if run_config is not None:
            self._check_signature(model_signature(run_config, None))

    # -- listing -----------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """The steps of all complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None`` when there is none."""
        return self._manager.latest_step()

    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise FileNotFoundError(f"no complete checkpoint for step {step} in {self.directory}; steps: {steps}")
        return step

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
        self._manager.save(step, args=args, force=True)
        self._signature = signature

    def _check_signature(self, current: dict[str, Any]) -> None:
        latest = self.latest_step()
        if latest is None:
            return
        if self._signature is None:
            self._signature = self.metadata(latest).get("signature", {})
        diffs = signature_diff(self._signature, current)
        if diffs:
            raise CheckpointMismatchError(
                f"{self.directory} holds checkpoints of a different model (latest step {latest}); "
                f"differing: {'; '.join(diffs)}. Use another output directory or the original settings."
            )

    def wait_until_finished(self) -> None:
        """Block until an asynchronous save (and its keep-last-N clean-up) has completed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release orbax's resources."""
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


def _open_read_only(path: Path) -> tuple[CheckpointManager, int | None]:
    """A read-only manager for an output directory, its ``checkpoints`` folder, or one step folder
    (then also that step)."""
    if (path / "checkpoints").is_dir():
        return CheckpointManager(path, read_only=True), None
    if path.name.isdigit() and (path / STATE).is_dir():
        return CheckpointManager(path.parent, read_only=True, subdir=""), int(path.name)
    if path.is_dir():
        return CheckpointManager(path, read_only=True, subdir=""), None
    raise FileNotFoundError(f"{path} is neither an output directory nor a checkpoint step folder")


def load_model_from_checkpoint(
    path: str | os.PathLike, which: Literal["ema", "model"] = "ema", *, step: int | None = None
) -> ELF:
    """The EMA (or raw) weights of a checkpoint, for sampling, without building an optimizer.

    ``path`` is a run's output directory or its ``checkpoints`` folder (latest step, or ``step``)
    or one step folder. The architecture comes from the checkpoint's stored ELF config.
    """
    manager, folder_step = _open_read_only(Path(path))
    with manager:
        if folder_step is not None and step is not None and step != folder_step:
            raise ValueError(f"step={step} conflicts with the step folder {path}")
        step = manager._resolve_step(step if step is not None else folder_step)
        elf = manager.metadata(step)["signature"]["elf"]
        template = eqx.filter_eval_shape(ELF, ELFConfig(**elf), key=jax.random.key(0))
        return manager.restore_part(template, which, step)
