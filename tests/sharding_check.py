"""Run in a subprocess with 8 CPU devices by tests/test_sharding.py: the train step, a checkpoint
round trip across mesh shapes, and the sampler on several meshes against one device. Prints one
JSON object of the largest differences."""

from __future__ import annotations

import json
import sys
import tempfile

import equinox as eqx
import jax
import numpy as np
from helpers import random_batch, tiny_model

from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.parallel.mesh import MeshConfig, batch_sharding, make_mesh
from elf_eqx.objective import FlowObjective
from elf_eqx.training.optim import make_optimizer
from elf_eqx.parallel.partition import tree_shardings
from elf_eqx.sampling.compiled import make_sample_fn
from elf_eqx.sampler import Condition, Sampler
from elf_eqx.training.step import TrainState, make_train_step

MESHES = [(8, 1, 1), (2, 4, 1), (1, 8, 1), (2, 2, 2)]
KEY = jax.random.key(5)


def max_diff(a, b) -> float:
    leaves = zip(jax.tree_util.tree_leaves(eqx.filter(a, eqx.is_array)), jax.tree_util.tree_leaves(eqx.filter(b, eqx.is_array)))
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in leaves)


def run_steps(state, step_fn, batches):
    losses = []
    for batch in batches:
        state, metrics = step_fn(state, batch, KEY, FlowObjective())
        losses.append(float(metrics["loss"]))
    return state, losses


def main() -> None:
    model = tiny_model()
    optimizer = make_optimizer(model, 1e-2, name="muon")
    batches = [random_batch(8, 8, seed=s) for s in (1, 2)]
    single, single_losses = run_steps(TrainState.create(model, optimizer), make_train_step(optimizer), batches)
    abstract = eqx.filter_eval_shape(TrainState.create, model, optimizer)
    result: dict = {"train": {}, "sample": {}}
    states = {}
    for shape in MESHES:
        mesh = make_mesh(MeshConfig(*shape))
        shardings = tree_shardings(abstract, mesh)
        step_fn = make_train_step(optimizer, state_sharding=shardings, batch_sharding=batch_sharding(mesh))
        state = jax.device_put(TrainState.create(model, optimizer), shardings)
        placed = [jax.device_put(b, batch_sharding(mesh)) for b in batches]
        state, losses = run_steps(state, step_fn, placed)
        sharded = sum(1 for s in jax.tree_util.tree_leaves(shardings) if any(a is not None for a in s.spec))
        result["train"][str(shape)] = {"loss": max(abs(a - b) for a, b in zip(losses, single_losses)),
                                       "state": max_diff(state, single), "sharded_leaves": sharded}
        states[shape] = (state, shardings, step_fn, mesh)

    # Save on (2, 4), restore on (8, 1): the next step gives the same loss as continuing on (2, 4).
    state24, _, step24, mesh24 = states[(2, 4, 1)]
    _, shardings81, step81, mesh81 = states[(8, 1, 1)]
    with tempfile.TemporaryDirectory() as folder:
        with CheckpointManager(folder) as manager:
            manager.save(2, state24)
        with CheckpointManager(folder) as manager:
            template = jax.device_put(TrainState.create(model, optimizer), shardings81)
            restored, _ = manager.restore(template)
    restored_on = dict(jax.tree_util.tree_leaves(restored)[1].sharding.mesh.shape)
    state_vs_saved = max_diff(restored, state24)
    next_batch = random_batch(8, 8, seed=3)
    _, m24 = step24(state24, jax.device_put(next_batch, batch_sharding(mesh24)), KEY, FlowObjective())
    _, m81 = step81(restored, jax.device_put(next_batch, batch_sharding(mesh81)), KEY, FlowObjective())
    result["restore"] = {"loss": abs(float(m24["loss"]) - float(m81["loss"])), "state_vs_saved": state_vs_saved,
                         "restored_on": restored_on}

    sampler = Sampler(num_steps=3)
    cond = Condition.none(8, 8, model.config.encoder_dim)
    reference = make_sample_fn(sampler, None, model, eos_id=1, pad_id=0)(model, KEY, cond)
    for shape in MESHES:
        out = make_sample_fn(sampler, make_mesh(MeshConfig(*shape)), model, eos_id=1, pad_id=0)(model, KEY, cond)
        result["sample"][str(shape)] = {"tokens_equal": bool(np.array_equal(np.asarray(out.tokens), np.asarray(reference.tokens))),
                                        "latents": float(np.max(np.abs(np.asarray(out.latents) - np.asarray(reference.latents))))}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
