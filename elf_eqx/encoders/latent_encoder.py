"""Token batches to ELF latents: the frozen encoder, label drop and latent normalisation (docs/method.md#latents, #objective)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from elf_eqx.config import ComputeDtype, precision_policy
from elf_eqx.encoders.latents import encoder_attention_mask, normalize_latents
from elf_eqx.parallel.mesh import shard_batch
from elf_eqx.objective import LatentBatch
from elf_eqx.precision import scope


def cast_floating(tree, dtype: jnp.dtype):
    """``tree`` with every floating-point array cast to ``dtype`` (integer and bool leaves kept)."""
    def cast(a):
        return a.astype(dtype) if eqx.is_array(a) and jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree_util.tree_map(cast, tree)


_FIELD_DTYPES = {"input_ids": np.int32, "valid_mask": bool, "cond_mask": bool, "loss_mask": bool}


class TokenBatch(eqx.Module):
    """A collated batch of token ids: ``valid_mask`` marks real (non-pad) tokens the encoder
    attends to, ``cond_mask`` the condition positions, ``loss_mask`` the scored positions."""

    input_ids: Int[Array, "B L"]
    valid_mask: Bool[Array, "B L"]
    cond_mask: Bool[Array, "B L"]
    loss_mask: Bool[Array, "B L"]

    @staticmethod
    def from_numpy(batch: dict[str, Any], sharding: NamedSharding | None = None) -> "TokenBatch":
        """From the data pipeline's dict of ``(B, L)`` NumPy arrays (this process's rows), placed
        straight onto ``sharding`` (batch axis split over devices) when given."""
        arrays = {name: np.asarray(batch[name], dtype) for name, dtype in _FIELD_DTYPES.items()}
        placed = shard_batch(arrays, sharding) if sharding is not None else {k: jnp.asarray(v) for k, v in arrays.items()}
        return TokenBatch(**placed)


class LatentEncoder(eqx.Module):
    """The frozen text encoder with the latent normalisation and CFG label drop.

    ``encoder(input_ids (B, L), mask (B, L, L)) -> (B, L, D)`` is any of ``elf_eqx.encoders``;
    its output never receives gradients. ``compute_dtype`` names the precision policy whose
    ``encoder`` row it runs by (``auto``: bfloat16 on GPU/TPU, float32 on CPU): its weights are
    cast to that row's dtype inside the compiled step, its norms and softmax stay float32 inside,
    and the latents come out in the ``loss`` row's dtype (float32).
    """

    encoder: eqx.Module
    latent_mean: float = eqx.field(static=True, default=0.0)
    latent_std: float = eqx.field(static=True, default=0.2)
    label_drop_prob: float = eqx.field(static=True, default=0.0)
    compute_dtype: ComputeDtype = eqx.field(static=True, default="auto")
    unroll_layers: bool = eqx.field(static=True, default=False)
    """Run the encoder's layers as an unrolled loop (the dry run's cost estimate; see docs/method.md#dry-run)."""

    def __call__(self, batch: TokenBatch, key: PRNGKeyArray) -> LatentBatch:
        """Encode ``batch``; with probability ``label_drop_prob`` a conditional sample loses its
        condition (its targets may not attend to it, and its condition latents are zeroed later)."""
        has_condition = jnp.any(batch.cond_mask, axis=-1)
        drop = jax.random.bernoulli(key, self.label_drop_prob, has_condition.shape) & has_condition
        x = self._latents(batch, drop)
        return LatentBatch(x, batch.input_ids, batch.loss_mask, batch.cond_mask, drop)

    def encode_conditions(self, batch: TokenBatch) -> Float[Array, "B L D"]:
        """Clean condition latents (zero elsewhere) for conditional sampling."""
        return jnp.where(batch.cond_mask[..., None], self._latents(batch, None), 0.0)

    def _latents(self, batch: TokenBatch, drop: Bool[Array, " B"] | None) -> Float[Array, "B L D"]:
        """Normalised encoder states under the conditional encoder mask (no gradient)."""
        mask = encoder_attention_mask(batch.valid_mask, batch.cond_mask, drop)
        policy = precision_policy(self.compute_dtype)
        dtype = policy.encoder.matmul
        with scope("encoder"):
            encoder = self.encoder if dtype == jnp.float32 else cast_floating(self.encoder, dtype)
            hidden = jax.lax.stop_gradient(encoder(batch.input_ids, mask, unroll=self.unroll_layers))
        return normalize_latents(hidden.astype(policy.loss.elementwise), self.latent_mean, self.latent_std)
