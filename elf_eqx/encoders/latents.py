"""Encoder outputs to ELF latents, and the encoder's ``(B, L, L)`` attention mask (docs/method.md#latents, #objective)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


def normalize_latents(
    h: Float[Array, "*batch D"], mean: float = 0.0, std: float = 0.2
) -> Float[Array, "*batch D"]:
    """``x = (h - mean) / std``: encoder hidden states ``(..., D)`` to ELF latents, same shape."""
    return (h - mean) / std


def denormalize_latents(
    x: Float[Array, "*batch D"], mean: float = 0.0, std: float = 0.2
) -> Float[Array, "*batch D"]:
    """Inverse of :func:`normalize_latents`: ``h = x * std + mean``, same shape."""
    return x * std + mean


def expand_padding_mask(valid: Bool[Array, "B L"]) -> Bool[Array, "B L L"]:
    """``(B, L)`` valid tokens to the ``(B, L, L)`` query×key mask in which every row (pad rows
    included) attends to every valid token, as a padding mask does in Hugging Face encoders."""
    batch, length = valid.shape
    return jnp.broadcast_to(valid[:, None, :], (batch, length, length))


def encoder_attention_mask(
    valid: Bool[Array, "B L"],
    is_condition: Bool[Array, "B L"],
    drop_condition: Bool[Array, " B"] | None = None,
) -> Bool[Array, "B L L"]:
    """The frozen encoder's ``(B, L, L)`` mask, ``mask[b, i, j]``: query ``i`` may attend key ``j``.

    - ``valid (B, L)``: real (non-pad) tokens; only these are ever attended.
    - ``is_condition (B, L)``: condition tokens (all False for unconditional data).
    - ``drop_condition (B,)``: CFG label drop; those rows' non-condition queries may not attend
      condition tokens.

    A condition query attends only to valid condition tokens; every other query (target tokens
    and pad positions alike, as in the reference's fixture) attends to every valid token, minus
    the condition tokens where its sample's condition is dropped.
    """
    key_ok = valid[:, None, :]
    cond_key = is_condition[:, None, :]
    cond_query = is_condition[:, :, None]
    other_row = key_ok
    if drop_condition is not None:
        other_row = key_ok & ~(cond_key & drop_condition[:, None, None])
    return jnp.where(cond_query, key_ok & cond_key, other_row)
