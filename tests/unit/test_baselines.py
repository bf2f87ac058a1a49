"""The baselines: MDLM's loss against its ELBO, its ancestral sampler and cache, the AR model's
causality, loss and samplers (docs/method.md#baselines)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elf_eqx.baselines.autoregressive import AutoregressiveSampler, NextTokenObjective, nucleus_logits, shift_right
from elf_eqx.baselines.token_sampling import TokenCondition
from elf_eqx.baselines.mdlm import MaskedDiffusionObjective, MaskedDiffusionSampler
from elf_eqx.baselines.network import BidirectionalLM, CausalLM
from elf_eqx.config import preset
from elf_eqx.encoders.latent_encoder import TokenBatch
from elf_eqx.families import build_network, make_sampler, network_template
from elf_eqx.families.ar import ARSettings
from elf_eqx.families.mdlm import MDLMSettings
from elf_eqx.flow import FLOW
from tolerances import reassociation

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

V = 5


def network(cls, seed: int = 0, vocab: int = V):
    return cls(preset("ELF-T", vocab_size=vocab), key=jax.random.key(seed))


def token_batch(ids, cond_length: int = 0) -> TokenBatch:
    ids = jnp.asarray(ids, jnp.int32)
    cond = jnp.broadcast_to(jnp.arange(ids.shape[1]) < cond_length, ids.shape)
    return TokenBatch(ids, jnp.ones(ids.shape, bool), cond, ~cond)


def test_mdlm_loss_is_the_continuous_time_elbo_on_a_two_token_case():
    """For L = 2 the NELBO ∫₀¹ (1/t) E[Σ_masked −log p(x₀|x_t)] dt is, in closed form,
    (a₁ + a₂)/2 + (b₁ + b₂)/2, with aᵢ the NLL of token i when only it is masked and bᵢ when both
    are; the loss averaged over draws of t and masks must match it."""
    model = network(BidirectionalLM, seed=3)
    objective = MaskedDiffusionObjective(mask_id=V, t_min=1e-4)
    x0 = jnp.asarray([[1, 3]], jnp.int32)

    def nll(masked):
        x_t = jnp.where(jnp.asarray([masked]), V, x0)
        return optax.softmax_cross_entropy_with_integer_labels(model(x_t), x0)[0]

    a = nll([True, False])[0] + nll([False, True])[1]
    b = jnp.sum(nll([True, True]))
    exact = float((a + b) / 2)

    rows = 20000  # one batch of copies: the antithetic times stratify [t_min, 1]
    loss, metrics = objective(model, token_batch(jnp.repeat(x0, rows, axis=0)), jax.random.key(0))
    # per token → per sequence; 20,000 antithetic draws of t put the Monte-Carlo error well under 2%
    assert float(loss) * 2 == pytest.approx(exact, rel=0.02)
    assert float(metrics["mask_frac"]) == pytest.approx(0.5, abs=0.02)


def test_mdlm_nelbo_by_hand_and_condition_tokens_never_masked_or_scored():
    model = network(BidirectionalLM)
    objective = MaskedDiffusionObjective(mask_id=V)
    ids = jnp.asarray([[1, 2, 3, 4], [4, 3, 2, 1]], jnp.int32)
    t = jnp.asarray([0.5, 0.25])
    masked = jnp.asarray([[True, False, True, False], [False, False, False, True]])
    scored = jnp.ones(ids.shape, bool)
    loss, ce = objective.nelbo(model, ids, t, masked, scored)
    per_token = optax.softmax_cross_entropy_with_integer_labels(model(jnp.where(masked, V, ids)), ids)
    expected = (per_token[0, 0] / 0.5 + per_token[0, 2] / 0.5 + per_token[1, 3] / 0.25) / 8
    # the same per-token losses, weighted and summed in another order: a few float32 roundings
    assert float(loss) == pytest.approx(float(expected), rel=reassociation(8, layers=2))
    assert float(ce) == pytest.approx(float((per_token[0, 0] + per_token[0, 2] + per_token[1, 3]) / 3),
                                      rel=reassociation(8, layers=2))

    # Uniform logits: each masked token costs log V and the 1/t weight undoes P(masked) = t, so the
    # expected loss is log V per scored token, with or without (unscored) condition positions.
    batch = token_batch(jnp.tile(jnp.arange(1, 5), (64, 1)), cond_length=2)
    uniform_model = eqx.tree_at(lambda m: (m.head.weight, m.head.bias), model,
                                (jnp.zeros_like(model.head.weight), jnp.zeros((V,))))
    uniform, _ = objective(uniform_model, batch, jax.random.key(1))
    half, metrics = objective(uniform_model, token_batch(batch.input_ids, cond_length=0), jax.random.key(1))
    assert 0.0 < float(metrics["mask_frac"]) < 1.0
    # in expectation only: 64 rows of a few masked tokens each
    assert float(uniform) == pytest.approx(np.log(V), rel=0.1) and float(half) == pytest.approx(np.log(V), rel=0.1)


def test_mdlm_sampler_unmasks_everything_keeps_conditions_and_its_cache_changes_nothing():
    model = network(BidirectionalLM, vocab=7)
    ids = jnp.tile(jnp.arange(1, 9) % 7, (3, 1)).astype(jnp.int32)
    cond = TokenCondition(ids, jnp.arange(8)[None, :].repeat(3, 0) < jnp.asarray([[2], [0], [5]]))
    key = jax.random.key(4)
    cached = MaskedDiffusionSampler(num_steps=32, mask_id=7)(model, key, condition=cond)
    plain = MaskedDiffusionSampler(num_steps=32, mask_id=7, cache=False)(model, key, condition=cond)
    np.testing.assert_array_equal(np.asarray(cached.tokens), np.asarray(plain.tokens))
    assert bool(jnp.all(cached.tokens != 7)) and bool(jnp.all(jnp.where(cond.mask, cached.tokens == ids, True)))
    assert int(plain.nfe[0]) == 32 and 1 <= int(cached.nfe[0]) < 32  # 8 positions, 32 steps: many empty steps
    assert MaskedDiffusionSampler(num_steps=32, mask_id=7).nfe() == 32


def test_mdlm_sampler_draws_from_the_model_marginals():
    """With an input-independent network each position ends as a draw from its softmax."""

    probs = jnp.asarray([0.6, 0.3, 0.1])
    model = network(BidirectionalLM, vocab=3)
    model = eqx.tree_at(lambda m: (m.head.weight, m.head.bias), model,
                        (jnp.zeros_like(model.head.weight), jnp.log(probs)))
    out = MaskedDiffusionSampler(num_steps=4, mask_id=3)(model, jax.random.key(0), condition=TokenCondition.none(4000, 3))
    freq = np.bincount(np.asarray(out.tokens).ravel(), minlength=3) / out.tokens.size
    np.testing.assert_allclose(freq, probs, atol=0.02)  # 12,000 draws: standard errors under 0.005


def test_causal_network_does_not_look_ahead_and_bidirectional_does():
    ids = jnp.asarray([[1, 2, 3, 4, 0, 1]], jnp.int32)
    changed = ids.at[0, 4].set(3)
    for cls, looks_ahead in ((CausalLM, False), (BidirectionalLM, True)):
        model = network(cls)
        a, b = model(ids), model(changed)
        assert bool(jnp.any(jnp.abs(a[:, :4] - b[:, :4]) > 1e-6)) == looks_ahead


def test_next_token_objective_scores_targets_only():
    model = network(CausalLM)
    batch = token_batch([[1, 2, 3, 4], [2, 2, 4, 1]], cond_length=1)
    loss, metrics = NextTokenObjective(bos_id=V)(model, batch, jax.random.key(0))
    inputs = jnp.asarray([[V, 1, 2, 3], [V, 2, 2, 4]])
    np.testing.assert_array_equal(np.asarray(shift_right(batch.input_ids, V)), np.asarray(inputs))
    ce = optax.softmax_cross_entropy_with_integer_labels(model(inputs), batch.input_ids)
    assert float(loss) == pytest.approx(float(jnp.mean(ce[:, 1:])), rel=reassociation(ce.size))  # a mean reordered
    assert float(metrics["ce"]) == float(loss)


def test_nucleus_keeps_the_smallest_set_reaching_p():
    logits = jnp.log(jnp.asarray([[0.2, 0.5, 0.3]]))
    kept = lambda p: np.isfinite(np.asarray(nucleus_logits(logits, p)))[0].tolist()  # noqa: E731
    assert kept(0.5) == [False, True, False]
    assert kept(0.6) == [False, True, True]
    assert kept(0.95) == [True, True, True]


def test_ar_sampler_keeps_conditions_and_greedy_matches_step_by_step_argmax():
    model = network(CausalLM)
    cond = TokenCondition(jnp.asarray([[3, 1, 0, 0, 0]] * 2, jnp.int32), jnp.asarray([[True, True, False, False, False],
                                                                                     [False] * 5]))
    sampler = AutoregressiveSampler(bos_id=V, length=5, top_p=1e-6)  # the nucleus of one token: greedy
    out = sampler(model, jax.random.key(0), condition=cond)
    x = np.where(np.asarray(cond.mask), np.asarray(cond.ids), 0)
    for i in range(5):
        best = np.asarray(jnp.argmax(model(shift_right(jnp.asarray(x), V))[:, i], -1))
        x[:, i] = np.where(np.asarray(cond.mask)[:, i], x[:, i], best)
    np.testing.assert_array_equal(np.asarray(out.tokens), x)
    assert sampler.nfe() == 5 and out.nfe.tolist() == [5, 5]
    with pytest.raises(ValueError, match="built for length 5, got rows of 4"):
        sampler(model, jax.random.key(0), condition=TokenCondition.none(1, 4))


def test_families_build_networks_samplers_and_templates():
    cfg = preset("ELF-T", vocab_size=V)
    for family, cls in (("mdlm", BidirectionalLM), ("ar", CausalLM)):
        net = build_network(family, cfg, jax.random.key(0))
        assert type(net) is cls and net.extra_id == V and net.embed.shape == (V + 1, 64)
        assert jax.tree_util.tree_structure(network_template(family, cfg)) == jax.tree_util.tree_structure(net)
    assert make_sampler("mdlm", MDLMSettings(steps=12), FLOW, vocab_size=V, length=8).nfe() == 12
    assert make_sampler("ar", ARSettings(top_p=0.9), FLOW, vocab_size=V, length=8).top_p == 0.9
    with pytest.raises(ValueError, match="--objective 'gpt' is not one of"):
        build_network("gpt", cfg, jax.random.key(0))
    with pytest.raises(ValueError, match="--top-p must be in"):
        ARSettings(top_p=0.0)
