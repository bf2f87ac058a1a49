"""What the baselines' samplers take and give: condition tokens, sampled ids."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int


class TokenCondition(eqx.Module):
    """Condition ids and where they sit (conditional tasks); condition positions lead each row and
    are never resampled. Ids outside ``mask`` are ignored."""

    ids: Int[Array, "B L"]
    mask: Bool[Array, "B L"]

    @staticmethod
    def none(batch: int, length: int) -> "TokenCondition":
        """No condition tokens (unconditional generation)."""
        return TokenCondition(jnp.zeros((batch, length), jnp.int32), jnp.zeros((batch, length), bool))


class TokenSampleOutput(eqx.Module):
    """Sampled ids (after EOS masking when an EOS id is given) and the network evaluations each
    row's batch used (MDLM skips evaluations when a step unmasked nothing)."""

    tokens: Int[Array, "B L"]
    nfe: Int[Array, " B"]
