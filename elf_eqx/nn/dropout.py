"""Inverted dropout whose rate may be a traced value (it varies by layer under ``lax.scan``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, Shaped


def dropout(
    x: Float[Array, "*shape"], rate: Float[Array, ""] | float, key: PRNGKeyArray | None
) -> Float[Array, "*shape"]:
    """Zero each entry of ``x`` with probability ``rate`` and rescale the rest by ``1/(1-rate)``.
    ``key=None`` means inference: ``x`` is returned unchanged."""
    if key is None:
        return x
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask: Shaped[Array, "*shape"] = jax.random.uniform(key, x.shape) < keep
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))
