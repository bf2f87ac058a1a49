import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from optax.contrib import MuonDimensionNumbers

from elf_eqx.distillation.objective import DistillObjective
from elf_eqx.objective import FlowObjective
from elf_eqx.training.optim import make_optimizer, muon_dimension_numbers
from elf_eqx.training.step import TrainState, ema_update, make_train_step, objective_parts, train_step
from elf_eqx.training.trainer import Trainer, build_step_program

from helpers import random_batch, tiny_model
from tolerances import assert_reassociated, reassociation

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

KEY = jax.random.key(11)


def test_small_model_overfits_one_batch():
    model, batch = tiny_model(), random_batch(batch=2, length=16)
    opt = make_optimizer(model, 3e-3, name="adamw")
    step = make_train_step(opt, ema_decay=0.99)
    state = TrainState.create(model, opt)
    losses = []
    for _ in range(300):
        state, metrics = step(state, batch, KEY, FlowObjective())
        losses.append(float(metrics["loss"]))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first / 10, (first, last)
    assert int(state.step) == 300


def test_muon_trains_and_assigns_matrices():
    model, batch = tiny_model(), random_batch(batch=4, length=8)
    dims = muon_dimension_numbers(model)
    assert dims.blocks.attn.qkv.weight == MuonDimensionNumbers(1, 2)
    assert dims.unembed.weight == MuonDimensionNumbers(0, 1)
    assert dims.blocks.attn.qkv.bias is None and dims.blocks.norm1.weight is None
    assert dims.time_tokens is None and dims.final_norm.weight is None
    opt = make_optimizer(model, 2e-3, name="muon")
    step = make_train_step(opt)
    state = TrainState.create(model, opt)
    losses = []
    for _ in range(40):
        state, metrics = step(state, batch, KEY, FlowObjective())
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_ema_and_donation_keep_caller_model():
    model, batch = tiny_model(), random_batch()
    opt = make_optimizer(model, 1e-3, name="adamw")
    state = TrainState.create(model, opt)
    new_state, _ = make_train_step(opt, ema_decay=0.9)(state, batch, KEY, FlowObjective())
    w0 = np.asarray(model.unembed.weight)  # still readable: the state held its own copy
    w1 = np.asarray(new_state.model.unembed.weight)
    # two products and a sum per weight, against the formula
    assert_reassociated(new_state.ema.unembed.weight, 0.9 * w0 + 0.1 * w1, terms=2)
    mixed = ema_update(model, new_state.model, 0.5)
    assert_reassociated(mixed.unembed.weight, 0.5 * (w0 + w1), terms=2)


def test_explicit_shardings_give_the_same_step():
    model, batch = tiny_model(), random_batch()
    opt = make_optimizer(model, 1e-3, name="adamw")
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    plain = make_train_step(opt, donate=False)
    sharded = make_train_step(opt, state_sharding=replicated, batch_sharding=batch_sharding, donate=False)
    state = TrainState.create(model, opt)
    (s1, m1), (s2, m2) = plain(state, batch, KEY, FlowObjective()), sharded(state, batch, KEY, FlowObjective())
    assert float(m1["loss"]) == float(m2["loss"])
    np.testing.assert_array_equal(np.asarray(s1.model.unembed.weight), np.asarray(s2.model.unembed.weight))


def test_resumed_randomness_depends_only_on_step():
    model, batch = tiny_model(), random_batch()
    opt = make_optimizer(model, 1e-3, name="adamw")
    step = make_train_step(opt, donate=False)
    state = TrainState.create(model, opt)
    s1, _ = step(state, batch, KEY, FlowObjective())
    _, m_a = step(s1, batch, KEY, FlowObjective())
    _, m_b = step(s1, batch, KEY, FlowObjective())
    assert float(m_a["loss"]) == float(m_b["loss"])
    assert jnp.isfinite(m_a["grad_norm"])


def test_gradient_accumulation_averages_micro_batches():
    from elf_eqx.training.step import _accumulated_grads, _loss_and_grads

    model, batch = tiny_model(), random_batch(batch=4)
    obj = FlowObjective()
    (loss, metrics), grads = jax.jit(lambda m, b: _accumulated_grads(m, b, KEY, obj, None, 2))(model, batch)
    keys = jax.random.split(KEY, 2)
    parts = [
        jax.jit(lambda m, b, k: _loss_and_grads(m, b, k, obj, None))(model, batch.rows(2 * i, 2 * i + 2), keys[i])
        for i in range(2)
    ]
    # the scanned micro-batches against two separate programs: the tiny model forward and back
    fan_in = model.config.mlp_hidden
    assert float(loss) == pytest.approx((float(parts[0][0][0]) + float(parts[1][0][0])) / 2,
                                        rel=reassociation(fan_in, layers=4))
    expected = (np.asarray(parts[0][1].unembed.weight) + np.asarray(parts[1][1].unembed.weight)) / 2
    assert_reassociated(grads.unembed.weight, expected, terms=fan_in, layers=4)
    opt = make_optimizer(model, 1e-3, name="adamw")
    state, _ = make_train_step(opt, grad_accum=2)(TrainState.create(model, opt), batch, KEY, obj)
    assert int(state.step) == 1


def test_no_step_machinery_takes_a_teacher():
    step = make_train_step(make_optimizer(tiny_model(), 1e-3, name="adamw"))
    for fn in (Trainer.build, build_step_program, make_train_step, train_step, step, step.lower):
        assert not any("teacher" in name for name in inspect.signature(fn).parameters), fn
    assert list(inspect.signature(step).parameters) == ["state", "batch", "key", "objective", "encoder"]


def test_the_objective_is_a_traced_argument_of_the_step():
    """A distillation's teacher weights are arguments of the one compiled program (another teacher
    is not another program), and the objective's other fields are compiled in."""
    model, batch = tiny_model(), random_batch()
    opt = make_optimizer(model, 1e-3, name="adamw")
    step = make_train_step(opt, donate=False)
    grid, mid = (0.0, 0.5, 1.0), (0.25, 0.75)
    state = TrainState.create(model, opt)
    losses = [float(step(state, batch, KEY, DistillObjective(tiny_model(seed), grid, mid))[1]["loss"]) for seed in (1, 2)]
    assert losses[0] != losses[1]
    assert len(jax.tree_util.tree_leaves(objective_parts(DistillObjective(model, grid, mid))[0])) == len(
        jax.tree_util.tree_leaves(model))  # every array of the objective is the teacher's
    assert jax.tree_util.tree_leaves(objective_parts(FlowObjective())[0]) == []  # ELF's loss holds none
    # Two teachers lower to the same program text (their weights are arguments, not constants in it);
    # ELF's loss is a program of its own.
    texts = [step.lower(state, batch, KEY, DistillObjective(tiny_model(seed), grid, mid)).as_text() for seed in (1, 2)]
    assert texts[0] == texts[1] != step.lower(state, batch, KEY, FlowObjective()).as_text()
