"""Checkpoints: bit-exact round trips, resumed training, metadata, keep-last-N, killed saves,
damaged steps reported and skipped, metrics dropped past the resume step, and the clear errors
for a different model or mismatched shapes."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from run_fixtures import store_old_run_config

from elf_eqx.errors import CheckpointMismatchError
from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.training.run_directory import load_model_from_checkpoint
from elf_eqx.config import preset
from elf_eqx.model import ELF
from elf_eqx.objective import FlowObjective, LatentBatch
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.optim import make_optimizer
from elf_eqx.training.run_record import RunRecord
from elf_eqx.training.step import TrainState, make_train_step

CFG = preset("ELF-T", encoder_dim=16, vocab_size=40)
STEP_KEY = jax.random.key(7)


def make_state(cfg=CFG) -> tuple[TrainState, object]:
    model = ELF(cfg, key=jax.random.key(0))
    opt = make_optimizer(model, 1e-3, name="muon")
    return TrainState.create(model, opt), opt


def abstract_state(cfg=CFG) -> TrainState:
    return eqx.filter_eval_shape(lambda: make_state(cfg)[0])


def batch(i: int) -> LatentBatch:
    kx, kt = jax.random.split(jax.random.key(100 + i))
    x = jax.random.normal(kx, (4, 8, CFG.encoder_dim))
    tokens = jax.random.randint(kt, (4, 8), 0, CFG.vocab_size)
    return LatentBatch.unconditional(x, tokens, jnp.ones((4, 8), bool))


def run_record(cfg=CFG, **run) -> RunRecord:
    return RunRecord(elf=cfg, encoder="enc-a", tokenizer="enc-a", run=TrainConfig.from_dict({"blr": 1e-3, **run}))


def assert_trees_identical(a, b) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def step_fn():
    _, opt = make_state()
    return make_train_step(opt, ema_decay=0.9)


def train(state: TrainState, step_fn, start: int, stop: int) -> tuple[TrainState, list[dict]]:
    # Restored arrays are committed to a device and fresh ones are not; jit keys its cache on
    # that, so committing here lets every run share one compiled step.
    state = jax.device_put(state, jax.devices()[0])
    metrics = []
    for i in range(start, stop):
        state, m = step_fn(state, batch(i), STEP_KEY, FlowObjective())
        metrics.append({k: float(v) for k, v in m.items()})
    return state, metrics


def test_round_trip_is_bit_exact_and_training_continues(tmp_path, step_fn):
    uninterrupted, expected_metrics = train(make_state()[0], step_fn, 0, 5)

    state, _ = train(make_state()[0], step_fn, 0, 3)
    saved = jax.tree_util.tree_map(np.asarray, state)  # the state is donated below
    manager = CheckpointManager(tmp_path, run_record=run_record())
    manager.save(3, state, {"data": {"epoch": 0, "position": 12}}, key=STEP_KEY)

    restored, meta = CheckpointManager(tmp_path).restore(abstract_state())
    assert isinstance(restored, TrainState) and restored.model.config == CFG
    assert int(restored.step) == 3 and meta["data"] == {"epoch": 0, "position": 12}
    assert_trees_identical(restored, saved)
    np.testing.assert_array_equal(jax.random.key_data(meta["key"]), jax.random.key_data(STEP_KEY))

    resumed, resumed_metrics = train(restored, step_fn, 3, 5)
    assert resumed_metrics == expected_metrics[3:]
    assert_trees_identical(resumed, uninterrupted)


def test_restore_onto_concrete_or_sharded_template(tmp_path):
    state, _ = make_state()
    manager = CheckpointManager(tmp_path)
    manager.save(1, state)

    restored, meta = manager.restore(make_state()[0], step=1)
    assert_trees_identical(restored, state)
    assert meta == {}

    sharding = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), PartitionSpec())
    template = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract_state()
    )
    restored, _ = manager.restore(template)
    assert all(leaf.sharding == sharding for leaf in jax.tree_util.tree_leaves(restored))
    assert_trees_identical(restored, state)


def test_async_save(tmp_path):
    state, _ = make_state()
    with CheckpointManager(tmp_path, async_save=True) as manager:
        manager.save(2, state, {"data": {"position": 1}})
        manager.wait_until_finished()
        assert manager.latest_step() == 2
        assert_trees_identical(manager.restore(abstract_state())[0], state)


def test_metadata_round_trip(tmp_path):
    state, _ = make_state()
    legacy_key = jax.random.PRNGKey(3)
    manager = CheckpointManager(tmp_path, run_record=run_record(max_steps=10))
    manager.save(1, state, {"data": {"epoch": 2, "order": [3, 1, 2]}, "seed": 4}, key=jax.random.key(9))
    manager.save(2, state, {"data": {"epoch": 3}}, key=legacy_key)

    record = manager.metadata(1)
    assert record["run_config"] == run_record(max_steps=10).to_dict() and record["run_config"]["version"] == 1
    assert manager.run_record(1) == run_record(max_steps=10)
    assert record["signature"]["encoder"] == "enc-a" and record["signature"]["elf"]["vocab_size"] == 40
    _, meta = manager.restore(abstract_state(), step=1)
    assert meta["data"] == {"epoch": 2, "order": [3, 1, 2]} and meta["seed"] == 4
    np.testing.assert_array_equal(jax.random.key_data(meta["key"]), jax.random.key_data(jax.random.key(9)))
    _, meta = manager.restore(abstract_state())
    assert meta["key"].dtype == jnp.uint32 and np.array_equal(meta["key"], legacy_key)

    with pytest.raises(TypeError, match="JSON"):
        manager.save(3, state, {"data": object()})


def test_keep_last_n_and_never_overwrite(tmp_path):
    state, _ = make_state()
    manager = CheckpointManager(tmp_path, max_to_keep=2)
    for step in (1, 2, 3, 4):
        manager.save(step, state)
    assert manager.all_steps() == [3, 4]
    with pytest.raises(ValueError, match="already has step 4"):
        manager.save(4, state)
    with pytest.raises(ValueError, match="already has step 4"):
        manager.save(2, state)

    reopened = CheckpointManager(tmp_path, max_to_keep=1)
    assert reopened.all_steps() == [3, 4]  # opening deletes nothing
    reopened.save(5, state)
    assert reopened.all_steps() == [5]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["5"]


def test_leftover_temporary_directory_is_ignored(tmp_path):
    state, _ = make_state()
    manager = CheckpointManager(tmp_path)
    manager.save(1, state)
    ckpt = tmp_path / "checkpoints"
    # What a save killed before its final rename leaves: a partial copy under orbax's temporary name.
    partial = ckpt / "2.orbax-checkpoint-tmp"
    shutil.copytree(ckpt / "1", partial)
    shutil.rmtree(partial / "state")

    reopened = CheckpointManager(tmp_path)
    assert reopened.all_steps() == [1] and reopened.latest_step() == 1
    assert_trees_identical(reopened.restore(abstract_state())[0], state)
    reopened.save(2, state)
    assert reopened.all_steps() == [1, 2] and not partial.exists()


KILLED_SAVER = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import jax
    from elf_eqx.training.checkpoint import CheckpointManager
    from elf_eqx.config import preset
    from elf_eqx.model import ELF
    from elf_eqx.training.optim import make_optimizer
    from elf_eqx.training.step import TrainState

    model = ELF(preset("ELF-T", encoder_dim=16, vocab_size=40), key=jax.random.key(0))
    state = TrainState.create(model, make_optimizer(model, 1e-3, name="muon"))
    manager = CheckpointManager(sys.argv[1])
    manager.save(1, state, {"data": {"position": 1}})
    manager.save(2, state, {"data": {"position": 2}})

    def kill_mid_save():
        while True:
            if any(".orbax-checkpoint-tmp" in name for name in os.listdir(manager.directory)):
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill_mid_save, daemon=True).start()
    for step in range(3, 200):
        manager.save(step, state, {"data": {"position": step}})
    sys.exit(3)
    """
)


