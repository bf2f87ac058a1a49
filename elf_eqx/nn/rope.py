"""Rotary position embedding on interleaved pairs, with unrotated prefix tokens."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float


def rope_angles(
    num_prefix: int, length: int, head_dim: int, theta: float = 10000.0
) -> tuple[Float[Array, "N half"], Float[Array, "N half"]]:
    """``(cos, sin)`` tables of shape ``(num_prefix + length, head_dim // 2)``.

    Pair ``i`` turns at frequency ``theta^(-2i/head_dim)``; the text tokens take positions
    ``0..length-1`` and the ``num_prefix`` tokens in front get no rotation (cos 1, sin 0).
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got head_dim={head_dim}")
    freqs = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * freqs[None, :]
    prefix = jnp.zeros((num_prefix, head_dim // 2), jnp.float32)
    angles = jnp.concatenate([prefix, angles], axis=0)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(
    x: Float[Array, "*batch N heads head_dim"],
    cos: Float[Array, "N half"],
    sin: Float[Array, "N half"],
) -> Float[Array, "*batch N heads head_dim"]:
    """Rotate dims ``(2i, 2i+1)`` together: ``(a, b) -> (a cos - b sin, b cos + a sin)``."""
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = cos[:, None, :], sin[:, None, :]
    rotated = jnp.stack([a * c - b * s, b * c + a * s], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)
