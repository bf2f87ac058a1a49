"""Rotary position embedding on interleaved pairs, with unrotated prefix tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from elf_eqx.precision import FLOAT32, Rule, policy_of, scope


def rope_angles(
    num_prefix: int, length: int, head_dim: int, theta: float = 10000.0
) -> tuple[Float[Array, "N half"], Float[Array, "N half"]]:
    """``(cos, sin)`` tables of shape ``(num_prefix + length, head_dim // 2)``.

    Pair ``i`` turns at frequency ``theta^(-2i/head_dim)``; the text tokens take positions
    ``0..length-1`` and the ``num_prefix`` tokens in front get no rotation (cos 1, sin 0).
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got head_dim={head_dim}")
    dtype = FLOAT32.positions.elementwise  # position tables are float32 in every policy
    with scope("positions"):
        freqs = theta ** (-jnp.arange(0, head_dim, 2, dtype=dtype) / head_dim)
        angles = jnp.arange(length, dtype=dtype)[:, None] * freqs[None, :]
        prefix = jnp.zeros((num_prefix, head_dim // 2), dtype)
        angles = jnp.concatenate([prefix, angles], axis=0)
        return jnp.cos(angles), jnp.sin(angles)


def pair_swap(head_dim: int, dtype) -> Float[Array, "head_dim head_dim"]:
    """The matrix ``P`` with ``(x P)[2i] = −x[2i+1]`` and ``(x P)[2i+1] = x[2i]``: each pair turned a
    quarter, as one small matmul."""
    i = jnp.arange(head_dim)
    partner = i ^ 1  # 2i ↔ 2i+1
    sign = jnp.where(i % 2 == 0, 1.0, -1.0)  # row 2i+1 feeds column 2i with −1, row 2i column 2i+1 with +1
    return (jnp.where(partner[:, None] == i[None, :], sign[:, None], 0.0)).astype(dtype)


def apply_rope(
    x: Float[Array, "*batch N heads head_dim"],
    cos: Float[Array, "N half"],
    sin: Float[Array, "N half"],
    rule: Rule | None = None,
) -> Float[Array, "*batch N heads head_dim"]:
    """Rotate dims ``(2i, 2i+1)`` together: ``(a, b) -> (a cos − b sin, b cos + a sin)``, the swap in
    ``rule.matmul`` and the rotation in ``rule.elementwise`` (default: the ``rope`` row of the policy
    of ``x``'s dtype: float32), returned in ``x``'s dtype.

    Written as ``x·cos + (x P)·sin`` with ``P`` the pair-swapping matrix of :func:`pair_swap` and
    the tables repeated per pair, rather than by splitting the last axis into pairs: the same
    products and sums (``x P`` only moves and negates entries, exactly), but no axis of size 2,
    which a TPU would lay out padded to its 128 lanes (docs/method.md#network)."""
    rule = rule if rule is not None else policy_of(x).rope
    head_dim = x.shape[-1]
    with scope("rope"):
        swapped = jnp.einsum("...d,de->...e", x.astype(rule.matmul), pair_swap(head_dim, rule.matmul),
                             precision=jax.lax.Precision.HIGHEST)
        c, s = (jnp.repeat(table, 2, axis=-1)[:, None, :] for table in (cos, sin))
        return (x.astype(rule.elementwise) * c + swapped.astype(rule.elementwise) * s).astype(x.dtype)
