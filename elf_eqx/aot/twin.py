"""The compiler's FLOPs and time estimate of a scanned training step from shallow twins scaled to its
depth (docs/method.md#dry-run), for steps whose twin unrolled in full compiles too slowly (ELF-L's 32
layers on a 2-core machine).

XLA counts a ``lax.scan`` body once, so the estimate needs the layers unrolled. Instead of unrolling
all ``L`` layers, the step is compiled unrolled at two small depths ``k1 < k2`` (2 and 3; the same
config, mesh and shardings) and the optimizer's update alone (no loss, no data: its gradients are
zeros) at ``k1``, ``k2`` and ``L``. The step less its update is linear in the depth (every layer runs the same
forward and backward), so it is extrapolated from the two shallow twins; the update is not (shared
Newton–Schulz gives each device whole matrices, ``ceil``-like in the layer count), so its own
full-depth figure is added back::

    part(k)  = step(k) − update(k)
    step(L) ≈ part(k1) + (L − k1)·(part(k2) − part(k1))/(k2 − k1) + update(L)

for every figure of the cost analysis (FLOPs, ``optimal_seconds``, bytes accessed...). Not from depth
1: the cost model gives a step's first layer more time than the others (ELF-B on v5p-64: 7.2 ms from
depth 1 to 2, 6.5 ms from 2 to 3, whose extrapolation to 12 layers is 6.8% over the full twin's
time against 0.8% under). Against the full twin see benchmarks/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from elf_eqx.aot.analysis import cost
from elf_eqx.aot.compile import CompiledProgram, compile_for_target
from elf_eqx.parallel.mesh import batch_split
from elf_eqx.training.step import make_train_step

TWIN_OPTIONS = {"xla_tpu_enable_windowed_einsum_for_reduce_scatter": False,
                "xla_tpu_enable_windowed_einsum_for_all_gather": False}
"""XLA options of every twin on a TPU: no windowed einsums. Where a matmul's operand or result is
gathered or reduce-scattered (fsdp weights, ZeRO-1 gradients) XLA's TPU compiler may split it into
a loop of partial matmuls and collective-permutes, and the cost model counts a loop body once (seen:
ELF-B on v5p-64 with ZeRO-1, 20% of the step's FLOPs missing); without them the work is counted in full."""

SHALLOW_DEPTHS = (2, 3)
"""The depths of the two shallow twins (at most the depth of any preset)."""


def _reads_no_data(model, batch, key):
    """A loss of nothing: zero gradients, so a step on it is the optimizer update and the EMA alone."""
    del batch, key
    return 0.0 * sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(model)), {}


def update_program(program: Any, target: Any, ema_decay: float) -> CompiledProgram:
    """The update alone of ``program``'s step (a :class:`~elf_eqx.training.trainer.StepProgram`):
    its optimizer, state shardings and mesh, through the same ``make_train_step``, on a loss that
    reads no data."""
    step = make_train_step(program.optimizer, ema_decay=ema_decay, state_sharding=program.state_sharding,
                           batch_sharding=program.batch_sharding)
    batch = jax.ShapeDtypeStruct((batch_split(program.mesh),), jnp.float32, sharding=program.batch_sharding)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return compile_for_target(step, (program.abstract_state(), batch, key, _reads_no_data, None), target=target,
                              mesh=program.mesh, compiler_options=twin_options(target))


def twin_options(target: Any) -> dict[str, Any]:
    """The XLA options a twin of a program for ``target`` is compiled with (:data:`TWIN_OPTIONS` on TPU)."""
    return dict(TWIN_OPTIONS) if target.platform == "tpu" else {}


def _part(step: dict[int, dict[str, float]], update: dict[int, dict[str, float]], k: int, name: str) -> float:
    """A figure of the step at depth ``k`` less its update's."""
    return step[k].get(name, 0.0) - update[k].get(name, 0.0)


def extrapolate(depth: int, step: dict[int, dict[str, float]], update: dict[int, dict[str, float]]) -> dict[str, float]:
    """Every figure of the step's cost analysis at ``depth`` from the shallow twins' (``step[k]`` for
    the two :data:`SHALLOW_DEPTHS`) and the update's (``update[k]`` for those and ``depth``)."""
    k1, k2 = SHALLOW_DEPTHS
    out: dict[str, float] = {}
    for name in step[k1]:
        per_layer = (_part(step, update, k2, name) - _part(step, update, k1, name)) / (k2 - k1)
        out[name] = _part(step, update, k1, name) + (depth - k1) * per_layer + update[depth].get(name, 0.0)
    return out


def scaled_costs(depth: int, step_at: Callable[[int], CompiledProgram],
                 update_at: Callable[[int], CompiledProgram]) -> tuple[dict[str, float], dict[str, Any]]:
    """The cost analysis of the step at ``depth`` from ``step_at(k)`` (the step unrolled at depth
    ``k``) and ``update_at(k)`` (its update alone), and what was compiled: the depths, the seconds
    spent, the FLOPs per layer and of the update. A step no deeper than the twins is compiled
    unrolled as it is."""
    if depth <= SHALLOW_DEPTHS[-1]:
        whole = step_at(depth)
        return cost(whole.compiled), {"depths": [depth], "compile_s": whole.lower_s + whole.compile_s}
    steps = {k: step_at(k) for k in SHALLOW_DEPTHS}
    updates = {k: update_at(k) for k in sorted({*SHALLOW_DEPTHS, depth})}
    step, update = ({k: cost(p.compiled) for k, p in group.items()} for group in (steps, updates))
    k1, k2 = SHALLOW_DEPTHS
    details = {"depths": [k1, k2],
               "compile_s": sum(p.lower_s + p.compile_s for p in (*steps.values(), *updates.values())),
               "per_layer_flops": (_part(step, update, k2, "flops") - _part(step, update, k1, "flops")) / (k2 - k1),
               "update_flops": update[depth].get("flops"), "update_estimate_s": update[depth].get("optimal_seconds")}
    return extrapolate(depth, step, update), details
