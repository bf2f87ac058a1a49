"""The samplers beyond the reference: consistent churn, Heun and DPM2M, grids, NFE, the toy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elf_eqx.flow import clipped_log_time
from elf_eqx.sampler import Sampler
from elf_eqx.sampler import SamplerSettings
from toy_sampler import ZipfToy, sample_tokens, token_figures

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

KEY = jax.random.key(3)


def test_consistent_churn_adds_the_noise_of_t_b():
    s, t, t_next, gamma = 2.0, 0.6, 0.7, 1.5
    sampler = Sampler(method="sde", sde_noise="consistent", noise_scale=s)
    x = jax.random.normal(KEY, (1, 64, 8))
    eps = jax.random.normal(jax.random.key(1), (256, 64, 8))
    z = t * x + (1 - t) * s * eps  # a latent with exactly the noise level of t
    z_b, t_b = sampler.churn(z, jnp.float32(t), jnp.float32(t_next), jnp.float32(gamma), jax.random.key(2))
    alpha = 1 - gamma * (t_next - t)
    np.testing.assert_allclose(float(t_b), alpha * t, rtol=1e-6)  # float32 arithmetic against float64: ~8 ulp
    # 131,072 noise draws: the std's relative standard error is 0.2%, so 1% is about five of them
    added = np.std(np.asarray(z_b - alpha * z))
    np.testing.assert_allclose(added, s * np.sqrt((1 - alpha) * (1 + alpha - 2 * alpha * t)), rtol=0.01)
    np.testing.assert_allclose(np.std(np.asarray(z_b - t_b * x)), (1 - float(t_b)) * s, rtol=0.01)  # marginal kept
    ref_b, _ = Sampler(method="sde", noise_scale=s).churn(z, jnp.float32(t), jnp.float32(t_next),
                                                          jnp.float32(gamma), jax.random.key(2))
    np.testing.assert_allclose(np.std(np.asarray(ref_b - alpha * z)), (1 - alpha) * s, rtol=0.01)


def gaussian_error(solver: str, steps: int) -> float:
    """|z₁ − exact| for data ``N(μ, c²)``: the flow maps ``z₀`` to ``μ + (c/s)·z₀`` exactly."""
    mu, c, s = 0.7, 0.5, 2.0

    def predict(z, x_prev, t):
        var = t**2 * c**2 + (1 - t) ** 2 * s**2
        return mu + t * c**2 / var * (z - t * mu)

    sampler = Sampler(num_steps=steps, method="ode", solver=solver, time_grid="uniform", noise_scale=s)
    z0 = s * jax.random.normal(KEY, (4, 8, 2))
    z1 = sampler.solve(predict, z0, sampler.grid(KEY), KEY)
    return float(jnp.max(jnp.abs(z1 - (mu + c / s * z0))))


@pytest.mark.parametrize("solver", ["heun", "dpm2m"])
def test_higher_order_beats_euler_at_equal_steps(solver):
    # the last interval is Euler for every solver, so its error is shared; 8 and 16 uniform steps keep it small
    for steps in (8, 16):
        assert gaussian_error(solver, steps) < 0.6 * gaussian_error("euler", steps)
    assert gaussian_error(solver, 16) < gaussian_error(solver, 4)


def test_dpm2m_first_order_part_is_euler():
    # one step before the last: DPM2M's only interior step has no previous x̂, so it is Euler exactly
    toy = ZipfToy.make(KEY, vocab=8, dim=4)
    z0 = 2.0 * jax.random.normal(KEY, (3, 2, 4))
    grid = jnp.array([0.0, 0.4, 1.0])
    a = Sampler(num_steps=2, method="ode", solver="dpm2m").solve(toy.predict, z0, grid, KEY)
    b = Sampler(num_steps=2, method="ode", solver="euler").solve(toy.predict, z0, grid, KEY)
    # the same Euler step by two code paths (DPM2M's in log time): a few float32 roundings of O(1) latents
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_clipped_log_time():
    t = jnp.array([0.0, 0.5, 0.95, 1.0])
    np.testing.assert_allclose(np.asarray(clipped_log_time(t, 0.05)),  # float32 logs against float64
                               [0.0, np.log(2), -np.log(0.05), -np.log(0.05) + 1.0], rtol=1e-5)


def test_grids_monotone_deterministic_shared():
    for grid in ("logit_normal_quantile", "uniform", "power", "logit_normal"):
        g = np.asarray(Sampler(num_steps=8, time_grid=grid).grid(KEY))
        assert g.shape == (9,) and g[0] == 0 and g[-1] == 1 and np.all(np.diff(g) > 0), grid
    q = Sampler(num_steps=4, time_grid="logit_normal_quantile", p_mean=0.0, p_std=1.0).grid(KEY)
    # float32 ndtri and sigmoid against the quartile 0.6744898 (itself 7 digits)
    np.testing.assert_allclose(np.asarray(q), [0, 1 / (1 + np.exp(0.6744898)), 0.5, 1 / (1 + np.exp(-0.6744898)), 1],
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(Sampler(num_steps=2, time_grid="power", grid_exponent=3.0).grid(KEY)),
                               [0, 0.125, 1])
    shared = Sampler(num_steps=8, grid_seed=5)
    np.testing.assert_array_equal(np.asarray(shared.grid(KEY)), np.asarray(shared.grid(jax.random.key(9))))
    fresh = Sampler(num_steps=8)
    assert not np.allclose(np.asarray(fresh.grid(KEY)), np.asarray(fresh.grid(jax.random.key(9))))


def test_nfe_counts():
    assert Sampler(num_steps=8, solver="euler").nfe() == 8
    assert Sampler(num_steps=8, solver="dpm2m", method="ode").nfe() == 8
    assert Sampler(num_steps=8, solver="heun").nfe() == 15
    assert Sampler(num_steps=8, solver="heun", cfg_weight=2.0).nfe() == 30
    assert SamplerSettings(steps=4, solver="heun").nfe() == 7

    calls = []

    def predict(z, x_prev, t):
        calls.append(t)
        return z

    for solver in ("euler", "heun", "dpm2m"):
        calls.clear()
        sampler = Sampler(num_steps=5, method="ode", solver=solver, time_grid="uniform")
        sampler.solve(predict, jnp.zeros((1, 2, 3)), sampler.grid(KEY), KEY)
        # scan traces its body once: count the traced passes of the body plus the unrolled ones
        assert len(calls) == {"euler": 1, "heun": 3, "dpm2m": 2}[solver]


def test_settings_validate_new_choices():
    # under the test suite's beartype hook a bad Literal fails before __post_init__ can name the flag
    with pytest.raises((ValueError, TypeError), match="rk4"):
        SamplerSettings(solver="rk4")
    with pytest.raises((ValueError, TypeError), match="more"):
        SamplerSettings(sde_noise="more")
    with pytest.raises(ValueError, match="--grid-exponent"):
        SamplerSettings(grid_exponent=0.0)
    with pytest.raises(ValueError, match="Sampler.solver"):
        Sampler(solver="rk4")
    s = SamplerSettings.from_dict({"solver": "dpm2m", "grid_seed": 3, "grid_exponent": 3})
    assert s.sampler().grid_seed == 3 and s.tag() == "sde32-w3-dpm2m"


def test_toy_consistent_sde_keeps_entropy_the_reference_loses():
    toy = ZipfToy.make(jax.random.key(0), vocab=16, dim=8)
    probs = np.asarray(toy.probs)
    true_h = float(-(probs * np.log(probs)).sum())

    def entropy(noise, steps):
        sampler = Sampler(num_steps=steps, method="sde", sde_noise=noise, time_grid="logit_normal_quantile")
        return token_figures(np.asarray(sample_tokens(toy, sampler, KEY, 1, 2048)), probs)[0]

    consistent, reference = entropy("consistent", 16), entropy("reference", 16)
    assert consistent > reference + 0.1
    assert abs(consistent - true_h) < abs(reference - true_h)
