import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elf_eqx.config import preset
from elf_eqx.flow import interpolate, keep_condition, sample_sc_cfg_scale, sample_time, velocity
from elf_eqx.objective import FlowObjective, LatentBatch, masked_mean

from helpers import random_batch, tiny_model
from tolerances import assert_reassociated, reassociation

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

HAND = reassociation(preset("ELF-T").mlp_hidden, layers=2)  # one jitted loss against passes + NumPy

KEY = jax.random.key(3)


def test_time_distributions():
    # 20,000 draws: standard errors near 0.002, so 0.01 is about five of them
    t = np.asarray(sample_time(KEY, 20000, "logit_normal", -1.5, 0.8))
    assert 0 < t.min() and t.max() < 1
    np.testing.assert_allclose(np.median(t), 1 / (1 + np.exp(1.5)), atol=0.01)
    u = np.asarray(sample_time(KEY, 20000, "uniform"))
    np.testing.assert_allclose(u.mean(), 0.5, atol=0.01)
    with pytest.raises(ValueError, match="cosine"):
        sample_time(KEY, 4, "cosine")


def test_sc_cfg_scale_is_log_uniform_in_one_plus_omega():
    w = np.asarray(sample_sc_cfg_scale(KEY, 20000, 0.5, 5.0))
    assert w.min() >= 0.5 - 1e-6 and w.max() <= 5.0 + 1e-5
    log1p = np.log1p(w)
    np.testing.assert_allclose(log1p.mean(), (np.log(1.5) + np.log(6.0)) / 2, atol=0.01)


def test_interpolation_and_velocity_clamp():
    x, eps = jnp.ones((1, 2, 3)), jnp.full((1, 2, 3), 2.0)
    z = interpolate(x, eps, jnp.array([0.25]), 2.0)
    np.testing.assert_array_equal(np.asarray(z), 0.25 * 1 + 0.75 * 2 * 2)  # exact binary fractions
    v = velocity(jnp.ones((1, 2, 3)), jnp.zeros((1, 2, 3)), jnp.array([0.99]), 0.05)
    assert_reassociated(v, np.full(v.shape, 1 / 0.05))
    cond = jnp.array([[True, False]])
    kept = keep_condition(jnp.zeros((1, 2, 3)), x, cond)
    np.testing.assert_array_equal(np.asarray(kept[0, :, 0]), [1.0, 0.0])


def test_masked_mean():
    v = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    assert float(masked_mean(v, jnp.array([[True, False], [False, True]]))) == 2.5
    assert float(masked_mean(v, jnp.zeros((2, 2), bool))) == 0.0


def denoise_draws(batch):
    """The t, ω and z_t that ``FlowObjective.denoise_loss`` draws from ``KEY`` (default settings)."""
    k_t, k_eps, k_omega, _ = jax.random.split(KEY, 4)
    b = batch.x.shape[0]
    t, omega = sample_time(k_t, b, "logit_normal", -1.5, 0.8), sample_sc_cfg_scale(k_omega, b)
    return t, omega, interpolate(batch.x, jax.random.normal(k_eps, batch.x.shape), t, 2.0)


def test_denoise_loss_matches_hand_computation_without_self_conditioning():
    model, batch = tiny_model(), random_batch()
    obj = FlowObjective(self_cond_prob=0.0)
    loss = eqx.filter_jit(obj.denoise_loss)(model, batch, KEY)
    t, omega, z = denoise_draws(batch)
    x_pred = eqx.filter_jit(model)(jnp.concatenate([z, jnp.zeros_like(z)], -1), t, omega)
    denom = np.maximum(1 - np.asarray(t), 0.05)[:, None, None]
    expected = np.mean(((np.asarray(x_pred) - np.asarray(batch.x)) / denom) ** 2)
    assert float(loss) == pytest.approx(expected, rel=HAND)


def test_sc_cfg_target_with_full_self_conditioning():
    model, batch = tiny_model(), random_batch()
    obj = FlowObjective(self_cond_prob=1.0)
    loss = eqx.filter_jit(obj.denoise_loss)(model, batch, KEY)
    t, omega, z = denoise_draws(batch)
    jm = eqx.filter_jit(model)
    x_u = jm(jnp.concatenate([z, jnp.zeros_like(z)], -1), t, omega)
    x_c = jm(jnp.concatenate([z, x_u], -1), t, omega)
    v = lambda xp: velocity(xp, z, t, 0.05)
    target = v(batch.x) + (1 - 1 / omega)[:, None, None] * (v(x_c) - v(x_u))
    expected = np.mean((np.asarray(v(x_c)) - np.asarray(target)) ** 2)
    assert float(loss) == pytest.approx(expected, rel=HAND)


