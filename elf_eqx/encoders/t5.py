"""The T5 encoder stack (T5, T5 v1.1, mT5) as a frozen text encoder (docs/method.md#latents).

Pre-norm blocks ``x += Attn(RMSNorm(x)); x += FFN(RMSNorm(x))``; attention has no biases and no
``1/sqrt(d_kv)`` scaling (T5 folds it into the initialisation); a learned relative-position bias
is computed once from layer 0's table and added in every layer; a final RMSNorm; no dropout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from elf_eqx.encoders.layers import activation, attend, pair_mask, scan_layers, split_heads
from elf_eqx.nn import Linear, RMSNorm
from elf_eqx.precision import scope


@dataclasses.dataclass(frozen=True)
class T5Config:
    """The fields of a Hugging Face ``T5Config`` that the encoder stack uses."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dense_act_fn: str = "relu"
    is_gated_act: bool = False
    layer_norm_epsilon: float = 1e-6

    @staticmethod
    def from_hf(config: Mapping[str, Any]) -> "T5Config":
        """From a T5/mT5 ``config.json`` dict. ``feed_forward_proj`` (``relu``, ``gated-gelu``,
        ``gated-silu``...) decides the FFN as Hugging Face does: ``gated-gelu`` means tanh GELU."""
        proj = config.get("feed_forward_proj", "relu")
        parts = proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"unsupported T5 feed_forward_proj {proj!r} (expected ACT or gated-ACT)")
        act = "gelu_new" if proj == "gated-gelu" else parts[-1]
        activation(act)  # fail early on an unknown name
        fields = {f.name for f in dataclasses.fields(T5Config)}
        known = {k: v for k, v in config.items() if k in fields and k not in ("dense_act_fn", "is_gated_act")}
        return T5Config(**known, dense_act_fn=act, is_gated_act=parts[0] == "gated")

    def to_hf(self) -> dict[str, Any]:
        """The ``config.json`` dict of a Hugging Face T5 encoder with these fields (:meth:`from_hf`
        reads it back to this config)."""
        act = "gelu" if self.is_gated_act and self.dense_act_fn == "gelu_new" else self.dense_act_fn
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("dense_act_fn", "is_gated_act")}
        return {"model_type": "t5", "architectures": ["T5EncoderModel"], **fields,
                "feed_forward_proj": f"gated-{act}" if self.is_gated_act else act}


class T5Attention(eqx.Module):
    """Multi-head self-attention without biases or score scaling."""

    q: Linear
    k: Linear
    v: Linear
    o: Linear
    num_heads: int = eqx.field(static=True)

    def __init__(self, config: T5Config, *, key: PRNGKeyArray):
        inner = config.num_heads * config.d_kv
        kq, kk, kv, ko = jax.random.split(key, 4)
        std = config.d_model**-0.5
        heads_in, heads_out = dict(in_axis="embed", out_axis="heads"), dict(in_axis="heads", out_axis="embed")
        self.q = Linear(config.d_model, inner, use_bias=False, key=kq, init="normal", std=std, **heads_in)
        self.k = Linear(config.d_model, inner, use_bias=False, key=kk, init="normal", std=std, **heads_in)
        self.v = Linear(config.d_model, inner, use_bias=False, key=kv, init="normal", std=std, **heads_in)
        self.o = Linear(inner, config.d_model, use_bias=False, key=ko, init="normal", std=inner**-0.5, **heads_out)
        self.num_heads = config.num_heads

    def __call__(
        self, x: Float[Array, "B L D"], mask: Bool[Array, "B L L"], position_bias: Float[Array, "H L L"]
    ) -> Float[Array, "B L D"]:
        """``(B, L, D)`` to ``(B, L, D)``; ``mask[b, i, j]`` lets query i see key j."""
        q, k, v = (split_heads(proj(x), self.num_heads) for proj in (self.q, self.k, self.v))
        return self.o(attend(q, k, v, mask, scale=1.0, bias=position_bias))


class T5FeedForward(eqx.Module):
    """``wo(act(wi(x)))``, or gated ``wo(act(wi(x)) · wi_linear(x))`` (T5 v1.1's ``wi_0``/``wi_1``)."""

    wi: Linear
    wi_linear: Linear | None
    wo: Linear
    act: str = eqx.field(static=True)

    def __init__(self, config: T5Config, *, key: PRNGKeyArray):
        ki, kg, ko = jax.random.split(key, 3)
        d, f = config.d_model, config.d_ff
        self.wi = Linear(d, f, use_bias=False, key=ki, init="normal", std=d**-0.5, in_axis="embed", out_axis="mlp")
        self.wi_linear = (Linear(d, f, use_bias=False, key=kg, init="normal", std=d**-0.5, in_axis="embed",
                                 out_axis="mlp")
                          if config.is_gated_act else None)
        self.wo = Linear(f, d, use_bias=False, key=ko, init="normal", std=f**-0.5, in_axis="mlp", out_axis="embed")
        self.act = config.dense_act_fn

    def __call__(self, x: Float[Array, "B L D"]) -> Float[Array, "B L D"]:
        """``(B, L, D)`` to ``(B, L, D)``."""
        h = activation(self.act)(self.wi(x))
        if self.wi_linear is not None:
            h = h * self.wi_linear(x)
        return self.wo(h)


