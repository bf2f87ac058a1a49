"""A BERT-family encoder (e.g. sentence-transformers/all-MiniLM-L6-v2) as a frozen text encoder.

Embeddings (word + absolute position + token type 0) → LayerNorm, then post-norm blocks
``x = LN(x + Attn(x)); x = LN(x + FFN(x))`` with biased projections, ``1/sqrt(head_dim)``
score scaling and an exact (erf) GELU by default; no pooler, no dropout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from elf_eqx.nn.norm import LayerNorm
from elf_eqx.encoders.layers import activation, attend, pair_mask, scan_layers, split_heads
from elf_eqx.nn import Linear


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face ``BertConfig`` that the encoder uses."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @staticmethod
    def from_hf(config: Mapping[str, Any]) -> "BertConfig":
        """From a BERT ``config.json`` dict; only absolute position embeddings are supported."""
        kind = config.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"unsupported BERT position_embedding_type {kind!r} (only 'absolute')")
        activation(config.get("hidden_act", "gelu"))
        fields = {f.name for f in dataclasses.fields(BertConfig)}
        return BertConfig(**{k: v for k, v in config.items() if k in fields})


class BertLayer(eqx.Module):
    """One post-norm block: biased self-attention and a feed-forward, each followed by LayerNorm."""

    query: Linear
    key: Linear
    value: Linear
    attn_out: Linear
    attn_norm: LayerNorm
    intermediate: Linear
    output: Linear
    out_norm: LayerNorm
    num_heads: int = eqx.field(static=True)
    act: str = eqx.field(static=True)

    def __init__(self, config: BertConfig, *, key: PRNGKeyArray):
        d, f = config.hidden_size, config.intermediate_size
        kq, kk, kv, ko, ki, kf = jax.random.split(key, 6)
        heads_in, heads_out = dict(in_axis="embed", out_axis="heads"), dict(in_axis="heads", out_axis="embed")
        self.query = Linear(d, d, key=kq, init="normal", **heads_in)
        self.key = Linear(d, d, key=kk, init="normal", **heads_in)
        self.value = Linear(d, d, key=kv, init="normal", **heads_in)
        self.attn_out = Linear(d, d, key=ko, init="normal", **heads_out)
        self.attn_norm = LayerNorm(d, config.layer_norm_eps, axis="embed")
        self.intermediate = Linear(d, f, key=ki, init="normal", in_axis="embed", out_axis="mlp")
        self.output = Linear(f, d, key=kf, init="normal", in_axis="mlp", out_axis="embed")
        self.out_norm = LayerNorm(d, config.layer_norm_eps, axis="embed")
        self.num_heads = config.num_attention_heads
        self.act = config.hidden_act

    def __call__(self, x: Float[Array, "B L D"], mask: Bool[Array, "B L L"]) -> Float[Array, "B L D"]:
        """``(B, L, D)`` to ``(B, L, D)``; ``mask[b, i, j]`` lets query i see key j."""
        q, k, v = (split_heads(proj(x), self.num_heads) for proj in (self.query, self.key, self.value))
        scale = q.shape[-1] ** -0.5
        x = self.attn_norm(x + self.attn_out(attend(q, k, v, mask, scale=scale)))
        return self.out_norm(x + self.output(activation(self.act)(self.intermediate(x))))


class BertEncoder(eqx.Module):
    """A BERT encoder: ``(input_ids (B, L), mask) -> last hidden state (B, L, D)``.

    Token type ids are all 0 and positions are ``0..L-1`` (so ``L ≤ max_position_embeddings``).
    """

    config: BertConfig = eqx.field(static=True)
    word_embeddings: Float[Array, "V D"]
    position_embeddings: Float[Array, "P D"]
    token_type_embeddings: Float[Array, "T D"]
    embed_norm: LayerNorm
    layers: BertLayer  # stacked over a leading layer axis
    # The logical axes of the arrays held here (elf_eqx/nn/axes.py).
    logical_axes: ClassVar[dict[str, tuple[str, ...]]] = {
        "word_embeddings": ("vocab_rows", "embed"), "position_embeddings": ("positions", "embed"),
        "token_type_embeddings": ("token_types", "embed")}

    def __init__(self, config: BertConfig, *, key: PRNGKeyArray):
        """Random weights (for tests and benchmarks); real ones come from :mod:`elf_eqx.encoders.load`."""
        kw, kp, kt, kl = jax.random.split(key, 4)
        d = config.hidden_size
        self.config = config
        self.word_embeddings = 0.02 * jax.random.normal(kw, (config.vocab_size, d), jnp.float32)
        self.position_embeddings = 0.02 * jax.random.normal(kp, (config.max_position_embeddings, d), jnp.float32)
        self.token_type_embeddings = 0.02 * jax.random.normal(kt, (config.type_vocab_size, d), jnp.float32)
        self.embed_norm = LayerNorm(d, config.layer_norm_eps, axis="embed")
        keys = jax.random.split(kl, config.num_hidden_layers)
        self.layers = eqx.filter_vmap(lambda k: BertLayer(config, key=k))(keys)

    @property
    def dim(self) -> int:
        """Width D of the hidden states (``hidden_size``)."""
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        """Rows of the token embedding table."""
        return self.config.vocab_size

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the position table covers (``max_position_embeddings``)."""
        return self.config.max_position_embeddings

    def __call__(
        self,
        input_ids: Int[Array, "B L"],
        attention_mask: Bool[Array, "B L L"] | Bool[Array, "B L"] | None = None,
        *,
        unroll: bool = False,
    ) -> Float[Array, "B L D"]:
        """Encode ``input_ids (B, L)``; ``attention_mask`` is ``(B, L, L)`` (query×key), a ``(B, L)``
        padding mask, or None (all valid). Returns the last hidden states ``(B, L, D)``. ``unroll``
        runs the layers as an unrolled loop (which XLA's cost analysis counts in full)."""
        batch, length = input_ids.shape
        if length > self.max_positions:
            raise ValueError(f"BERT encoder: sequence length {length} exceeds max_position_embeddings "
                             f"{self.max_positions}")
        mask = pair_mask(attention_mask, batch, length)
        x = (jnp.take(self.word_embeddings, input_ids, axis=0)
             + self.position_embeddings[:length] + self.token_type_embeddings[0])
        x = self.embed_norm(x)
        return scan_layers(self.layers, x, lambda layer, h: layer(h, mask), unroll=unroll)
