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
from elf_eqx.nn.dropout import Dropout
from elf_eqx.nn.norm import RMSNorm
from elf_eqx.nn.swiglu import SwiGLU
from elf_eqx.parallel.rows import constrain_rows, sharded_rows
from elf_eqx.precision import PrecisionPolicy, policy_of, scope


class Block(eqx.Module):
    """``x += Attn(RMSNorm(x)); x += SwiGLU(RMSNorm(x))`` (no adaLN: conditioning is in context).

    Built from the config once: the attention's probability dropout (``attn_dropout``), the
    dropout on both branch outputs before the residual adds (``proj_dropout``) and whether the
    attention is ``causal`` are the block's own static fields, not call arguments.
    """

    norm1: RMSNorm
    attn: SelfAttention
    norm2: RMSNorm
    mlp: SwiGLU
    proj_dropout: Dropout

    def __init__(self, config: ELFConfig, *, causal: bool = False, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        h = config.hidden_size
        self.norm1 = RMSNorm(h, config.norm_eps, axis="embed")
        self.attn = SelfAttention(h, config.num_heads, eps=config.norm_eps, implementation=config.attention,
                                  attn_dropout=config.attn_dropout, causal=causal, platform=config.platform, key=k1)
        self.norm2 = RMSNorm(h, config.norm_eps, axis="embed")
        self.mlp = SwiGLU(h, config.mlp_hidden, key=k2)
        self.proj_dropout = Dropout(config.proj_dropout)

    @property
    def uses_dropout(self) -> bool:
        """Whether a call with a key drops anything (some dropout live: rate > 0, not in inference mode)."""
        return self.attn.attn_dropout.live or self.proj_dropout.live

    def __call__(
        self,
        x: Float[Array, "B N H"],
        cos: Float[Array, "N half"],
        sin: Float[Array, "N half"],
        *,
        key: PRNGKeyArray | None = None,
        dropout_scale: Float[Array, ""] | float = 1.0,
        precision: PrecisionPolicy | None = None,
    ) -> Float[Array, "B N H"]:
        """One block: the residual stream ``x`` stays in its dtype (``precision.residual``), the
        branches run in ``precision.compute`` (default: the policy of ``x``'s dtype). ``key=None``
        disables dropout. ``dropout_scale`` multiplies every dropout rate of the block (traced;
        :func:`run_blocks` passes the layer's 0/1 place in the dropout band)."""
        p = precision if precision is not None else policy_of(x)
        k_attn, k_proj1, k_proj2 = jax.random.split(key, 3) if key is not None else (None,) * 3
        a = self.attn(self.norm1(x).astype(p.compute), cos, sin, key=k_attn, dropout_scale=dropout_scale,
                      precision=p)
        with scope("residual"):
            x = x + self.proj_dropout(a, key=k_proj1, scale=dropout_scale).astype(x.dtype)
        m = self.mlp(self.norm2(x).astype(p.compute), p)
        with scope("residual"):
            return x + self.proj_dropout(m, key=k_proj2, scale=dropout_scale).astype(x.dtype)


def stacked_blocks(config: ELFConfig, key: PRNGKeyArray, *, causal: bool = False) -> Block:
    """``config.depth`` blocks stored as one :class:`Block` whose leaves lead with a ``depth`` axis
    (``causal``: the AR baseline's blocks)."""
    return eqx.filter_vmap(lambda k: Block(config, causal=causal, key=k))(jax.random.split(key, config.depth))


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
) -> Float[Array, "B N H"]:
    """``x`` through the stacked ``blocks`` under ``lax.scan`` (unrolled with ``config.scan_unroll``)
    with ``config``'s remat policy.
    ``key`` enables the blocks' dropout, in blocks ``depth//4 ≤ i < 3·depth//4`` only
    (``config.dropout_layers()``); ``None`` is deterministic. ``x`` is the residual stream, in
    ``config.precision.residual``'s dtype; the blocks run as ``config.precision`` says."""
    params, static = eqx.partition(blocks, eqx.is_array)
    precision = config.precision
    # The dropout band is a traced 0/1 scale per layer, scanned along with the layer's weights,
    # not a static field: every stacked layer shares one set of static fields (filter_vmap traces
    # one Block; lax.scan runs one body). Splitting the scan into segments with differently
    # configured blocks would compile the body several times and let the outer layers pick
    # another attention kernel than the middle ones while training; a scale of 0 leaves the
    # activations exactly as they are (dropout at rate 0 keeps every entry and divides by 1).
    band = jnp.asarray(config.dropout_layers(), jnp.float32)
    layer_keys = jax.random.split(key, config.depth) if key is not None and blocks.uses_dropout else None

    def body(carry, layer):
        block_params, scale, layer_key = layer
        block = eqx.combine(block_params, static)
        return constrain_rows(block(carry, cos, sin, key=layer_key, dropout_scale=scale, precision=precision)), None

    # Under a mesh the rows stay split over the batch shards through every block, padded to a
    # multiple of them (elf_eqx.parallel.rows): unpinned, an unrolled stack was partly replicated.
    b = x.shape[0]
    with scope("residual"):  # the loop carries the residual stream
        x, _ = jax.lax.scan(remat_policy(body, config.remat), sharded_rows(x), (params, band, layer_keys),
                            unroll=config.scan_unroll)
    return x[:b]