class T5Layer(eqx.Module):
    """One pre-norm encoder block: self-attention then feed-forward, each with a residual."""

    attn_norm: RMSNorm
    attn: T5Attention
    ffn_norm: RMSNorm
    ffn: T5FeedForward

    def __init__(self, config: T5Config, *, key: PRNGKeyArray):
        ka, kf = jax.random.split(key)
        self.attn_norm = RMSNorm(config.d_model, config.layer_norm_epsilon, axis="embed")
        self.attn = T5Attention(config, key=ka)
        self.ffn_norm = RMSNorm(config.d_model, config.layer_norm_epsilon, axis="embed")
        self.ffn = T5FeedForward(config, key=kf)

    def __call__(
        self, x: Float[Array, "B L D"], mask: Bool[Array, "B L L"], position_bias: Float[Array, "H L L"]
    ) -> Float[Array, "B L D"]:
        """``(B, L, D)`` to ``(B, L, D)``."""
        x = x + self.attn(self.attn_norm(x), mask, position_bias)
        return x + self.ffn(self.ffn_norm(x))


def relative_position_buckets(
    length: int, num_buckets: int, max_distance: int
) -> Int[Array, "L L"]:
    """T5's bidirectional bucket of ``key - query`` for every ``(query, key)`` pair, ``(L, L)``.

    Half the buckets hold positive offsets. Within each half, offsets below ``num_buckets // 4``
    get a bucket each; larger ones share log-spaced buckets up to ``max_distance``. The log is
    taken in float32 and truncated, as the reference (Flax T5) computes it.
    """
    positions = jnp.arange(length)
    offset = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    bucket = jnp.where(offset > 0, half, 0)
    distance = jnp.abs(offset)
    max_exact = half // 2
    safe = jnp.maximum(distance, max_exact).astype(jnp.float32)  # log of 0 never taken
    log_ratio = jnp.log(safe / max_exact) / jnp.log(jnp.float32(max_distance / max_exact))
    large = max_exact + (log_ratio * (half - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, half - 1)
    return bucket + jnp.where(distance < max_exact, distance, large)


class T5Encoder(eqx.Module):
    """The T5 encoder stack: ``(input_ids (B, L), mask) -> last hidden state (B, L, D)``.

    Parameters are held (and the stack computed) in the dtype they were loaded in, float32 by
    default; norms and softmax run in float32 regardless.
    """

    config: T5Config = eqx.field(static=True)
    embedding: Float[Array, "V D"]
    relative_attention_bias: Float[Array, "buckets H"]
    layers: T5Layer  # stacked over a leading layer axis
    final_norm: RMSNorm
    # The logical axes of the arrays held here (elf_eqx/nn/axes.py): one bias column per head.
    logical_axes: ClassVar[dict[str, tuple[str, ...]]] = {
        "embedding": ("vocab_rows", "embed"), "relative_attention_bias": ("buckets", "attn_heads")}

    def __init__(self, config: T5Config, *, key: PRNGKeyArray):
        """Random weights (for tests and benchmarks); real ones come from :mod:`elf_eqx.encoders.load`."""
        ke, kb, kl = jax.random.split(key, 3)
        self.config = config
        self.embedding = jax.random.normal(ke, (config.vocab_size, config.d_model), jnp.float32)
        self.relative_attention_bias = jax.random.normal(
            kb, (config.relative_attention_num_buckets, config.num_heads), jnp.float32
        )
        self.layers = eqx.filter_vmap(lambda k: T5Layer(config, key=k))(jax.random.split(kl, config.num_layers))
        self.final_norm = RMSNorm(config.d_model, config.layer_norm_epsilon, axis="embed")

    @property
    def dim(self) -> int:
        """Width D of the hidden states (``d_model``)."""
        return self.config.d_model

    @property
    def vocab_size(self) -> int:
        """Rows of the token embedding table."""
        return self.config.vocab_size

    @property
    def max_positions(self) -> int | None:
        """None: relative positions put no bound on the length."""
        return None

    def position_bias(self, length: int) -> Float[Array, "H L L"]:
        """The relative-position bias ``(heads, L, L)`` shared by every layer, in float32."""
        with scope("positions"):
            buckets = relative_position_buckets(
                length, self.config.relative_attention_num_buckets, self.config.relative_attention_max_distance
            )
        table = self.relative_attention_bias.astype(jnp.float32)
        return jnp.transpose(table[buckets], (2, 0, 1))

    def __call__(
        self,
        input_ids: Int[Array, "B L"],
        attention_mask: Bool[Array, "B L L"] | Bool[Array, "B L"] | None = None,
        *,
        unroll: bool = False,
    ) -> Float[Array, "B L D"]:
        """Encode ``input_ids (B, L)``; ``attention_mask`` is ``(B, L, L)`` (query×key), a ``(B, L)``
        padding mask, or None (all tokens valid). Returns the final-normed hidden states ``(B, L, D)``. ``unroll``
        runs the layers as an unrolled loop (which XLA's cost analysis counts in full)."""
        batch, length = input_ids.shape
        mask = pair_mask(attention_mask, batch, length)
        bias = self.position_bias(length)
        x = jnp.take(self.embedding, input_ids, axis=0)
        x = scan_layers(self.layers, x, lambda layer, h: layer(h, mask, bias), unroll=unroll)
        return self.final_norm(x)
