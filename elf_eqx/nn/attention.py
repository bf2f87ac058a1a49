"""Multi-head self-attention with QK-norm and RoPE, as in the ELF blocks."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from elf_eqx.nn.dropout import dropout
from elf_eqx.nn.linear import Linear
from elf_eqx.nn.norm import RMSNorm
from elf_eqx.nn.rope import apply_rope


class SelfAttention(eqx.Module):
    """Fused ``qkv`` projection, per-head RMSNorm on q and k, RoPE, float32 softmax, output projection.

    No attention mask: ELF attends to every position, padding included (ELF_SPEC.md §2.5).
    """

    qkv: Linear
    proj: Linear
    q_norm: RMSNorm
    k_norm: RMSNorm
    num_heads: int = eqx.field(static=True)

    def __init__(self, hidden_size: int, num_heads: int, *, eps: float = 1e-6, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        head_dim = hidden_size // num_heads
        self.qkv = Linear(hidden_size, 3 * hidden_size, key=k1)
        self.proj = Linear(hidden_size, hidden_size, key=k2)
        self.q_norm = RMSNorm(head_dim, eps)
        self.k_norm = RMSNorm(head_dim, eps)
        self.num_heads = num_heads

    def __call__(
        self,
        x: Float[Array, "B N H"],
        cos: Float[Array, "N half"],
        sin: Float[Array, "N half"],
        *,
        attn_dropout: Float[Array, ""] | float = 0.0,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "B N H"]:
        """``(B, N, H) -> (B, N, H)``; ``cos``/``sin`` are the RoPE tables of :func:`rope_angles`."""
        b, n, h = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, h // self.num_heads)
        q = apply_rope(self.q_norm(qkv[:, :, 0]), cos, sin)
        k = apply_rope(self.k_norm(qkv[:, :, 1]), cos, sin)
        v = qkv[:, :, 2]
        scale = (h // self.num_heads) ** -0.5
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
        probs = jax.nn.softmax(logits, axis=-1)
        probs = dropout(probs, attn_dropout, key).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, n, h)
        return self.proj(out)
