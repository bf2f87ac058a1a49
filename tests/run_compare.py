"""Reading training runs back to compare them bitwise (integration/test_faults.py, one process;
integration/test_pod_faults.py, several): the metrics records, every array of a checkpoint's state
and the JSON record saved with it."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from elf_eqx.observe.step_clock import MEASURED_FIELDS


def records(out: Path) -> list[dict]:
    """The run's metrics records, in order."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def logged_steps(out: Path) -> int:
    """Complete lines of ``metrics.jsonl`` so far (0 before it exists)."""
    path = out / "metrics.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.endswith("}")) if path.is_file() else 0


def stored_state(out: Path, step: int) -> dict[str, np.ndarray]:
    """Every array of a checkpoint's state (model, EMA, optimizer state, step) as NumPy, whole (the
    shards every process wrote, put together on this one)."""
    path = out / "checkpoints" / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = checkpointer.restore(path, restore_args=as_numpy)
    return {"/".join(map(str, path)): np.asarray(leaf) for path, leaf in _leaves(restored)}


def stored_meta(out: Path, step: int) -> dict:
    """The JSON record saved with a step (its data position under ``metadata``, the key)."""
    return json.loads((out / "checkpoints" / str(step) / "meta" / "metadata").read_text())


def _leaves(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, (*prefix, k))
    else:
        yield prefix, tree


def assert_same_run(out: Path, reference: Path, total: int) -> None:
    """One metrics record per step of ``total``, equal to the reference's (the measured timings
    aside); the state at ``total`` (weights, EMA, optimizer state), its data position and key bitwise equal."""
    mine, theirs = records(out), records(reference)
    assert [r["step"] for r in mine] == list(range(1, total + 1)), "one metrics record per step"
    for a, b in zip(mine, theirs):
        assert ({k: v for k, v in a.items() if k not in MEASURED_FIELDS}
                == {k: v for k, v in b.items() if k not in MEASURED_FIELDS})
    a, b = stored_state(out, total), stored_state(reference, total)
    assert sorted(a) == sorted(b) and any(k.startswith("opt_state") for k in a) and any(k.startswith("ema") for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    ma, mb = stored_meta(out, total), stored_meta(reference, total)
    assert ma["metadata"] == mb["metadata"] and ma["key"] == mb["key"]


def saving(out: Path, step: int) -> bool:
    """Whether orbax is writing ``step`` now (its temporary folder exists)."""
    folder = out / "checkpoints"
    return folder.is_dir() and any(p.name.startswith(f"{step}.orbax-checkpoint-tmp") for p in folder.iterdir())
