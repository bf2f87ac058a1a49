"""The GPT-2 judge for generative perplexity (docs/method.md#evaluation).

A GPT-2-family causal LM (learned positions, pre-LN blocks, tanh GELU, LM head tied to the token
embedding) loaded from a Hugging Face ``GPT2LMHeadModel`` checkpoint, and the scoring rule of the
generative-perplexity convention: token ``i ≥ 1`` is scored by ``−log p(x_i | x_<i)`` when it is
not padding and is either not EOS or the row's first EOS; the corpus figure is
``exp(Σ NLL / Σ counted tokens)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from elf_eqx.nn.norm import LayerNorm
from elf_eqx.encoders.layers import activation, attend, scan_layers, split_heads
from elf_eqx.encoders.sources import read_config, resolve_source
from elf_eqx.encoders.weights import Slot, fill_module, shape_template, strip_prefix
from elf_eqx.encoders.load import auto_tokenizer
from elf_eqx.errors import IncompatibleModelError
from elf_eqx.io.safetensors_io import read_safetensors_folder
from elf_eqx.nn import Linear

JUDGE_MAX_LENGTH = 1024


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """The fields of a Hugging Face ``GPT2Config`` that the judge uses."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    eos_token_id: int = 50256

    @property
    def inner(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @staticmethod
    def from_hf(config: Mapping[str, Any]) -> "GPT2Config":
        """From a GPT-2 ``config.json`` dict; options that change the attention are refused."""
        for option in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if config.get(option, False):
                raise IncompatibleModelError(f"GPT-2 judge: {option}=True is not supported")
        if not config.get("scale_attn_weights", True):
            raise IncompatibleModelError("GPT-2 judge: scale_attn_weights=False is not supported")
        try:
            activation(config.get("activation_function", "gelu_new"))
        except ValueError as err:
            raise IncompatibleModelError(f"GPT-2 judge: {err}") from None
        fields = {f.name for f in dataclasses.fields(GPT2Config)}
        known = {k: v for k, v in config.items() if k in fields and v is not None}
        return GPT2Config(**{**known, "n_inner": config.get("n_inner")})


class GPT2Block(eqx.Module):
    """Pre-LN block: ``x += Attn(LN(x)); x += MLP(LN(x))`` with causal attention."""

    ln_1: LayerNorm
    c_attn: Linear
    attn_proj: Linear
    ln_2: LayerNorm
    c_fc: Linear
    mlp_proj: Linear
    num_heads: int = eqx.field(static=True)
    act: str = eqx.field(static=True)

    def __init__(self, config: GPT2Config, *, key: PRNGKeyArray):
        d = config.n_embd
        ka, kp, kf, km = jax.random.split(key, 4)
        self.ln_1 = LayerNorm(d, config.layer_norm_epsilon, axis="embed")
        self.c_attn = Linear(d, 3 * d, key=ka, init="normal", in_axis="embed", out_axis="qkv")
        self.attn_proj = Linear(d, d, key=kp, init="normal", in_axis="heads", out_axis="embed")
        self.ln_2 = LayerNorm(d, config.layer_norm_epsilon, axis="embed")
        self.c_fc = Linear(d, config.inner, key=kf, init="normal", in_axis="embed", out_axis="mlp")
        self.mlp_proj = Linear(config.inner, d, key=km, init="normal", in_axis="mlp", out_axis="embed")
        self.num_heads = config.n_head
        self.act = config.activation_function

    def __call__(self, x: Float[Array, "B L D"], mask: Bool[Array, "B L L"]) -> Float[Array, "B L D"]:
        """``(B, L, D)`` to ``(B, L, D)``; ``mask`` is the causal-and-padding ``(B, L, L)`` mask."""
        q, k, v = jnp.split(self.c_attn(self.ln_1(x)), 3, axis=-1)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        x = x + self.attn_proj(attend(q, k, v, mask, scale=q.shape[-1] ** -0.5))
        return x + self.mlp_proj(activation(self.act)(self.c_fc(self.ln_2(x))))


class GPT2(eqx.Module):
    """GPT-2 causal LM: ``(input_ids (B, L), padding mask (B, L)) -> logits (B, L, V)``."""

    config: GPT2Config = eqx.field(static=True)
    wte: Float[Array, "V D"]
    wpe: Float[Array, "P D"]
    blocks: GPT2Block  # stacked over a leading layer axis
    ln_f: LayerNorm
    # The logical axes of the arrays held here (elf_eqx/nn/axes.py); wte is also the tied LM head.
    logical_axes: ClassVar[dict[str, tuple[str, ...]]] = {"wte": ("vocab_rows", "embed"), "wpe": ("positions", "embed")}

    def __init__(self, config: GPT2Config, *, key: PRNGKeyArray):
        """Random weights (for tests and benchmarks); real ones come from :func:`load_judge`."""
        kt, kp, kb = jax.random.split(key, 3)
        self.config = config
        self.wte = 0.02 * jax.random.normal(kt, (config.vocab_size, config.n_embd), jnp.float32)
        self.wpe = 0.01 * jax.random.normal(kp, (config.n_positions, config.n_embd), jnp.float32)
        self.blocks = eqx.filter_vmap(lambda k: GPT2Block(config, key=k))(jax.random.split(kb, config.n_layer))
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon, axis="embed")

    def __call__(
        self,
        input_ids: Int[Array, "B L"],
        attention_mask: Bool[Array, "B L"] | None = None,
        compute_dtype: Any = jnp.float32,
    ) -> Float[Array, "B L V"]:
        """Next-token logits ``(B, L, V)`` in float32 for right-padded ``input_ids (B, L)``
        (positions ``0..L-1``); ``attention_mask (B, L)`` marks real tokens. The blocks run in
        ``compute_dtype`` (e.g. ``jnp.bfloat16``); norms, softmax and logits accumulate in float32."""
        batch, length = input_ids.shape
        if length > self.config.n_positions:
            raise ValueError(f"GPT-2 judge: length {length} exceeds n_positions {self.config.n_positions}")
        causal = jnp.tril(jnp.ones((length, length), bool))
        valid = jnp.ones((batch, length), bool) if attention_mask is None else attention_mask
        mask = causal[None] & valid[:, None, :]
        x = (jnp.take(self.wte, input_ids, axis=0) + self.wpe[:length]).astype(compute_dtype)
        x = scan_layers(self.blocks, x, lambda block, h: block(h, mask))
        h = self.ln_f(x)
        return jnp.einsum("bld,vd->blv", h, self.wte.astype(compute_dtype), preferred_element_type=jnp.float32)


