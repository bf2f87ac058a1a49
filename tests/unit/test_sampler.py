import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elf_eqx.sampler import Condition, Sampler, mask_after_eos

from helpers import TINY_D, tiny_model

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

KEY = jax.random.key(7)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def run(sampler, model, key=KEY, **kwargs):
    return eqx.filter_jit(lambda m, k: sampler(m, k, **kwargs))(model, key)


def test_grids():
    uni = Sampler(num_steps=4, time_grid="uniform").grid(KEY)
    np.testing.assert_allclose(np.asarray(uni), [0, 0.25, 0.5, 0.75, 1.0])
    ln = np.asarray(Sampler(num_steps=16, time_grid="logit_normal").grid(KEY))
    assert ln.shape == (17,) and ln[0] == 0.0 and ln[-1] == 1.0 and np.all(np.diff(ln) >= 0)
    other = np.asarray(Sampler(num_steps=16, time_grid="logit_normal").grid(jax.random.key(8)))
    assert not np.allclose(ln, other)  # a fresh grid per run


def test_sde_with_zero_churn_is_ode(model):
    common = dict(num_steps=6, time_grid="logit_normal", omega=2.0)
    ode = run(Sampler(method="ode", **common), model, batch_size=2, length=8)
    sde0 = run(Sampler(method="sde", gamma=0.0, **common), model, batch_size=2, length=8)
    np.testing.assert_array_equal(np.asarray(ode.latents), np.asarray(sde0.latents))
    sde = run(Sampler(method="sde", gamma=1.5, **common), model, batch_size=2, length=8)
    assert not np.allclose(np.asarray(sde.latents), np.asarray(ode.latents))


def test_same_key_same_samples(model):
    s = Sampler(num_steps=4)
    a, b = run(s, model, batch_size=2, length=8), run(s, model, batch_size=2, length=8)
    np.testing.assert_array_equal(np.asarray(a.latents), np.asarray(b.latents))
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    c = run(s, model, jax.random.key(99), batch_size=2, length=8)
    assert not np.allclose(np.asarray(a.latents), np.asarray(c.latents))


@pytest.mark.parametrize("cfg_weight", [1.0, 2.0])
def test_condition_positions_stay_clean(model, cfg_weight):
    cond_x = jax.random.normal(KEY, (2, 8, TINY_D))
    mask = jnp.zeros((2, 8), bool).at[0, :3].set(True).at[1, :5].set(True)
    cond = Condition(cond_x, mask)
    s = Sampler(num_steps=5, method="sde", gamma=1.0, cfg_weight=cfg_weight)
    out = run(s, model, condition=cond)
    np.testing.assert_array_equal(np.asarray(out.latents)[np.asarray(mask)], np.asarray(cond_x)[np.asarray(mask)])
    # every intermediate state too: integrate over each prefix of the grid
    grid = s.grid(KEY)
    z0 = 2.0 * jax.random.normal(jax.random.key(1), cond_x.shape)
    for n in range(2, 6):
        zn = eqx.filter_jit(s.integrate)(model, z0, grid[:n], cond, KEY)
        np.testing.assert_array_equal(np.asarray(zn)[np.asarray(mask)], np.asarray(cond_x)[np.asarray(mask)])


def test_cfg_changes_targets_only_through_the_condition(model):
    cond = Condition(jax.random.normal(KEY, (2, 8, TINY_D)), jnp.zeros((2, 8), bool).at[:, :2].set(True))
    guided = run(Sampler(num_steps=3, cfg_weight=3.0), model, condition=cond)
    plain = run(Sampler(num_steps=3, cfg_weight=1.0), model, condition=cond)
    assert not np.allclose(np.asarray(guided.latents), np.asarray(plain.latents))
    no_cond = Condition.none(2, 8, TINY_D)
    # without condition tokens the condition-free pass equals the conditional one: CFG is a no-op
    a = run(Sampler(num_steps=3, cfg_weight=3.0), model, condition=no_cond)
    b = run(Sampler(num_steps=3, cfg_weight=1.0), model, condition=no_cond)
    # the guided run's two passes are rows of one batched program, the plain run another program:
    # float32 reassociation through 3 steps of the tiny model, on O(1) latents
    np.testing.assert_allclose(np.asarray(a.latents), np.asarray(b.latents), rtol=1e-5, atol=1e-5)


def test_self_conditioning_carry_matters(model):
    a = run(Sampler(num_steps=4, self_condition=True), model, batch_size=2, length=8)
    b = run(Sampler(num_steps=4, self_condition=False), model, batch_size=2, length=8)
    assert not np.allclose(np.asarray(a.latents), np.asarray(b.latents))


def test_mask_after_eos():
    tokens = jnp.array([[5, 1, 7, 1, 3], [4, 4, 4, 4, 4]])
    out = mask_after_eos(tokens, eos_id=1, pad_id=0)
    np.testing.assert_array_equal(np.asarray(out), [[5, 0, 0, 0, 0], [4, 4, 4, 4, 4]])
    target = jnp.array([[False, False, True, True, True], [True] * 5])
    out = mask_after_eos(tokens, eos_id=1, pad_id=0, target_mask=target)
    np.testing.assert_array_equal(np.asarray(out), [[5, 1, 7, 0, 0], [4, 4, 4, 4, 4]])


def test_eos_masking_in_sampler(model):
    out = run(Sampler(num_steps=2), model, batch_size=2, length=8)
    eos = int(out.tokens[0, 3])
    masked = run(Sampler(num_steps=2), model, batch_size=2, length=8, eos_id=eos, pad_id=39)
    np.testing.assert_array_equal(np.asarray(masked.tokens), np.asarray(mask_after_eos(out.tokens, eos, 39)))


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="batch_size and length"):
        Sampler(num_steps=2)(model, KEY)
    with pytest.raises(ValueError, match="encoder_dim is 16"):
        Sampler(num_steps=2)(model, KEY, z0=jnp.zeros((1, 4, 8)))
    with pytest.raises(ValueError, match="euler"):
        Sampler(method="euler")
    with pytest.raises(ValueError, match="num_steps"):
        Sampler(num_steps=0)
