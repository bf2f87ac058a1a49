"""Read the weights of one released checkpoint without Flax: a ``checkpoint_<step>`` Flax msgpack
file, or a ``checkpoint_<step>/`` folder holding an orbax PyTree checkpoint of the same dict
``{params, ema_params1, opt_state, step, epoch, dropout_rng}``.

Only the requested weight entries and ``step`` are read from an orbax folder (the optimizer
state, twice the size of the weights, is never restored); a msgpack file has to be decoded whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elf_eqx.errors import BadWeightsError, MissingInputError, UserError
from elf_eqx.io.flax_msgpack import flatten_params, read_flax_msgpack

# Which entry of the release dict holds which weights.
WEIGHT_ENTRIES = {"ema": "ema_params1", "raw": "params"}
_ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "checkpoint")


@dataclasses.dataclass(frozen=True)
class ReleaseWeights:
    """Flat (``/``-joined reference names) parameters of a release checkpoint, by weights kind."""

    params: dict[str, dict[str, np.ndarray]]
    """``"ema"`` and/or ``"raw"`` → ``{name: array}``."""
    step: int | None


def orbax_item_folder(path: Path) -> Path | None:
    """The folder holding the orbax PyTree of ``path``: ``path`` itself, or its only subfolder
    that is one (an orbax CheckpointManager step keeps its item in e.g. ``default/``; a
    ``checkpoint_<step>`` subfolder is a checkpoint of its own); else None."""
    if not path.is_dir():
        return None
    if any((path / marker).exists() for marker in _ORBAX_MARKERS):
        return path
    items = [sub for sub in path.iterdir() if sub.is_dir() and not sub.name.startswith("checkpoint_")
             and any((sub / marker).exists() for marker in _ORBAX_MARKERS)]
    return items[0] if len(items) == 1 else None


def _check_weights(weights: Sequence[str]) -> list[str]:
    unknown = [w for w in weights if w not in WEIGHT_ENTRIES]
    if unknown or not weights:
        raise ValueError(f"weights must be among {sorted(WEIGHT_ENTRIES)}, got {list(weights)}")
    return [WEIGHT_ENTRIES[w] for w in weights]


def _require_entries(path: Path, entries: Sequence[str], present: Sequence[str]) -> None:
    missing = [e for e in entries if e not in present]
    if missing:
        raise BadWeightsError(f"{path} has no {', '.join(map(repr, missing))} entry: it holds {sorted(present)}, "
                              "not a released ELF checkpoint")


def _read_orbax_entries(folder: Path, entries: Sequence[str]) -> dict[str, Any]:
    """``entries`` (and ``step`` when stored) of the orbax PyTree in ``folder``, arrays as NumPy."""
    import jax
    import orbax.checkpoint as ocp

    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            stored = checkpointer.metadata(folder.absolute()).item_metadata.tree
            if not isinstance(stored, dict):
                raise BadWeightsError(f"{folder}: cannot read this orbax checkpoint "
                                      f"(holds a {type(stored).__name__}, not a checkpoint dict)")
            _require_entries(folder, entries, list(stored))
            wanted = {name: stored[name] for name in [*entries, "step"] if name in stored}
            item = jax.tree.map(lambda _: 0, wanted)
            as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
            restore = ocp.args.PyTreeRestore(item=item, restore_args=as_numpy, partial_restore=True)
            return checkpointer.restore(folder.absolute(), args=restore)
    except UserError:
        raise
    except ValueError as err:
        raise BadWeightsError(f"{folder}: cannot read this orbax checkpoint ({err})") from err
    except Exception as err:  # orbax/tensorstore raise many types for a damaged folder
        raise BadWeightsError(f"{folder}: cannot read this orbax checkpoint ({type(err).__name__}: {err})") from err


def read_release_weights(path: str | Path, weights: Sequence[str] = ("ema",)) -> ReleaseWeights:
    """The ``weights`` (``"ema"`` → ``ema_params1``, ``"raw"`` → ``params``) of the release
    checkpoint file or orbax folder at ``path``, flattened to reference names, and its step.

    Raises :class:`~elf_eqx.errors.MissingInputError` when ``path`` is neither,
    :class:`~elf_eqx.errors.BadWeightsError` naming ``path`` when it cannot be decoded (truncated,
    garbage) or lacks an entry.
    """
    path = Path(path)
    entries = _check_weights(weights)
    if path.is_file():
        tree = read_flax_msgpack(path)
        _require_entries(path, entries, list(tree))
    elif (folder := orbax_item_folder(path)) is not None:
        tree = _read_orbax_entries(folder, entries)
    else:
        raise MissingInputError(f"{path} is neither a Flax msgpack checkpoint file nor an orbax checkpoint folder")
    params = {}
    for kind, entry in zip(weights, entries):
        if not isinstance(tree[entry], dict):
            raise BadWeightsError(f"{path}: {entry!r} is a {type(tree[entry]).__name__}, not a parameter dict")
        params[kind] = flatten_params(tree[entry])
    step = tree.get("step")
    return ReleaseWeights(params=params, step=None if step is None else int(np.asarray(step)))
