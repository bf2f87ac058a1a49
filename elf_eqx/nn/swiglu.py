"""SwiGLU feed-forward layer."""

from __future__ import annotations

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from elf_eqx.nn.linear import Linear
from elf_eqx.precision import PrecisionPolicy, policy_of, scope


class SwiGLU(eqx.Module):
    """``w3(silu(a) * b)`` with ``[a, b] = w12(x)`` split in halves along the features."""

    w12: Linear
    w3: Linear

    def __init__(self, dim: int, hidden: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        # w12's columns are [a | b], each of the hidden width ("mlp"), split in halves in __call__.
        self.w12 = Linear(dim, 2 * hidden, key=k1, in_axis="embed", out_axis="mlp")
        self.w3 = Linear(hidden, dim, key=k2, in_axis="mlp", out_axis="embed")

    def __call__(self, x: Float[Array, "*batch dim"], precision: PrecisionPolicy | None = None) -> Float[Array, "*batch dim"]:
        """``(..., dim) -> (..., dim)``: the linear layers by ``precision.projections``, the gate in
        ``precision.swiglu.elementwise`` (default: the policy of ``x``'s dtype)."""
        p = precision if precision is not None else policy_of(x)
        with scope("projections"):
            a, b = jax.numpy.split(self.w12(x, p.projections), 2, axis=-1)
        with scope("swiglu"):
            gate = jax.nn.silu(a.astype(p.swiglu.elementwise)) * b.astype(p.swiglu.elementwise)
        with scope("projections"):
            return self.w3(gate, p.projections)