def test_condition_positions_never_count_and_label_drop_zeroes_them():
    model, base = tiny_model(), random_batch()
    cond = jnp.zeros(base.tokens.shape, bool).at[:, :3].set(True)
    batch = LatentBatch(base.x, base.tokens, base.loss_mask, cond, jnp.zeros(4, bool))
    only_cond = eqx.tree_at(lambda b: b.loss_mask, batch, cond)
    obj = FlowObjective()
    assert float(eqx.filter_jit(obj.denoise_loss)(model, only_cond, KEY)) == 0.0
    assert float(eqx.filter_jit(obj.decode_loss)(model, only_cond, KEY)) == 0.0

    other_x = batch.x.at[:, :3].add(1.0)
    changed = eqx.tree_at(lambda b: b.x, batch, other_x)
    dropped = eqx.tree_at(lambda b: b.drop_cond, batch, jnp.ones(4, bool))
    dropped_changed = eqx.tree_at(lambda b: b.drop_cond, changed, jnp.ones(4, bool))
    loss = eqx.filter_jit(lambda b: obj(model, b, KEY)[0])
    assert float(loss(batch)) != float(loss(changed))
    assert float(loss(dropped)) == float(loss(dropped_changed))  # the changed values are zeroed first: same inputs


def test_split_sizes_and_errors():
    assert FlowObjective().split_sizes(10) == (1, 2)
    assert FlowObjective(branch_groups=2).split_sizes(10) == (2, 1)
    assert FlowObjective(decoder_prob=0.0).split_sizes(3) == (1, 0)
    with pytest.raises(ValueError, match="branch_groups=2"):
        FlowObjective(branch_groups=2).split_sizes(3)
    with pytest.raises(ValueError, match="at least 2 samples per group"):
        FlowObjective().split_sizes(1)
    with pytest.raises(ValueError, match="branch"):
        FlowObjective(branch="per_device")


def test_split_loss_is_weighted_sum_of_branches():
    model, batch = tiny_model(), random_batch(batch=5)
    loss, m = eqx.filter_jit(FlowObjective())(model, batch, KEY)
    assert float(loss) == pytest.approx(0.2 * float(m["ce"]) + 0.8 * float(m["l2"]), rel=reassociation(2))
    assert float(m["decode_frac"]) == pytest.approx(0.2)
    only_denoise, m0 = eqx.filter_jit(FlowObjective(decoder_prob=0.0))(model, batch, KEY)
    assert float(m0["ce"]) == 0.0 and float(only_denoise) == float(m0["l2"])


def test_per_step_branch_frequency():
    model, batch = tiny_model(), random_batch(batch=2, length=4)
    obj = FlowObjective(branch="per_step")
    run = jax.jit(lambda k: obj(model, batch, k))
    fracs = [float(run(jax.random.key(i))[1]["decode_frac"]) for i in range(60)]
    assert set(fracs) <= {0.0, 1.0} and 3 <= sum(fracs) <= 24  # Bernoulli(0.2) over 60 draws
    loss, m = run(jax.random.key(0))
    assert float(loss) == float(m["ce"] if m["decode_frac"] else m["l2"])


def test_gradients_are_finite():
    batch = random_batch()
    grads = eqx.filter_jit(jax.grad(lambda m: FlowObjective()(m, batch, KEY)[0]))(tiny_model())
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.abs(grads.unembed.weight).sum()) > 0 and float(jnp.abs(grads.final_linear.weight).sum()) > 0


def test_self_conditioning_split_matches_the_coin_at_its_ends_and_skips_the_first_pass_elsewhere():
    """``self_cond_draw="split"``: all or none self-conditioned gives the per-sample numbers exactly;
    at q = 0.5 the no-gradient first pass sees half the rows (the FLOP count says so too)."""
    from elf_eqx.config import preset
    from elf_eqx.families import train_step_flops

    model, batch = tiny_model(), random_batch(batch=6)
    for q in (0.0, 1.0):
        coin = eqx.filter_jit(FlowObjective(self_cond_prob=q).denoise_loss)(model, batch, KEY)
        split = eqx.filter_jit(FlowObjective(self_cond_prob=q, self_cond_draw="split").denoise_loss)(model, batch, KEY)
        assert float(coin) == float(split)
    def compiled_flops(draw: str) -> float:
        loss = lambda m: FlowObjective(self_cond_draw=draw).denoise_loss(m, batch, KEY)  # noqa: E731
        return jax.jit(loss).lower(model).compile().cost_analysis()["flops"]

    coin, half = compiled_flops("per_sample"), compiled_flops("split")
    assert 0.7 < half / coin < 0.95  # the first of the four forward-pass equivalents on half the rows
    cfg = preset("ELF-T", encoder_dim=16, vocab_size=40)
    full, split = (train_step_flops("elf", cfg, 10, 8, objective=FlowObjective(self_cond_draw=d))
                   for d in ("per_sample", "split"))
    assert split < full
