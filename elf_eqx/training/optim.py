"""Optimizers for ELF: Muon (default, as the reference) or AdamW, behind a global-norm clip.

Muon orthogonalises the updates of the matrix weights; everything else (biases, norm scales,
learned tokens) takes the AdamW branch inside ``optax.contrib.muon``. Our blocks are stacked
along a leading ``depth`` axis, so their kernels are ``(depth, in, out)`` and are orthogonalised
per layer (the depth axis is a batch axis).
"""

from __future__ import annotations

from typing import Literal

import jax
import optax
from optax.contrib import MuonDimensionNumbers

from elf_eqx.model import ELF


def _key_name(entry) -> str:
    return str(getattr(entry, "name", getattr(entry, "key", entry)))


def muon_dimension_numbers(model: ELF):
    """A pytree like ``model`` with :class:`MuonDimensionNumbers` on each matrix weight and
    ``None`` elsewhere (the leaves Muon hands to AdamW)."""

    def rule(path, leaf):
        names = [_key_name(p) for p in path]
        if names[-1] != "weight":
            return None
        stacked = names[0] == "blocks"
        if leaf.ndim == 2 + stacked:
            return MuonDimensionNumbers(reduction_axis=stacked, output_axis=1 + stacked)
        return None

    return jax.tree_util.tree_map_with_path(rule, model)


def make_optimizer(
    model: ELF,
    learning_rate: float | optax.Schedule,
    *,
    name: Literal["muon", "adamw"] = "muon",
    b1: float = 0.9,
    b2: float = 0.95,
    weight_decay: float = 0.0,
    clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """``clip_by_global_norm(clip_norm)`` then Muon (AdamW ``b1``/``b2`` for its non-matrix leaves)
    or plain AdamW, at ``learning_rate`` (a float or an optax schedule)."""
    if name == "muon":
        core = optax.contrib.muon(
            learning_rate,
            weight_decay=weight_decay,
            adam_b1=b1,
            adam_b2=b2,
            adam_weight_decay=weight_decay,
            muon_weight_dimension_numbers=muon_dimension_numbers,
        )
    elif name == "adamw":
        core = optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r} (muon, adamw)")
    return optax.chain(optax.clip_by_global_norm(clip_norm), core) if clip_norm else core