def test_save_killed_with_sigkill_keeps_earlier_checkpoints(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVER, str(tmp_path)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    ckpt = tmp_path / "checkpoints"
    leftovers = [p.name for p in ckpt.iterdir() if ".orbax-checkpoint-tmp" in p.name]
    assert len(leftovers) == 1
    killed_step = int(leftovers[0].split(".")[0])

    manager = CheckpointManager(tmp_path)
    assert manager.all_steps() == list(range(1, killed_step))
    assert manager.latest_step() == killed_step - 1
    restored, meta = manager.restore(abstract_state())
    assert meta["data"] == {"position": killed_step - 1}
    assert_trees_identical(restored, make_state()[0])
    manager.save(killed_step, restored)
    assert manager.latest_step() == killed_step


def test_different_model_is_refused(tmp_path):
    state, _ = make_state()
    CheckpointManager(tmp_path, run_record=run_record()).save(1, state)

    CheckpointManager(tmp_path, run_record=run_record(blr=5e-3, max_steps=99))  # run settings may change
    other = dataclasses.replace(run_record(preset("ELF-T", encoder_dim=16, vocab_size=50)), encoder="enc-b")
    with pytest.raises(CheckpointMismatchError) as err:
        CheckpointManager(tmp_path, run_record=other)
    message = str(err.value)
    assert "holds checkpoints of a different model" in message and "\n" not in message
    assert "elf.vocab_size: 40 → 50" in message and "encoder: 'enc-a' → 'enc-b'" in message
    assert "hidden_size" not in message

    other_state, _ = make_state(preset("ELF-T", encoder_dim=16, vocab_size=50))
    with pytest.raises(CheckpointMismatchError, match="elf.vocab_size"):
        CheckpointManager(tmp_path).save(2, other_state)
    assert CheckpointManager(tmp_path).all_steps() == [1]


def test_a_directory_written_in_an_older_format_reads_and_resumes(tmp_path):
    state, _ = make_state()
    with CheckpointManager(tmp_path) as manager:
        manager.save(1, state)
    # What checkpoints of the first runs store: no version, no family, no tokenizer, a flat run config.
    store_old_run_config(tmp_path / "checkpoints" / "1",
                         {"elf": dataclasses.asdict(CFG), "encoder": "enc-a", "run": {"blr": 1e-3}})
    assert CheckpointManager(tmp_path).run_record() == run_record()
    assert_trees_identical(load_model_from_checkpoint(tmp_path), state.ema)
    CheckpointManager(tmp_path, run_record=run_record()).save(2, state)  # today's record resumes it
    with pytest.raises(CheckpointMismatchError, match="encoder: 'enc-a' → 'enc-b'"):
        CheckpointManager(tmp_path, run_record=dataclasses.replace(run_record(), encoder="enc-b"))


def test_wrong_shapes_name_the_parameters(tmp_path):
    state, _ = make_state()
    manager = CheckpointManager(tmp_path)
    manager.save(1, state)
    with pytest.raises(CheckpointMismatchError) as err:
        manager.restore(abstract_state(preset("ELF-T", encoder_dim=16, vocab_size=50)))
    message = str(err.value)
    assert "model.unembed.weight: checkpoint (16, 40) vs expected (16, 50)" in message
    assert "ema.unembed.bias: checkpoint (40,) vs expected (50,)" in message

    adamw_state = TrainState.create(state.model, make_optimizer(state.model, 1e-3, name="adamw"))
    with pytest.raises(CheckpointMismatchError, match="missing from the checkpoint|not in the target"):
        manager.restore(adamw_state)


def test_load_model_from_checkpoint(tmp_path, step_fn):
    state, _ = train(make_state()[0], step_fn, 0, 2)
    ema, model = jax.tree_util.tree_map(np.asarray, (state.ema, state.model))
    manager = CheckpointManager(tmp_path, run_record=run_record())
    manager.save(2, state)
    manager.close()

    loaded = load_model_from_checkpoint(tmp_path)
    assert isinstance(loaded, ELF) and loaded.config == CFG
    assert_trees_identical(loaded, ema)
    assert_trees_identical(load_model_from_checkpoint(tmp_path / "checkpoints" / "2", which="model"), model)
    assert_trees_identical(load_model_from_checkpoint(tmp_path / "checkpoints", step=2), ema)
    with pytest.raises(FileNotFoundError):
        load_model_from_checkpoint(tmp_path / "nothing")


def _truncate_data_files(step_dir) -> None:
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            os.truncate(path, path.stat().st_size // 2)


def test_damaged_newest_step_is_reported_kept_and_skipped(tmp_path, capfd):
    from elf_eqx.errors import UnreadableCheckpointError

    state, _ = make_state()
    manager = CheckpointManager(tmp_path)
    for step in (1, 2):
        manager.save(step, state, {"data": {"position": step}})
    manager.close()
    newest = tmp_path / "checkpoints" / "2"
    _truncate_data_files(newest)

    reopened = CheckpointManager(tmp_path)  # a damaged newest step does not block opening
    assert reopened.damage(1) is None and "bytes, expected" in reopened.damage(2)
    (restored, meta), step = reopened.readable(lambda s: reopened.restore(abstract_state(), s))
    assert step == 1 and meta["data"] == {"position": 1}
    assert_trees_identical(restored, state)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint step 2 in" in err[0] and "left in place" in err[0]
    assert newest.is_dir()
    with pytest.raises(UnreadableCheckpointError, match="checkpoint step 2 .* cannot be read"):
        reopened.readable(lambda s: reopened.restore(abstract_state(), s), step=2)
    with pytest.raises(FileNotFoundError, match="step 5"):
        reopened.readable(lambda s: reopened.restore(abstract_state(), s), step=5)
    # Without the size record, the failed restore itself sends us to the older step.
    (newest / "elf_sizes.json").unlink()
    assert reopened.readable(lambda s: reopened.restore(abstract_state(), s))[1] == 1

    moved = reopened.set_aside_after(1)
    assert moved == [tmp_path / "checkpoints.set_aside" / "2"] and (moved[0] / "state").is_dir()
    assert reopened.all_steps() == [1]
    reopened.save(2, restored)  # the resumed run can save that step number again
    assert reopened.damage(2) is None


def test_metrics_after_the_resume_step_are_dropped(tmp_path):
    import json

    from elf_eqx.training.metrics_log import MetricsLog

    log = MetricsLog(tmp_path)
    for step in range(1, 6):
        log.write(step, {"loss": float(step)})
    log.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "lo')  # a write cut short by a kill
    log = MetricsLog(tmp_path, resume_step=3)
    log.write(4, {"loss": 40.0})
    log.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
