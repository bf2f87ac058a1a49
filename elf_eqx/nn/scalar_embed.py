"""Embedding of a scalar per sample (the flow time t, or the SC-CFG scale ω)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from elf_eqx.nn.linear import Linear
from elf_eqx.precision import F32, Rule


def sinusoidal_features(s: Float[Array, " B"], dim: int = 256, max_period: float = 10000.0) -> Float[Array, "B dim"]:
    """``[cos(s·f_i), sin(s·f_i)]`` with ``f_i = exp(-ln(max_period)·i/(dim/2))``; the raw scalar, not ×1000."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = s.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class ScalarEmbedder(eqx.Module):
    """256-d sinusoid, then ``Linear(256→H) → SiLU → Linear(H→H)``; weights start normal(0.02)."""

    mlp_0: Linear
    mlp_2: Linear
    num_features: int = eqx.field(static=True)

    def __init__(self, hidden_size: int, *, num_features: int = 256, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.mlp_0 = Linear(num_features, hidden_size, key=k1, init="normal", std=0.02,
                            in_axis="freq", out_axis="embed")
        self.mlp_2 = Linear(hidden_size, hidden_size, key=k2, init="normal", std=0.02,
                            in_axis="embed", out_axis="embed")
        self.num_features = num_features

    def __call__(self, s: Float[Array, " B"], rule: Rule | None = None) -> Float[Array, "B H"]:
        """``(B,) -> (B, H)``: the features formed in float32, the linear layers by ``rule``, the SiLU
        in ``rule.elementwise``; returned in ``rule.result`` (default: everything float32)."""
        rule = rule if rule is not None else Rule.uniform(F32)
        feats = sinusoidal_features(s, self.num_features)
        hidden = jax.nn.silu(self.mlp_0(feats, rule).astype(rule.elementwise))
        return self.mlp_2(hidden, rule)
