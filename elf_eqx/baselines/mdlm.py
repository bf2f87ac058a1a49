"""Masked diffusion (MDLM; Sahoo et al., 2024): the continuous-time ELBO with the log-linear
schedule, and ancestral sampling with MDLM's cache of unchanged steps (docs/method.md#baselines).

Forward process: each target token is independently replaced by ``[MASK]`` with probability
``t`` (``α_t = 1 − t`` keeps it). The negative ELBO per sequence is

    ∫₀¹ (−α'_t / (1 − α_t)) · E_q [ Σ_{ℓ masked} −log p_θ(x₀ˡ | x_t) ] dt  =  E_{t~U(0,1)} [ (1/t) Σ_{ℓ masked} −log p_θ(x₀ˡ | x_t) ],

with the SUBS parameterisation (the head never predicts ``[MASK]``; unmasked tokens are copied,
so they cost nothing). We divide by the number of scored tokens: the loss is the NELBO per
token, and ``exp(loss)`` bounds the perplexity.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from elf_eqx.baselines.token_sampling import TokenCondition, TokenSampler
from elf_eqx.baselines.network import TokenTransformer
from elf_eqx.encoders.latent_encoder import TokenBatch
from elf_eqx.objective import masked_mean
from elf_eqx.sampling.settings_base import check_steps


class MaskedDiffusionObjective(eqx.Module):
    """The MDLM loss; call it as ``objective(model, batch, key)`` like ELF's.

    ``t_min`` keeps the ``1/t`` weight finite (MDLM's 1e-3); ``antithetic`` draws the batch's
    times as one uniform shifted by ``i/B`` (MDLM's low-discrepancy sampler, lower variance).
    Condition positions are never masked and never scored.
    """

    mask_id: int = eqx.field(static=True)
    t_min: float = 1e-3
    antithetic: bool = eqx.field(static=True, default=True)

    def sample_time(self, key: PRNGKeyArray, batch: int) -> Float[Array, " B"]:
        """Training times in ``[t_min, 1]``."""
        u = jax.random.uniform(key, (batch,))
        if self.antithetic:
            u = jnp.mod(u[0] + jnp.arange(batch) / batch, 1.0)
        return self.t_min + (1.0 - self.t_min) * u

    def nelbo(
        self,
        model: TokenTransformer,
        ids: Int[Array, "B L"],
        t: Float[Array, " B"],
        masked: Bool[Array, "B L"],
        scored: Bool[Array, "B L"],
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """``(Σ_{scored ∩ masked} −log p_θ(x₀|x_t)/t  /  #scored, mean −log p_θ over scored ∩ masked)``
        for given times and masks: the integrand of the ELBO at one draw."""
        x_t = jnp.where(masked, self.mask_id, ids)
        ce = optax.softmax_cross_entropy_with_integer_labels(model(x_t, key=key), ids)
        hit = masked & scored
        weighted = jnp.where(hit, ce / t[:, None], 0.0)
        loss = jnp.sum(weighted) / jnp.maximum(jnp.sum(scored.astype(jnp.float32)), 1.0)
        return loss, masked_mean(ce, hit)

    def __call__(
        self, model: TokenTransformer, batch: TokenBatch, key: PRNGKeyArray, *, dropout: bool = True
    ) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
        """``(loss, {"ce", "mask_frac"})``: the NELBO per scored token at one draw of ``t`` and masks,
        the unweighted cross-entropy on masked tokens, and the share of target tokens masked."""
        k_t, k_mask, k_drop = jax.random.split(key, 3)
        ids = batch.input_ids
        target = ~batch.cond_mask
        t = self.sample_time(k_t, ids.shape[0])
        masked = jax.random.bernoulli(k_mask, t[:, None], ids.shape) & target
        use_dropout = dropout and (model.config.attn_dropout > 0 or model.config.proj_dropout > 0)
        loss, ce = self.nelbo(model, ids, t, masked, batch.loss_mask & target, k_drop if use_dropout else None)
        return loss, {"ce": ce, "mask_frac": masked_mean(masked.astype(jnp.float32), target)}


class MaskedDiffusionSampler(TokenSampler):
    """Ancestral sampling over the uniform grid ``t_i = 1 − i/n``: in each step every masked
    position draws a token from ``p_θ(·|x_t)`` and keeps it with probability ``(t − s)/t``
    (``1/(n − i)``; the last step unmasks everything). With ``cache`` a step that unmasked nothing
    leaves the input unchanged, so the next step reuses the last logits instead of calling the
    (time-free) network: same samples, fewer evaluations."""

    num_steps: int = eqx.field(static=True)
    mask_id: int = eqx.field(static=True)
    cache: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        check_steps(self.num_steps, "MaskedDiffusionSampler.num_steps")

    def nfe(self) -> int:
        """Network evaluations at most (one per step; the cache may skip some, see the output's ``nfe``)."""
        return self.num_steps

    def fill(
        self, model: TokenTransformer, key: PRNGKeyArray, condition: TokenCondition
    ) -> tuple[Int[Array, "B L"], Int[Array, ""]]:
        """``(ids, evaluations made)`` after the ``num_steps`` ancestral steps."""
        n = self.num_steps
        x = jnp.where(condition.mask, condition.ids, self.mask_id).astype(jnp.int32)
        logits0 = jnp.zeros((*x.shape, model.config.vocab_size), jnp.float32)

        def step(carry, inputs):
            x, logits, changed, calls = carry
            i, k = inputs
            if self.cache:
                logits = jax.lax.cond(changed, lambda: model(x), lambda: logits)
                calls = calls + changed.astype(jnp.int32)
            else:
                logits, calls = model(x), calls + 1
            k_tok, k_keep = jax.random.split(k)
            proposal = jax.random.categorical(k_tok, logits)
            keep = jax.random.uniform(k_keep, x.shape) * (n - i) < 1.0  # probability 1/(n − i)
            unmask = (x == self.mask_id) & keep
            return (jnp.where(unmask, proposal, x), logits, jnp.any(unmask), calls), None

        carry = (x, logits0, jnp.array(True), jnp.zeros((), jnp.int32))
        (x, _, _, calls), _ = jax.lax.scan(step, carry, (jnp.arange(n), jax.random.split(key, n)))
        return x, calls
