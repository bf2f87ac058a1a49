"""Run in a subprocess with 8 CPU devices by tests/integration/test_muon_shared.py: Muon's update
with Newton–Schulz shared over the mesh against the replicated one (the same mesh, and one
device), and a run resumed across ZeRO-1 (saved replicated, restored sharded, and back) against
one that never stopped. Prints one JSON object."""

from __future__ import annotations

import json
import sys
import tempfile

import equinox as eqx
import jax
import numpy as np
from optax.contrib import MuonDimensionNumbers
from helpers import random_batch, tiny_model

from elf_eqx.objective import FlowObjective
from elf_eqx.parallel.mesh import MeshConfig, batch_sharding, make_mesh, traced_on
from elf_eqx.parallel.partition import tree_shardings
from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.training.optim import make_optimizer, muon_dimension_numbers, newton_schulz_plan
from elf_eqx.training.state_sharding import train_state_shardings
from elf_eqx.training.step import TrainState, make_train_step
from elf_eqx.tree_paths import dotted, path_names

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]
KEY = jax.random.key(5)


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))]


def compare(a, b) -> dict:
    """Largest absolute difference, and which leaves are not bitwise equal."""
    names = [dotted(path_names(p)) for p, _ in jax.tree_util.tree_flatten_with_path(eqx.filter(a, eqx.is_array))[0]]
    diffs = [float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))
             for x, y in zip(leaves(a), leaves(b))]
    scale = max(float(np.max(np.abs(y), initial=0.0)) for y in leaves(b))
    return {"max": max(diffs), "scale": scale, "differ": [n for n, d in zip(names, diffs) if d != 0.0]}


def two_updates(model, grads, share: bool, mesh=None):
    """Muon's updates and state after two steps (learning rate 1: the updates are the
    orthogonalised momenta, scaled by shape, entries of order 0.1)."""
    opt = make_optimizer(model, 1.0, clip_norm=None, share_newton_schulz=share)
    state = opt.init(model)
    if mesh is None:
        update = jax.jit(opt.update)
    else:
        shard = lambda tree: tree_shardings(tree, mesh)  # noqa: E731
        grads, state, model = (jax.device_put(t, shard(t)) for t in (grads, state, model))

        def traced(g, s, m):
            with traced_on(mesh):
                return opt.update(g, s, m)
        update = jax.jit(traced, out_shardings=(shard(grads), shard(state)))
    first, state = update(grads, state, model)
    second, state = update(jax.tree_util.tree_map(lambda g: 0.5 * g, grads), state, model)
    return (first, second), state


def updates_check() -> dict:
    model = tiny_model()
    grads = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape), model)
    plan = newton_schulz_plan(model, 8)
    dims = jax.tree_util.tree_flatten_with_path(muon_dimension_numbers(model),
                                                is_leaf=lambda d: isinstance(d, MuonDimensionNumbers))[0]
    muon_names = [dotted(path_names(p)) for p, d in dims if d is not None]
    out = {"per_device_share": plan.per_device_flops / plan.total_flops, "meshes": {}}
    one_device, _ = two_updates(model, grads, share=False)
    for shape in MESHES:
        mesh = make_mesh(MeshConfig(*shape))
        replicated, replicated_state = two_updates(model, grads, False, mesh)
        shared, shared_state = two_updates(model, grads, True, mesh)
        out["meshes"][str(shape)] = {"vs_replicated": compare(shared, replicated),
                                     "vs_one_device": compare(shared, one_device),
                                     "replicated_vs_one_device": compare(replicated, one_device),
                                     "state_vs_replicated": compare(shared_state, replicated_state)}
    out["split_leaves"] = [name for name, split in zip(muon_names, plan.split) if split]
    return out


def resume_check() -> dict:
    """Train 4 steps on data 8: replicated optimizer state for 2, ZeRO-1 for 1, replicated for 1;
    once through checkpoints (saved under one setting, restored under the other) and once moving
    the state in memory."""
    model = tiny_model()
    optimizer = make_optimizer(model, 1e-2)
    mesh = make_mesh(MeshConfig(8, 1, 1))
    abstract = eqx.filter_eval_shape(TrainState.create, model, optimizer)
    shardings = {z: train_state_shardings(abstract, mesh, shard_optimizer_state=z) for z in (False, True)}
    steps = {z: make_train_step(optimizer, state_sharding=shardings[z],
                                batch_sharding=batch_sharding(mesh)) for z in (False, True)}
    batches = [jax.device_put(random_batch(8, 8, seed=s), batch_sharding(mesh)) for s in (1, 2, 3, 4)]
    plan = [False, False, True, False]

    def run(through_checkpoints: bool):
        state = jax.device_put(TrainState.create(model, optimizer), shardings[False])
        losses = []
        with tempfile.TemporaryDirectory() as folder:
            for i, (zero1, batch) in enumerate(zip(plan, batches)):
                if i and zero1 != plan[i - 1]:
                    if through_checkpoints:
                        with CheckpointManager(folder) as manager:
                            manager.save(i, state)
                        template = abstract_on(abstract, shardings[zero1])
                        with CheckpointManager(folder) as manager:
                            state, _ = manager.restore(template, step=i)
                    else:
                        state = jax.device_put(state, shardings[zero1])
                state, metrics = steps[zero1](state, batch, KEY, FlowObjective())
                losses.append(float(metrics["loss"]))
        return state, losses

    resumed, resumed_losses = run(True)
    kept, kept_losses = run(False)
    replicated = jax.device_put(TrainState.create(model, optimizer), shardings[False])
    replicated_losses = []
    for batch in batches:
        replicated, metrics = steps[False](replicated, batch, KEY, FlowObjective())
        replicated_losses.append(float(metrics["loss"]))
    mu = lambda s: s.opt_state[1].inner_states["muon"].inner_state[0].mu.blocks.attn.qkv.weight  # noqa: E731
    zero1_state = jax.device_put(TrainState.create(model, optimizer), shardings[True])
    return {"resumed_vs_kept": compare(resumed, kept), "losses_equal": resumed_losses == kept_losses,
            "zero1_vs_replicated": compare(kept, replicated),
            "loss_zero1_vs_replicated": max(abs(a - b) for a, b in zip(kept_losses, replicated_losses)),
            "momentum_spec": str(mu(zero1_state).sharding.spec),
            "momentum_shard_shape": list(mu(zero1_state).addressable_shards[0].data.shape)}


def abstract_on(abstract, shardings):
    return jax.tree_util.tree_map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                                  abstract, shardings)


def main() -> None:
    json.dump({"updates": updates_check(), "resume": resume_check()}, sys.stdout)


if __name__ == "__main__":
    main()
