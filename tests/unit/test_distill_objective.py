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

import elf_eqx.distillation.objective as distillation_objective
import elf_eqx.solvers.euler as euler_solver
from elf_eqx.distillation.objective import DistillObjective, nested_grids, student_target
from elf_eqx.flow import FlowConstants, euler_update
from elf_eqx.solvers import Euler
from elf_eqx.solvers.base import FlowTerm
from elf_eqx.objective import LatentBatch
from elf_eqx.sampler import SamplerSettings

from helpers import random_batch, tiny_model

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

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
    # float32 against float64: z_end − z loses digits and c(t)/(t_end − t) multiplies the loss by up to 3
    # (the third case), on latents of size S
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    landed = euler_update(jnp.asarray(z, jnp.float32), got, vec(t), vec(t_end), EPS)
    np.testing.assert_allclose(np.asarray(landed), z_end, rtol=1e-5, atol=1e-5)


def test_the_student_grid_is_every_other_point_of_the_teachers():
    flow = FlowConstants()
    for grid in ("logit_normal_quantile", "uniform"):
        teacher = SamplerSettings(time_grid=grid, steps=8).sampler(flow).grid(KEY)
        student, mid = nested_grids(teacher)
        own = SamplerSettings(time_grid=grid, steps=4).sampler(flow).grid(KEY)
        np.testing.assert_allclose(student, np.asarray(own), atol=1e-6)  # the same formula at the same points, ~8 ulp of 1
        assert len(mid) == 4 and all(a < m < b for a, m, b in zip(student, mid, student[1:]))


def _objective(teacher, decode_share: float = 0.0) -> DistillObjective:
    teacher_grid = SamplerSettings(time_grid="uniform", steps=4).sampler(FlowConstants()).grid(KEY)
    grid, mid = nested_grids(teacher_grid)
    return DistillObjective(teacher, grid, mid, omega=3.0, decode_share=decode_share)


def test_one_round_brings_the_student_closer_to_two_teacher_steps():
    teacher = tiny_model(seed=1)
    objective = _objective(teacher)
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


def test_the_decode_branch_keeps_its_share():
    batch = random_batch(batch=5, length=8)
    teacher = tiny_model()
    loss, parts = eqx.filter_jit(_objective(teacher, decode_share=0.2))(teacher, batch, KEY)
    # student = teacher: both decode passes are the same arithmetic on the same inputs, so the KL is exactly 0
    assert float(parts["decode_kl"]) == 0.0 and float(parts["distill"]) > 0
    assert float(loss) == pytest.approx(0.8 * float(parts["distill"]) + 0.2 * float(parts["decode_kl"]), rel=1e-6)
    other = tiny_model(seed=5)  # a student that is not its teacher decodes differently
    assert float(eqx.filter_jit(_objective(teacher, decode_share=0.2))(other, batch, KEY)[1]["decode_kl"]) > 0
    assert isinstance(batch, LatentBatch)


def test_the_teacher_steps_are_the_euler_solvers_update():
    """One Euler update (:func:`elf_eqx.flow.euler_update`): the sampler's Euler solver and the
    distillation's teacher steps take the same function, and the solver's step is it exactly."""
    assert distillation_objective.euler_update is euler_update and euler_solver.euler_update is euler_update
    assert not hasattr(distillation_objective, "euler_step")
    k_z, k_x = jax.random.split(KEY)
    z, x_prev = jax.random.normal(k_z, (3, 5, 4)), jax.random.normal(k_x, (3, 5, 4))
    term = FlowTerm(lambda z, x_prev, t: 0.5 * z + x_prev * t, FlowConstants(t_eps=0.05))
    for t, t_next in ((0.2, 0.5), (0.96, 1.0)):
        t, t_next = jnp.float32(t), jnp.float32(t_next)
        z_next, x_hat, _ = Euler().step(term, z, x_prev, t, t_next, None)
        same = euler_update(z, x_hat, jnp.full((3,), t), jnp.full((3,), t_next), 0.05)
        np.testing.assert_array_equal(np.asarray(z_next), np.asarray(same))


def test_the_decode_rows_are_elfs_split():
    """The distillation's decode rows are the training objective's formula (:func:`elf_eqx.objective.decode_rows`)."""
    from elf_eqx.flops import distill_step_flops, elf_forward_flops
    from elf_eqx.objective import FlowObjective, decode_rows

    # (share, rows, decode rows): at least one row each way, none at 0, all at 1, none of a single row
    for share, rows, want in ((0.2, 5, 1), (0.2, 2, 1), (0.01, 8, 1), (0.99, 8, 7), (0.5, 8, 4), (0.0, 8, 0),
                              (1.0, 4, 4), (0.5, 1, 0)):
        assert decode_rows(share, rows) == want
        if rows > 1:
            assert FlowObjective(decoder_prob=share).split_sizes(rows) == (1, want)
    model = tiny_model()
    fwd = elf_forward_flops(model.config, 8)
    n_dec = decode_rows(0.3, 6)
    expected = (6 - n_dec) * 7 * (fwd["body"] + fwd["denoise_head"]) + n_dec * 4 * (fwd["body"] + fwd["decode_head"])
    assert distill_step_flops(model.config, 6, 8, 0.3) == pytest.approx(expected)
