"""RMS and mean/variance layer norms, computed in the precision policy's ``norms`` dtype (float32
in every policy) whatever the activation dtype.

Each declares the logical name of its feature axis (``axis``, given by its owner: ``"embed"``,
``"head_dim"``) for :mod:`elf_eqx.parallel.partition`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from elf_eqx.nn.axes import AxisNames
from elf_eqx.precision import policy_of, scope


class RMSNorm(eqx.Module):
    """``x / sqrt(mean(x²) + eps) * weight`` over the last axis.

    The statistics and the scaling run in float32; the result is cast back to ``x.dtype``.
    T5 uses the same norm (it calls it T5LayerNorm) with ``eps=1e-6``.
    """

    weight: Float[Array, " dim"]
    eps: float = eqx.field(static=True)
    axis: str | None = eqx.field(static=True, default=None)

    def __init__(self, dim: int, eps: float = 1e-6, *, axis: str | None = None):
        self.weight = jnp.ones((dim,), jnp.float32)
        self.eps = eps
        self.axis = axis

    @property
    def logical_axes(self) -> dict[str, AxisNames]:
        """``weight: (axis,)``; empty when undeclared."""
        return {} if self.axis is None else {"weight": (self.axis,)}

    def __call__(self, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
        """Normalise the last axis of ``(..., dim)``; same shape and dtype out."""
        with scope("norms"):
            x32 = x.astype(policy_of(x).norms.elementwise)
            inv = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
            return (x32 * inv * self.weight).astype(x.dtype)


class LayerNorm(eqx.Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis, in float32 inside;
    the result has the dtype of ``x``."""

    weight: Float[Array, " dim"]
    bias: Float[Array, " dim"]
    eps: float = eqx.field(static=True)
    axis: str | None = eqx.field(static=True, default=None)

    def __init__(self, dim: int, eps: float = 1e-5, *, axis: str | None = None):
        self.weight = jnp.ones((dim,), jnp.float32)
        self.bias = jnp.zeros((dim,), jnp.float32)
        self.eps = eps
        self.axis = axis

    @property
    def logical_axes(self) -> dict[str, AxisNames]:
        """``weight`` and ``bias``: ``(axis,)``; empty when undeclared."""
        return {} if self.axis is None else {"weight": (self.axis,), "bias": (self.axis,)}

    def __call__(self, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
        """Normalise the last axis of ``(..., dim)``; same shape and dtype out."""
        with scope("norms"):
            x32 = x.astype(policy_of(x).norms.elementwise)
            mean = jnp.mean(x32, axis=-1, keepdims=True)
            centred = x32 - mean
            var = jnp.mean(centred * centred, axis=-1, keepdims=True)
            y = centred * jax.lax.rsqrt(var + self.eps) * self.weight + self.bias
            return y.astype(x.dtype)
