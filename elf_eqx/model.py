"""The ELF network: one set of weights that denoises latents and decodes them to tokens.

Forward pass (docs/method.md#network): optional self-conditioning projection (2D→D), bottleneck
(D→128→H), a prefix of ``[time×4, sc-cfg×4, mode×4]`` learned tokens, pre-norm transformer
blocks with in-context conditioning only, then either the zero-initialised denoiser head
(x̂, the clean-latent prediction) or, in decode mode, the vocabulary head.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from elf_eqx.config import RUNTIME_FIELDS, ELFConfig
from elf_eqx.errors import ConfigError
from elf_eqx.nn.linear import Linear
from elf_eqx.nn.norm import RMSNorm
from elf_eqx.nn.rope import rope_angles
from elf_eqx.nn.scalar_embed import ScalarEmbedder
from elf_eqx.nn.transformer import Block, run_blocks, stacked_blocks
from elf_eqx.parallel.rows import constrain_rows, sharded_rows
from elf_eqx.precision import PrecisionPolicy, scope

__all__ = ["ELF", "count_params", "with_runtime_options"]


def _as_batch_vector(value: Float[Array, " B"] | Bool[Array, " B"] | float | bool, batch: int) -> Float[Array, " B"]:
    """Broadcast a per-sample scalar (or one scalar for all) to a float32 ``(B,)`` vector."""
    return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (batch,))


class ELF(eqx.Module):
    """The ELF denoiser/decoder. Blocks are stored stacked (leading ``depth`` axis) and run under
    ``lax.scan``, so compile time does not grow with depth."""

    self_cond_proj: Linear
    text_proj1: Linear
    text_proj2: Linear
    t_embedder: ScalarEmbedder
    sc_cfg_embedder: ScalarEmbedder
    time_tokens: Float[Array, "T H"]
    sc_cfg_tokens: Float[Array, "S H"]
    mode_tokens: Float[Array, "M H"]
    blocks: Block
    final_norm: RMSNorm
    final_linear: Linear
    decoder_proj: Linear
    unembed: Linear
    config: ELFConfig = eqx.field(static=True)
    # The logical axes of the arrays held here (sub-layers declare their own; elf_eqx/nn/axes.py).
    logical_axes: ClassVar[dict[str, tuple[str, ...]]] = {
        name: ("prefix", "embed") for name in ("time_tokens", "sc_cfg_tokens", "mode_tokens")
    }

    def __init__(self, config: ELFConfig, *, key: PRNGKeyArray):
        keys = jax.random.split(key, 11)
        h, d = config.hidden_size, config.encoder_dim
        self.config = config
        self.self_cond_proj = Linear(2 * d, d, key=keys[0], in_axis="latent_pair", out_axis="latent")
        self.text_proj1 = Linear(d, config.bottleneck_dim, use_bias=False, key=keys[1],
                                 in_axis="latent", out_axis="bottleneck")
        self.text_proj2 = Linear(config.bottleneck_dim, h, key=keys[2], in_axis="bottleneck", out_axis="embed")
        self.t_embedder = ScalarEmbedder(h, key=keys[3])
        self.sc_cfg_embedder = ScalarEmbedder(h, key=keys[4])
        self.time_tokens = 0.02 * jax.random.normal(keys[5], (config.num_time_tokens, h))
        self.sc_cfg_tokens = 0.02 * jax.random.normal(keys[6], (config.num_sc_cfg_tokens, h))
        self.mode_tokens = 0.02 * jax.random.normal(keys[7], (config.num_mode_tokens, h))
        self.blocks = stacked_blocks(config, keys[8])
        self.final_norm = RMSNorm(h, config.norm_eps, axis="embed")
        self.final_linear = Linear(h, d, key=keys[9], init="zeros", in_axis="embed", out_axis="latent")
        k_proj, k_unembed = jax.random.split(keys[10])
        self.decoder_proj = Linear(h, d, key=k_proj, in_axis="embed", out_axis="latent")
        self.unembed = Linear(d, config.vocab_size, key=k_unembed, in_axis="latent", out_axis="vocab")

    @property
    def compute_dtype(self) -> jnp.dtype:
        """The activation dtype on the current backend (``auto`` resolved: bf16 on GPU/TPU, float32 on CPU)."""
        return self.config.dtype

    @property
    def precision(self) -> PrecisionPolicy:
        """The precision policy the network runs under (:attr:`ELFConfig.precision`)."""
        return self.config.precision

    def hidden(
        self,
        z: Float[Array, "B L F"],
        t: Float[Array, " B"] | float,
        omega: Float[Array, " B"] | float,
        decode: Float[Array, " B"] | Bool[Array, " B"] | float | bool = False,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "B L H"]:
        """Block output at the ``L`` text positions, before the final norm.

        ``z`` has ``F = D`` features, or ``F = 2D`` for ``concat(z, x̂_prev)`` (self-conditioning).
        ``decode`` scales the mode tokens (1 = decode mode, 0 = denoise mode), per sample or for all.
        ``key`` enables dropout (training); ``None`` is deterministic.
        """
        return self._split_hidden(z, t, omega, decode, key)[: z.shape[0]]

    def _split_hidden(self, z, t, omega, decode, key) -> Float[Array, "P L H"]:
        """:meth:`hidden` with its rows split over the batch shards of the mesh it is traced under,
        padded with rows of zeros to a multiple of them (``P ≥ B``; ``P = B`` outside a mesh).

        Left free, the partitioner followed the fsdp-split weights into activations split by
        features, which it then had to replicate to split them by rows again (XLA's "involuntary
        full rematerialization"); pinned, the weights are gathered instead (elf_eqx.parallel.rows)."""
        cfg = self.config
        b, length, features = z.shape
        p = self.precision
        if features not in (cfg.encoder_dim, 2 * cfg.encoder_dim):
            raise ValueError(
                f"ELF input has {features} features; expected encoder_dim={cfg.encoder_dim} "
                f"or 2·encoder_dim={2 * cfg.encoder_dim} (self-conditioning)"
            )
        with scope("embeddings"):
            x = self.embed_text(sharded_rows(z), p)
            t_vec, omega_vec, mode = (sharded_rows(_as_batch_vector(v, b)) for v in (t, omega, decode))
            time_tok, cfg_tok, mode_tok = self.prefix_tokens(t_vec, omega_vec, mode, p)
            x = jnp.concatenate([time_tok, cfg_tok, mode_tok, x], axis=1).astype(p.residual.elementwise)

        cos, sin = rope_angles(cfg.num_prefix_tokens, length, cfg.head_dim, cfg.rope_theta)
        x = run_blocks(self.blocks, cfg, constrain_rows(x), cos, sin, key)
        return constrain_rows(x[:, cfg.num_prefix_tokens :])

    def embed_text(self, z: Float[Array, "B L F"], p: PrecisionPolicy) -> Float[Array, "B L H"]:
        """The text positions' input: ``[z, x̂_prev]`` (``F = 2D``) through the self-conditioning
        projection, then the bottleneck ``D → 128 → H``; in ``p.compute``."""
        rule = p.embeddings
        x = z.astype(rule.matmul)
        if z.shape[-1] == 2 * self.config.encoder_dim:
            x = self.self_cond_proj(x, rule)
        return constrain_rows(self.text_proj2(self.text_proj1(constrain_rows(x), rule), rule))

    def prefix_tokens(
        self, t: Float[Array, " B"], omega: Float[Array, " B"], mode: Float[Array, " B"], p: PrecisionPolicy
    ) -> tuple[Float[Array, "B T H"], Float[Array, "B S H"], Float[Array, "B M H"]]:
        """The time, SC-CFG and mode tokens of each sample: the learned vectors plus the embedded
        ``t`` and ω, the mode vectors times ``mode``. Formed in ``p.embeddings.elementwise`` (float32:
        their gradients sum over the batch)."""
        rule, b = p.embeddings, t.shape[0]
        acc = rule.elementwise
        time_tok = self.time_tokens.astype(acc)[None] + constrain_rows(self.t_embedder(t, rule)).astype(acc)[:, None, :]
        cfg_tok = self.sc_cfg_tokens.astype(acc)[None] + constrain_rows(self.sc_cfg_embedder(omega, rule)).astype(acc)[:, None, :]
        mode_tok = self.mode_tokens.astype(acc)[None] * mode.astype(acc)[:, None, None]
        return time_tok, cfg_tok, jnp.broadcast_to(mode_tok, (b, *mode_tok.shape[1:]))

    def denoise_head(self, h: Float[Array, "B L H"]) -> Float[Array, "B L D"]:
        """x̂, the clean-latent prediction: ``Linear(RMSNorm(h))``, returned in the ``heads`` row's
        result dtype (float32 in every policy)."""
        rule = self.precision.heads
        with scope("heads"):
            return self.final_linear(self.final_norm(h), rule)

    def decode_head(self, h: Float[Array, "B L H"]) -> Float[Array, "B L V"]:
        """Vocabulary logits ``gelu_tanh(h·W_p + b_p)·W_u + b_u`` from the pre-norm features, the
        GELU in the ``heads`` row's elementwise dtype and the logits in its result dtype (float32
        in every policy)."""
        rule = self.precision.heads
        with scope("heads"):
            p = jax.nn.gelu(self.decoder_proj(h, rule).astype(rule.elementwise), approximate=True)
            return self.unembed(p, rule)

    def __call__(
        self,
        z: Float[Array, "B L F"],
        t: Float[Array, " B"] | float,
        omega: Float[Array, " B"] | float,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "B L D"]:
        """Denoise mode: x̂ for noisy latents ``z`` (``F = D`` or ``2D``) at times ``t`` with SC-CFG scale ω."""
        return constrain_rows(self.denoise_head(self._split_hidden(z, t, omega, False, key)))[: z.shape[0]]

    def decode(
        self,
        z: Float[Array, "B L F"],
        omega: Float[Array, " B"] | float,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "B L V"]:
        """Decode mode at t = 1: vocabulary logits for (nearly) clean latents."""
        return constrain_rows(self.decode_head(self._split_hidden(z, 1.0, omega, True, key)))[: z.shape[0]]


def count_params(model: eqx.Module) -> int:
    """Number of scalar parameters in ``model``; works on abstract models from ``eqx.filter_eval_shape``."""
    is_param = lambda x: eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(model) if is_param(x))


def with_runtime_options(model: eqx.Module, **fields) -> eqx.Module:
    """``model`` (ELF, or a baseline network built from an :class:`ELFConfig`) with the same weights and other runtime settings of its :class:`ELFConfig`
    (``compute_dtype``, ``remat``, ``attention``, dropout rates), e.g. ``with_runtime_options(m, compute_dtype="bfloat16")``."""
    unknown = sorted(set(fields) - set(RUNTIME_FIELDS))
    if unknown:
        raise ConfigError(f"with_runtime_options: {unknown} change the architecture; allowed: {sorted(RUNTIME_FIELDS)}")
    config = dataclasses.replace(model.config, **fields)
    template = eqx.filter_eval_shape(type(model), config, key=jax.random.key(0))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), jax.tree_util.tree_leaves(model))