def token_nll(
    judge: GPT2,
    input_ids: Int[Array, "B L"],
    attention_mask: Bool[Array, "B L"],
    compute_dtype: Any = jnp.float32,
) -> Float[Array, "B L"]:
    """``nll[:, i] = −log p(x_i | x_<i)`` for ``i ≥ 1``; column 0 (nothing to condition on) is 0."""
    logits = judge(input_ids, attention_mask, compute_dtype)[:, :-1]
    targets = input_ids[:, 1:]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - picked
    return jnp.pad(nll, ((0, 0), (1, 0)))


def scoring_mask(
    input_ids: Int[Array, "B L"], attention_mask: Bool[Array, "B L"], eos_id: int
) -> Bool[Array, "B L"]:
    """Tokens that count: positions ``1..L-1`` that are not padding and are either not EOS or the
    first EOS of their row (an EOS at position 0 counts as the first, as in the convention)."""
    is_eos = input_ids == eos_id
    first_eos = is_eos & (jnp.cumsum(is_eos, axis=-1) == 1)
    counted = attention_mask & (~is_eos | first_eos)
    return counted.at[:, 0].set(False)


@eqx.filter_jit
def judge_nll(
    judge: GPT2,
    input_ids: Int[Array, "B L"],
    attention_mask: Bool[Array, "B L"],
    eos_id: int,
    compute_dtype: Any = jnp.float32,
) -> tuple[Float[Array, "B L"], Bool[Array, "B L"]]:
    """Jitted ``(nll (B, L), counted (B, L))``: :func:`token_nll` and :func:`scoring_mask`."""
    nll = token_nll(judge, input_ids, attention_mask, compute_dtype)
    return nll, scoring_mask(input_ids, attention_mask, eos_id)


