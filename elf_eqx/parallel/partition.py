"""Which mesh axes each array of a model, optimizer state or encoder is sharded over.

One table, :data:`TENSOR_RULES`, names the matrices split over the ``tensor`` axis; every other
dimension choice is the generic FSDP rule: the largest remaining axis whose size the ``fsdp``
axis divides. The leading ``depth`` axis of stacked blocks is never sharded (``lax.scan`` walks
it). Optimizer-state leaves hold parameter-shaped subtrees whose paths end with the parameter's
path, so the same rules give them the same specs; scalars and arrays no rule can split are
replicated.

The tensor split is *not* head-aligned. A sharding splits a dimension into contiguous chunks,
and the fused kernels hold ``[q | k | v]`` (``qkv``) and ``[a | b]`` (SwiGLU's ``w12``) side by
side, so with ``tensor = 2`` one shard holds all of ``q`` and half of ``k``, and the SwiGLU
halves ``a`` and ``b`` sit on different shards. The numbers are right (GSPMD moves whatever the
reshape into heads and the ``silu(a)·b`` product need), but every block pays those exchanges,
which a head-aligned (Megatron) layout avoids. Reordering the stored columns head by head would
change the parameter layout of every checkpoint already written (same shapes, other meaning),
so we keep the reference layout: ``tensor`` buys memory for the widest matrices; ``fsdp`` is the
axis to scale on.
"""
from __future__ import annotations

import math
import re
from typing import Any

import jax
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

from elf_eqx.parallel.mesh import FSDP_AXIS, TENSOR_AXIS

# (pattern on the dotted leaf path, dimension split over "tensor", counted from the end).
# qkv/w12 split their output columns (contiguously: not head-aligned, see the module
# docstring), proj/w3 their input rows, unembed (and the baselines' head) its vocabulary axis.
TENSOR_RULES: tuple[tuple[str, int], ...] = (
    (r"blocks\.attn\.qkv\.weight$", -1),
    (r"blocks\.attn\.qkv\.bias$", -1),
    (r"blocks\.attn\.proj\.weight$", -2),
    (r"blocks\.mlp\.w12\.weight$", -1),
    (r"blocks\.mlp\.w12\.bias$", -1),
    (r"blocks\.mlp\.w3\.weight$", -2),
    (r"unembed\.weight$", -1),
    (r"unembed\.bias$", -1),
    (r"(^|\.)head\.weight$", -1),  # the baselines' vocabulary head
    (r"(^|\.)head\.bias$", -1),
)
# Arrays smaller than this stay replicated: sharding them saves no memory worth a collective.
MIN_SHARDED_SIZE = 1 << 14
# Leaves whose leading axis is a stack of layers (never sharded).
STACKED = re.compile(r"(^|\.)(blocks|layers)\.")


def dotted_path(path: tuple[Any, ...]) -> str:
    """``("model", "blocks", "attn", ...)`` key path → ``"model.blocks.attn..."``."""
    parts = []
    for entry in path:
        if isinstance(entry, GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, SequenceKey):
            parts.append(str(entry.idx))
        else:
            parts.append(str(getattr(entry, "key", getattr(entry, "name", entry))))
    return ".".join(parts)


def leaf_spec(name: str, shape: tuple[int, ...], mesh: Mesh | AbstractMesh, *, tensor_rules: bool = True) -> PartitionSpec:
    """The :class:`PartitionSpec` of one array named ``name`` (dotted path) of ``shape`` (only the
    mesh's axis sizes are read, so an :class:`AbstractMesh` serves too)."""
    axes: list[Any] = [None] * len(shape)
    if len(shape) == 0 or math.prod(shape) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    first = 1 if STACKED.search(name) and len(shape) > 1 else 0
    tensor = mesh.shape.get(TENSOR_AXIS, 1)
    if tensor_rules and tensor > 1:
        for pattern, dim in TENSOR_RULES:
            if re.search(pattern, name) and len(shape) + dim >= first and shape[dim] % tensor == 0:
                axes[len(shape) + dim] = TENSOR_AXIS
                break
    fsdp = mesh.shape.get(FSDP_AXIS, 1)
    if fsdp > 1:
        free = [i for i in range(first, len(shape)) if axes[i] is None and shape[i] % fsdp == 0]
        if free:
            axes[max(free, key=lambda i: (shape[i], -i))] = FSDP_AXIS
    return PartitionSpec(*axes)


def tree_shardings(tree: Any, mesh: Mesh, *, tensor_rules: bool = True) -> Any:
    """A pytree like ``tree`` with a :class:`NamedSharding` on every array (or
    ``ShapeDtypeStruct``) leaf, ``None`` elsewhere."""

    def one(path, leaf):
        shape = getattr(leaf, "shape", None)
        if shape is None or not hasattr(leaf, "dtype"):
            return None
        return NamedSharding(mesh, leaf_spec(dotted_path(path), tuple(shape), mesh, tensor_rules=tensor_rules))

    return jax.tree_util.tree_map_with_path(one, tree)


def replicated_shardings(tree: Any, mesh: Mesh) -> Any:
    """Every array leaf of ``tree`` replicated over ``mesh``."""
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda leaf: whole if hasattr(leaf, "shape") else None, tree)
