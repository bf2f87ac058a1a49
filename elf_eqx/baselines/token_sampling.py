"""What the baselines' samplers share: the condition tokens they take, the ids they give, and the
frame around each one's loop (condition positions in, EOS masking out)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, PRNGKeyArray

from elf_eqx.sampler import mask_after_eos


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


class TokenSampler(eqx.Module):
    """A baseline's sampler, called like ELF's: ``sampler(model, key, condition=…, eos_id=…, pad_id=…)``.
    Subclasses implement :meth:`fill` (their loop) and :meth:`nfe`."""

    def nfe(self) -> int:
        """Network evaluations per sample (at most, for samplers that may skip some)."""
        raise NotImplementedError

    def fill(self, model: eqx.Module, key: PRNGKeyArray, condition: TokenCondition) -> tuple[Int[Array, "B L"], Int[Array, ""]]:
        """``(ids, evaluations made)``: every non-condition position sampled, condition positions kept."""
        raise NotImplementedError

    def __call__(
        self,
        model: eqx.Module,
        key: PRNGKeyArray,
        *,
        condition: TokenCondition,
        eos_id: int | None = None,
        pad_id: int = 0,
    ) -> TokenSampleOutput:
        """Sample ``(B, L)`` ids for ``condition``; with ``eos_id`` everything from the first EOS after
        the condition on becomes ``pad_id``."""
        ids, calls = self.fill(model, key, condition)
        if eos_id is not None:
            ids = mask_after_eos(ids, eos_id, pad_id, ~condition.mask)
        return TokenSampleOutput(ids, jnp.full(ids.shape[:1], calls, jnp.int32))
