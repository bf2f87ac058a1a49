"""Name mapping between the ELF reference release's parameters and :class:`elf_eqx.model.ELF`.

Reference names (docs/method.md#network) are ``/``-joined Flax paths with kernels stored ``(in, out)``,
the layout of our :class:`~elf_eqx.nn.Linear`, so only the stacking of ``blocks_{i}`` and the
``(1, n, H)`` token tables need reshaping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from elf_eqx.config import ELFConfig
from elf_eqx.errors import BadWeightsError, IncompatibleModelError
from elf_eqx.release.checkpoint import WEIGHT_ENTRIES, read_release_weights
from elf_eqx.model import ELF

# reference name -> where it lives in ELF (top-level, not per block)
_TOP: dict[str, Callable[[ELF], Any]] = {
    "self_cond_proj/kernel": lambda m: m.self_cond_proj.weight,
    "self_cond_proj/bias": lambda m: m.self_cond_proj.bias,
    "text_proj/proj1/kernel": lambda m: m.text_proj1.weight,
    "text_proj/proj2/kernel": lambda m: m.text_proj2.weight,
    "text_proj/proj2/bias": lambda m: m.text_proj2.bias,
    "t_embedder/mlp_0/kernel": lambda m: m.t_embedder.mlp_0.weight,
    "t_embedder/mlp_0/bias": lambda m: m.t_embedder.mlp_0.bias,
    "t_embedder/mlp_2/kernel": lambda m: m.t_embedder.mlp_2.weight,
    "t_embedder/mlp_2/bias": lambda m: m.t_embedder.mlp_2.bias,
    "self_cond_cfg_embedder/mlp_0/kernel": lambda m: m.sc_cfg_embedder.mlp_0.weight,
    "self_cond_cfg_embedder/mlp_0/bias": lambda m: m.sc_cfg_embedder.mlp_0.bias,
    "self_cond_cfg_embedder/mlp_2/kernel": lambda m: m.sc_cfg_embedder.mlp_2.weight,
    "self_cond_cfg_embedder/mlp_2/bias": lambda m: m.sc_cfg_embedder.mlp_2.bias,
    "t_emb_tokens": lambda m: m.time_tokens,
    "self_cond_cfg_tokens": lambda m: m.sc_cfg_tokens,
    "mode_tokens": lambda m: m.mode_tokens,
    "final_layer/norm_final/weight": lambda m: m.final_norm.weight,
    "final_layer/linear/kernel": lambda m: m.final_linear.weight,
    "final_layer/linear/bias": lambda m: m.final_linear.bias,
    "proj_kernel": lambda m: m.decoder_proj.weight,
    "proj_bias": lambda m: m.decoder_proj.bias,
    "unembed_kernel": lambda m: m.unembed.weight,
    "unembed_bias": lambda m: m.unembed.bias,
}

# per-block reference name (under blocks_{i}/) -> the stacked leaf in ELF.blocks
_BLOCK: dict[str, Callable[[ELF], Any]] = {
    "norm1/weight": lambda m: m.blocks.norm1.weight,
    "norm2/weight": lambda m: m.blocks.norm2.weight,
    "attn/qkv/kernel": lambda m: m.blocks.attn.qkv.weight,
    "attn/qkv/bias": lambda m: m.blocks.attn.qkv.bias,
    "attn/proj/kernel": lambda m: m.blocks.attn.proj.weight,
    "attn/proj/bias": lambda m: m.blocks.attn.proj.bias,
    "attn/q_norm/weight": lambda m: m.blocks.attn.q_norm.weight,
    "attn/k_norm/weight": lambda m: m.blocks.attn.k_norm.weight,
    "mlp/w12/kernel": lambda m: m.blocks.mlp.w12.weight,
    "mlp/w12/bias": lambda m: m.blocks.mlp.w12.bias,
    "mlp/w3/kernel": lambda m: m.blocks.mlp.w3.weight,
    "mlp/w3/bias": lambda m: m.blocks.mlp.w3.bias,
}


def _reference_depth(flat: Mapping[str, np.ndarray]) -> int:
    indices = {int(name.split("/")[0].removeprefix("blocks_")) for name in flat if name.startswith("blocks_")}
    if indices != set(range(len(indices))):
        raise BadWeightsError(f"reference parameters have non-contiguous block indices {sorted(indices)}")
    return len(indices)


def config_from_reference(flat: Mapping[str, np.ndarray], **overrides) -> ELFConfig:
    """Infer the :class:`ELFConfig` of reference parameters from their shapes.

    ``num_heads`` comes from the q-norm size (the head dimension); ``mlp_ratio`` 4 is checked
    against the SwiGLU width. Fields passed in ``overrides`` win over inferred ones.
    """
    required = ["t_emb_tokens", "proj_kernel", "unembed_kernel", "text_proj/proj1/kernel",
                "blocks_0/attn/q_norm/weight", "blocks_0/mlp/w3/kernel", "self_cond_cfg_tokens", "mode_tokens"]
    missing = [n for n in required if n not in flat]
    if missing:
        raise BadWeightsError(f"not an ELF parameter set: missing {missing}")
    hidden = flat["t_emb_tokens"].shape[-1]
    head_dim = flat["blocks_0/attn/q_norm/weight"].shape[0]
    inferred = dict(
        depth=_reference_depth(flat),
        hidden_size=hidden,
        num_heads=hidden // head_dim,
        encoder_dim=flat["proj_kernel"].shape[1],
        vocab_size=flat["unembed_kernel"].shape[1],
        bottleneck_dim=flat["text_proj/proj1/kernel"].shape[1],
        num_time_tokens=flat["t_emb_tokens"].shape[-2],
        num_sc_cfg_tokens=flat["self_cond_cfg_tokens"].shape[-2],
        num_mode_tokens=flat["mode_tokens"].shape[-2],
    )
    config = ELFConfig(**{**inferred, **overrides})
    mlp_hidden = flat["blocks_0/mlp/w3/kernel"].shape[0]
    if config.mlp_hidden != mlp_hidden:
        raise IncompatibleModelError(
            f"SwiGLU width {mlp_hidden} in the checkpoint does not match mlp_ratio={config.mlp_ratio} "
            f"(which gives {config.mlp_hidden}); pass mlp_ratio explicitly"
        )
    return config


def _expected_reference_shapes(template: ELF) -> dict[str, tuple[tuple[int, ...], Callable[[ELF], Any], int | None]]:
    """reference name -> (expected shape, where in ELF, block index or None)."""
    table: dict[str, tuple[tuple[int, ...], Callable[[ELF], Any], int | None]] = {}
    for name, where in _TOP.items():
        shape = tuple(where(template).shape)
        if name in ("t_emb_tokens", "self_cond_cfg_tokens", "mode_tokens"):
            shape = (1, *shape)
        table[name] = (shape, where, None)
    for i in range(template.config.depth):
        for sub, where in _BLOCK.items():
            table[f"blocks_{i}/{sub}"] = (tuple(where(template).shape[1:]), where, i)
    return table


def model_from_reference_params(flat: Mapping[str, np.ndarray], config: ELFConfig | None = None) -> ELF:
    """Build an :class:`ELF` holding the reference parameters ``flat`` (``/``-joined names).

    Every missing, unexpected or wrongly shaped name is reported at once, with both shapes.
    """
    config = config or config_from_reference(flat)
    template = eqx.filter_eval_shape(lambda k: ELF(config, key=k), jax.random.key(0))
    table = _expected_reference_shapes(template)
    problems = [f"missing {n} {shape}" for n, (shape, _, _) in table.items() if n not in flat]
    problems += [f"unexpected {n} {tuple(np.shape(v))}" for n, v in flat.items() if n not in table]
    problems += [
        f"{n}: checkpoint {tuple(np.shape(flat[n]))} vs model {shape}"
        for n, (shape, _, _) in table.items()
        if n in flat and tuple(np.shape(flat[n])) != shape
    ]
    if problems:
        raise IncompatibleModelError("reference parameters do not fit ELF " + repr(config) + ":\n  "
                                     + "\n  ".join(problems))

    leaves, wheres = [], []
    for name, where in _TOP.items():
        value = np.asarray(flat[name], np.float32)
        leaves.append(jnp.asarray(value.reshape(where(template).shape)))
        wheres.append(where)
    for sub, where in _BLOCK.items():
        stacked = np.stack([np.asarray(flat[f"blocks_{i}/{sub}"], np.float32) for i in range(config.depth)])
        leaves.append(jnp.asarray(stacked))
        wheres.append(where)
    model = eqx.tree_at(lambda m: [w(m) for w in wheres], template, leaves)
    return model


def reference_params_from_model(model: ELF) -> dict[str, np.ndarray]:
    """The inverse mapping: ``/``-joined reference names → NumPy arrays (for export and tests)."""
    flat: dict[str, np.ndarray] = {}
    for name, (shape, where, index) in _expected_reference_shapes(model).items():
        value = np.asarray(where(model))
        flat[name] = (value[index] if index is not None else value).reshape(shape)
    return flat


def load_release_checkpoint(path: str | Path, *, which: str = "ema_params1", config: ELFConfig | None = None) -> ELF:
    """An :class:`ELF` from a released checkpoint: a Flax msgpack file (``checkpoint_<step>``) or
    an orbax checkpoint folder of the same dict.

    ``which`` picks ``ema_params1`` (what the reference samples with) or ``params``;
    the optimizer state is ignored. A ``config`` that does not fit lists every difference.
    """
    kinds = {entry: kind for kind, entry in WEIGHT_ENTRIES.items()}
    if which not in kinds:
        raise KeyError(f"{path}: no {which!r} weights to load; a release checkpoint holds {sorted(kinds)}")
    flat = read_release_weights(path, (kinds[which],)).params[kinds[which]]
    return model_from_reference_params(flat, config)
