"""Pieces shared by the frozen encoders and the GPT-2 judge: activations, masks, attention, layer scan."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from elf_eqx.encoders.latents import expand_padding_mask
from elf_eqx.precision import scope


def _gelu_erf(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)


def _gelu_tanh(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=True)


# Hugging Face ``hidden_act`` / ``dense_act_fn`` / ``activation_function`` names.
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": _gelu_erf,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable[[Array], Array]:
    """The activation function Hugging Face configs call ``name`` (``gelu`` is the exact erf GELU,
    ``gelu_new``/``gelu_pytorch_tanh`` the tanh approximation)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def pair_mask(
    attention_mask: Bool[Array, "B L L"] | Bool[Array, "B L"] | None, batch: int, length: int
) -> Bool[Array, "B L L"]:
    """A ``(B, L, L)`` query×key mask from a pair mask, a ``(B, L)`` padding mask, or None (all valid)."""
    if attention_mask is None:
        return jnp.ones((batch, length, length), bool)
    if attention_mask.ndim == 2:
        return expand_padding_mask(attention_mask)
    return attention_mask


def split_heads(x: Float[Array, "B L HK"], num_heads: int) -> Float[Array, "B L H K"]:
    """``(B, L, H·K)`` to ``(B, L, H, K)``."""
    batch, length, width = x.shape
    return x.reshape(batch, length, num_heads, width // num_heads)


def attend(
    q: Float[Array, "B Lq H K"],
    k: Float[Array, "B Lk H K"],
    v: Float[Array, "B Lk H Kv"],
    mask: Bool[Array, "B Lq Lk"],
    *,
    scale: float,
    bias: Float[Array, "H Lq Lk"] | None = None,
) -> Float[Array, "B Lq H*Kv"]:
    """Softmax attention ``softmax(scale·q·kᵀ + bias)·v`` over keys where ``mask`` holds.

    Scores and softmax run in float32; the weighted sum is in the dtype of ``v``. A row with no
    allowed key attends uniformly (as an additive most-negative mask gives), never NaN.
    """
    with scope("attention_scores"):
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    with scope("softmax"):
        if bias is not None:
            scores = scores + bias[None].astype(jnp.float32)
        scores = jnp.where(mask[:, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    batch, length = out.shape[:2]
    return out.reshape(batch, length, -1)


def scan_layers(
    layers: eqx.Module, x: Float[Array, "B L D"], apply: Callable[[eqx.Module, Array], Array], *,
    unroll: bool = False,
) -> Float[Array, "B L D"]:
    """Run ``x = apply(layer, x)`` through layers stacked on a leading axis, with ``lax.scan`` so
    compile time does not grow with depth (``unroll``: as an unrolled loop, which XLA's cost
    analysis counts in full)."""
    params, static = eqx.partition(layers, eqx.is_array)

    def body(h, layer_params):
        return apply(eqx.combine(layer_params, static), h), None

    out, _ = jax.lax.scan(body, x, params, unroll=unroll)
    return out
