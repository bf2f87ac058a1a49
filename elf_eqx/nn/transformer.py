"""The transformer stack every network here is built on: pre-norm blocks (attention with QK-norm
and RoPE, SwiGLU MLP) stored stacked and run under ``lax.scan`` (docs/method.md#network).

ELF runs it bidirectionally behind its prefix tokens; the baselines run the same blocks over
token embeddings, bidirectionally (MDLM) or causally (AR) (docs/method.md#baselines).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from elf_eqx.config import ELFConfig
from elf_eqx.nn.attention import SelfAttention
from elf_eqx.nn.dropout import dropout
from elf_eqx.nn.norm import RMSNorm
from elf_eqx.nn.swiglu import SwiGLU


class Block(eqx.Module):
    """``x += Attn(RMSNorm(x)); x += SwiGLU(RMSNorm(x))`` (no adaLN: conditioning is in context)."""

    norm1: RMSNorm
    attn: SelfAttention
    norm2: RMSNorm
    mlp: SwiGLU

    def __init__(self, config: ELFConfig, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        h = config.hidden_size
        self.norm1 = RMSNorm(h, config.norm_eps, axis="embed")
        self.attn = SelfAttention(h, config.num_heads, eps=config.norm_eps, implementation=config.attention, key=k1)
        self.norm2 = RMSNorm(h, config.norm_eps, axis="embed")
        self.mlp = SwiGLU(h, config.mlp_hidden, key=k2)

    def __call__(
        self,
        x: Float[Array, "B N H"],
        cos: Float[Array, "N half"],
        sin: Float[Array, "N half"],
        attn_rate: Float[Array, ""] | float = 0.0,
        proj_rate: Float[Array, ""] | float = 0.0,
        key: PRNGKeyArray | None = None,
        attn_dropout_active: bool = False,
        causal: bool = False,
    ) -> Float[Array, "B N H"]:
        """One block; ``key=None`` disables dropout. ``attn_dropout_active`` (static) says that
        ``attn_rate`` may be non-zero, which rules out the fused attention kernel; ``causal``
        (static) lets position ``i`` attend to positions ``≤ i`` only."""
        k_attn, k_proj1, k_proj2 = jax.random.split(key, 3) if key is not None else (None,) * 3
        a = self.attn(self.norm1(x), cos, sin, attn_dropout=attn_rate, dropout_active=attn_dropout_active,
                      causal=causal, key=k_attn)
        x = x + dropout(a, proj_rate, k_proj1)
        m = self.mlp(self.norm2(x))
        return x + dropout(m, proj_rate, k_proj2)


def stacked_blocks(config: ELFConfig, key: PRNGKeyArray) -> Block:
    """``config.depth`` blocks stored as one :class:`Block` whose leaves lead with a ``depth`` axis."""
    return eqx.filter_vmap(lambda k: Block(config, key=k))(jax.random.split(key, config.depth))


def remat_policy(body, policy: str):
    """``body`` (one scanned block) under the named rematerialisation policy: ``none`` keeps every
    activation for the backward pass, ``dots_saveable`` keeps matmul outputs only, ``full`` keeps
    only the block's input (the names of ``jax.checkpoint_policies``)."""
    if policy == "none":
        return body
    if policy == "dots_saveable":
        return jax.checkpoint(body, policy=jax.checkpoint_policies.dots_saveable, prevent_cse=False)
    if policy == "full":
        return jax.checkpoint(body, prevent_cse=False)
    raise ValueError(f"unknown remat policy {policy!r} (none, dots_saveable, full)")


def run_blocks(
    blocks: Block,
    config: ELFConfig,
    x: Float[Array, "B N H"],
    cos: Float[Array, "N half"],
    sin: Float[Array, "N half"],
    key: PRNGKeyArray | None,
    *,
    causal: bool = False,
) -> Float[Array, "B N H"]:
    """``x`` through the stacked ``blocks`` under ``lax.scan`` with ``config``'s remat policy.
    ``key`` enables dropout (in blocks ``depth//4 ≤ i < 3·depth//4`` only); ``None`` is deterministic."""
    params, static = eqx.partition(blocks, eqx.is_array)
    in_dropout_range = jnp.asarray(config.dropout_layers(), jnp.float32)
    use_dropout = key is not None and (config.attn_dropout > 0 or config.proj_dropout > 0)
    layer_keys = jax.random.split(key, config.depth) if use_dropout else None
    attn_dropout_active = use_dropout and config.attn_dropout > 0

    def body(carry, layer):
        block_params, active, layer_key = layer
        block = eqx.combine(block_params, static)
        out = block(carry, cos, sin, config.attn_dropout * active, config.proj_dropout * active, layer_key,
                    attn_dropout_active, causal)
        return out, None

    x, _ = jax.lax.scan(remat_policy(body, config.remat), x, (params, in_dropout_range, layer_keys))
    return x