# The one table between our GPT2 leaves and Hugging Face GPT2Model names (loader and export).
GPT2_BLOCK_NAMES = {"ln_1": "ln_1", "c_attn": "attn.c_attn", "attn_proj": "attn.c_proj",
                    "ln_2": "ln_2", "c_fc": "mlp.c_fc", "mlp_proj": "mlp.c_proj"}
"""Our :class:`GPT2Block` layer → its Hugging Face name inside ``h.<i>.``."""


def gpt2_weight_names(config: GPT2Config) -> tuple[dict[str, Callable[[GPT2], Any]], dict[str, Slot]]:
    """``(leaves, slots)`` of :func:`elf_eqx.encoders.weights.fill_module` for a GPT-2 of ``config``:
    every Hugging Face ``GPT2Model`` tensor name (no ``transformer.`` prefix) and the leaf (and
    layer) it fills. Conv1D weights are already ``(in, out)``, so nothing is transposed."""
    leaves: dict[str, Callable[[GPT2], Any]] = {
        "wte": lambda m: m.wte, "wpe": lambda m: m.wpe,
        "ln_f.w": lambda m: m.ln_f.weight, "ln_f.b": lambda m: m.ln_f.bias,
    }
    slots = {"wte.weight": Slot("wte"), "wpe.weight": Slot("wpe"),
             "ln_f.weight": Slot("ln_f.w"), "ln_f.bias": Slot("ln_f.b")}
    for leaf in GPT2_BLOCK_NAMES:
        leaves[f"{leaf}.w"] = lambda m, leaf=leaf: getattr(m.blocks, leaf).weight
        leaves[f"{leaf}.b"] = lambda m, leaf=leaf: getattr(m.blocks, leaf).bias
    for i in range(config.n_layer):
        for leaf, hf in GPT2_BLOCK_NAMES.items():
            slots[f"h.{i}.{hf}.weight"] = Slot(f"{leaf}.w", i)
            slots[f"h.{i}.{hf}.bias"] = Slot(f"{leaf}.b", i)
    return leaves, slots


def gpt2_from_hf_tensors(
    config: GPT2Config, tensors: Mapping[str, np.ndarray], *, what: str = "GPT-2 checkpoint", dtype: Any = jnp.float32
) -> GPT2:
    """The judge from Hugging Face ``GPT2LMHeadModel``/``GPT2Model`` tensors (``transformer.``
    prefix optional; names in :func:`gpt2_weight_names`); ``lm_head`` is tied to ``wte``."""
    tensors = strip_prefix(tensors, ("transformer.",))
    leaves, slots = gpt2_weight_names(config)
    template = shape_template(lambda k: GPT2(config, key=k))

    def ignore(name: str) -> bool:  # tied head and old causal-mask buffers
        return name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias"))

    return fill_module(template, leaves, slots, tensors, what=what, dtype=dtype, ignore=ignore)


def load_judge(source: str | Path, *, dtype: Any = jnp.float32) -> GPT2:
    """The GPT-2 judge from a hub id (e.g. ``openai-community/gpt2-large``) or a local folder
    holding ``config.json`` + ``model.safetensors``; parameters are cast to ``dtype``."""
    path = resolve_source(source)
    raw = read_config(path)
    if raw.get("model_type") != "gpt2":
        raise IncompatibleModelError(f"{source}: the judge must be a GPT-2 checkpoint, "
                                     f"got model_type {raw.get('model_type')!r}")
    return gpt2_from_hf_tensors(GPT2Config.from_hf(raw), read_safetensors_folder(path),
                                what=f"GPT-2 checkpoint {source}", dtype=dtype)


def load_judge_tokenizer(source: str | Path) -> Any:
    """The judge's tokenizer (``transformers.AutoTokenizer``) from the same hub id or folder."""
    return auto_tokenizer(resolve_source(source), source, "the judge's tokenizer")
