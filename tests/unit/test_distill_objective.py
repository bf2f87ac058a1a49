"""The progressive-distillation target and loss (docs/method.md#distillation): exact on a flow
written out in closed form, and one round on a tiny model brings the student's single step closer
to its teacher's two."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elf_eqx.distillation.objective import DistillObjective, euler_step, nested_grids, student_target
from elf_eqx.flow import FlowConstants
from elf_eqx.objective import LatentBatch
from elf_eqx.sampling.settings import SamplerSettings

from helpers import random_batch, tiny_model

KEY = jax.random.key(4)
MU, C, S, EPS = 0.7, 0.5, 2.0, 0.05


def posterior_mean(z: np.ndarray, t: float) -> np.ndarray:
    """E[x | z_t] for data N(μ, c²) per feature and z_t = t·x + (1 − t)·s·ε."""
    var = t**2 * C**2 + (1 - t) ** 2 * S**2
    return MU + t * C**2 / var * (z - t * MU)


@pytest.mark.parametrize("t, t_mid, t_end", [(0.1, 0.3, 0.6), (0.6, 0.9, 0.97), (0.955, 0.97, 1.0)])
def test_one_student_step_lands_where_two_exact_teacher_steps_land(t, t_mid, t_end):
    z = np.random.default_rng(0).normal(size=(2, 3, 4)) * S
    c = lambda u: max(1 - u, EPS)  # noqa: E731  (the velocity floor of the third case's later times)
    # The teacher's two Euler steps with the exact x-prediction, written out.
    z_mid = z + (t_mid - t) * (posterior_mean(z, t) - z) / c(t)
    z_end = z_mid + (t_end - t_mid) * (posterior_mean(z_mid, t_mid) - z_mid) / c(t_mid)
    # The student's x̂ that lands there in one Euler step from t.
    want = z + c(t) * (z_end - z) / (t_end - t)
    vec = lambda u: jnp.full((2,), u, jnp.float32)  # noqa: E731
    got = student_target(jnp.asarray(z, jnp.float32), jnp.asarray(z_end, jnp.float32), vec(t), vec(t_end), EPS)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    landed = euler_step(jnp.asarray(z, jnp.float32), got, vec(t), vec(t_end), EPS)
    np.testing.assert_allclose(np.asarray(landed), z_end, rtol=1e-5, atol=1e-5)


def test_the_student_grid_is_every_other_point_of_the_teachers():
    flow = FlowConstants()
    for grid in ("logit_normal_quantile", "uniform"):
        teacher = SamplerSettings(time_grid=grid, steps=8).sampler(flow).grid(KEY)
        student, mid = nested_grids(teacher)
        own = SamplerSettings(time_grid=grid, steps=4).sampler(flow).grid(KEY)
        np.testing.assert_allclose(student, np.asarray(own), atol=1e-6)
        assert len(mid) == 4 and all(a < m < b for a, m, b in zip(student, mid, student[1:]))


def _objective(decode_share: float = 0.0) -> DistillObjective:
    teacher_grid = SamplerSettings(time_grid="uniform", steps=4).sampler(FlowConstants()).grid(KEY)
    grid, mid = nested_grids(teacher_grid)
    return DistillObjective(grid, mid, omega=3.0, decode_share=decode_share)


def test_one_round_brings_the_student_closer_to_two_teacher_steps():
    teacher = tiny_model(seed=1)
    objective = _objective().with_teacher(teacher)
    batch = random_batch(batch=8, length=8)
    error = eqx.filter_jit(lambda m, k: objective.distill_loss(m, batch, k)[0])
    keys = [jax.random.key(100 + i) for i in range(4)]
    before = np.mean([float(error(teacher, k)) for k in keys])
    optimizer = optax.adam(3e-3)

    @eqx.filter_jit
    def step(model, state, key):
        loss, grads = eqx.filter_value_and_grad(lambda m: objective(m, batch, key)[0])(model)
        updates, state = optimizer.update(grads, state, model)
        return eqx.apply_updates(model, updates), state

    student, state = teacher, optimizer.init(eqx.filter(teacher, eqx.is_array))
    for i in range(60):
        student, state = step(student, state, jax.random.key(i))
    after = np.mean([float(error(student, k)) for k in keys])
    assert after < 0.75 * before


def test_the_decode_branch_keeps_its_share_and_an_unbound_objective_is_refused():
    batch = random_batch(batch=5, length=8)
    teacher = tiny_model()
    loss, parts = eqx.filter_jit(_objective(decode_share=0.2).with_teacher(teacher))(teacher, batch, KEY)
    assert float(parts["decode_kl"]) == pytest.approx(0.0, abs=1e-6) and float(parts["distill"]) > 0  # student = teacher
    assert float(loss) == pytest.approx(0.8 * float(parts["distill"]) + 0.2 * float(parts["decode_kl"]), rel=1e-5)
    other = tiny_model(seed=5)  # a student that is not its teacher decodes differently
    assert float(eqx.filter_jit(_objective(decode_share=0.2).with_teacher(teacher))(other, batch, KEY)[1]["decode_kl"]) > 0
    with pytest.raises(ValueError, match="with_teacher"):
        _objective()(teacher, batch, KEY)
    assert isinstance(batch, LatentBatch)
