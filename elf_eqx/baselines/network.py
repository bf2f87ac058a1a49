"""The baselines' network: token embeddings, ELF's transformer blocks, a vocabulary head
(docs/method.md#baselines).

The same :class:`~elf_eqx.config.ELFConfig` presets give the depth, width, heads, MLP, RoPE,
dropout and runtime settings; ``vocab_size`` is the tokenizer's ``V`` and the embedding holds one
extra row, id ``V``: ``[MASK]`` for MDLM, ``[BOS]`` for the AR model. The head predicts the ``V``
real ids only. ELF's encoder-side fields (``encoder_dim``, ``bottleneck_dim``, prefix tokens)
are unused. The MDLM network is time-free: with the log-linear schedule the clean-token
posterior does not depend on ``t`` given the masked sequence, and a time-free network lets the
sampler reuse its output across steps where nothing was unmasked.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from elf_eqx.config import ELFConfig
from elf_eqx.nn.linear import Linear
from elf_eqx.nn.norm import RMSNorm
from elf_eqx.nn.rope import rope_angles
from elf_eqx.nn.transformer import Block, run_blocks, stacked_blocks


class TokenTransformer(eqx.Module):
    """``ids (B, L) -> logits (B, L, V)``: embedding, stacked blocks, final RMSNorm, linear head.
    Use :class:`BidirectionalLM` (MDLM) or :class:`CausalLM` (AR)."""

    embed: Float[Array, "V1 H"]
    blocks: Block
    final_norm: RMSNorm
    head: Linear
    config: ELFConfig = eqx.field(static=True)
    causal: ClassVar[bool] = False  # builds causal blocks (CausalLM)
    logical_axes: ClassVar[dict[str, tuple[str, ...]]] = {"embed": ("vocab_rows", "embed")}

    def __init__(self, config: ELFConfig, *, key: PRNGKeyArray):
        k_embed, k_blocks, k_head = jax.random.split(key, 3)
        h = config.hidden_size
        self.config = config
        self.embed = 0.02 * jax.random.normal(k_embed, (config.vocab_size + 1, h))
        self.blocks = stacked_blocks(config, k_blocks, causal=self.causal)
        self.final_norm = RMSNorm(h, config.norm_eps, axis="embed")
        self.head = Linear(h, config.vocab_size, key=k_head, in_axis="embed", out_axis="vocab")

    @property
    def extra_id(self) -> int:
        """The id past the tokenizer's vocabulary: ``[MASK]`` (MDLM) or ``[BOS]`` (AR)."""
        return self.config.vocab_size

    def __call__(self, ids: Int[Array, "B L"], *, key: PRNGKeyArray | None = None) -> Float[Array, "B L V"]:
        """Float32 logits over the ``V`` tokenizer ids at every position; ``key`` enables dropout."""
        cfg = self.config
        x = self.embed.astype(cfg.dtype)[ids]
        cos, sin = rope_angles(0, ids.shape[1], cfg.head_dim, cfg.rope_theta)
        x = run_blocks(self.blocks, cfg, x, cos, sin, key)
        return self.head(self.final_norm(x)).astype(jnp.float32)


class BidirectionalLM(TokenTransformer):
    """Every position attends to every other (MDLM's denoiser)."""

    causal: ClassVar[bool] = False


class CausalLM(TokenTransformer):
    """Position ``i`` attends to positions ``≤ i`` (the AR model)."""

    causal: ClassVar[bool] = True
