"""The autoregressive baseline: next-token cross-entropy on a causal network, and ancestral
sampling with temperature 1 or nucleus (top-p) filtering (docs/method.md#baselines).

Inputs are the row shifted right behind ``[BOS]`` (id ``V``), so position ``ℓ`` predicts token
``ℓ`` from tokens ``< ℓ``. Conditional rows lead with their condition, which is read but not scored.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from elf_eqx.baselines.token_sampling import TokenCondition, TokenSampler
from elf_eqx.baselines.network import TokenTransformer
from elf_eqx.encoders.latent_encoder import TokenBatch
from elf_eqx.errors import ConfigError
from elf_eqx.objective import masked_mean


def shift_right(ids: Int[Array, "B L"], bos_id: int) -> Int[Array, "B L"]:
    """``[BOS, x₀, …, x_{L−2}]``: the inputs whose outputs predict ``x₀ … x_{L−1}``."""
    return jnp.concatenate([jnp.full((ids.shape[0], 1), bos_id, ids.dtype), ids[:, :-1]], axis=1)


class NextTokenObjective(eqx.Module):
    """Mean next-token cross-entropy over the scored target positions; call it as ``objective(model, batch, key)``."""

    bos_id: int = eqx.field(static=True)

    def __call__(
        self, model: TokenTransformer, batch: TokenBatch, key: PRNGKeyArray, *, dropout: bool = True
    ) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
        """``(loss, {"ce"})``, both the cross-entropy per scored token (``exp`` of it is the perplexity)."""
        use_dropout = dropout and (model.config.attn_dropout > 0 or model.config.proj_dropout > 0)
        logits = model(shift_right(batch.input_ids, self.bos_id), key=key if use_dropout else None)
        ce = masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch.input_ids),
                         batch.loss_mask & ~batch.cond_mask)
        return ce, {"ce": ce}


def check_top_p(top_p: float, flag: str) -> None:
    """A :class:`~elf_eqx.errors.ConfigError` naming ``flag`` unless ``top_p`` is in ``(0, 1]``
    (the AR settings' check and the sampler's own)."""
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"{flag} must be in (0, 1], got {top_p}")


def nucleus_logits(logits: Float[Array, "B V"], top_p: float) -> Float[Array, "B V"]:
    """``logits`` with every token outside the smallest set whose probability reaches ``top_p``
    set to ``−inf`` (the most likely token always stays)."""
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability mass ranked above each token
    kept = jnp.where(before < top_p, ordered, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


class AutoregressiveSampler(TokenSampler):
    """Left to right over ``length`` positions, one network evaluation per position (no key-value
    cache: each evaluation runs the whole row). ``top_p < 1`` samples from the nucleus."""

    bos_id: int = eqx.field(static=True)
    length: int = eqx.field(static=True)
    top_p: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        check_top_p(self.top_p, "AutoregressiveSampler.top_p")

    def nfe(self) -> int:
        """One evaluation per position: ``length``."""
        return self.length

    def fill(
        self, model: TokenTransformer, key: PRNGKeyArray, condition: TokenCondition
    ) -> tuple[Int[Array, "B L"], Int[Array, ""]]:
        """``(ids, length)``: positions filled left to right, condition positions kept."""
        length = condition.ids.shape[1]
        if length != self.length:
            raise ValueError(f"AutoregressiveSampler was built for length {self.length}, got rows of {length}")
        x = jnp.where(condition.mask, condition.ids, 0).astype(jnp.int32)

        def step(x, inputs):
            i, k = inputs
            logits = jax.lax.dynamic_index_in_dim(model(shift_right(x, self.bos_id)), i, axis=1, keepdims=False)
            if self.top_p < 1.0:
                logits = nucleus_logits(logits, self.top_p)
            token = jax.random.categorical(k, logits)
            given = jax.lax.dynamic_index_in_dim(condition.mask, i, axis=1, keepdims=False)
            current = jax.lax.dynamic_index_in_dim(x, i, axis=1, keepdims=False)
            return jax.lax.dynamic_update_index_in_dim(x, jnp.where(given, current, token), i, axis=1), None

        x, _ = jax.lax.scan(step, x, (jnp.arange(length), jax.random.split(key, length)))
        return x, jnp.asarray(length, jnp.int32)
