"""Which mesh axes each array of a model, optimizer state or encoder is sharded over.

Every layer declares the logical names of its arrays' axes (:mod:`elf_eqx.nn.axes`: a Linear's
``in_axis``/``out_axis``, a norm's ``axis``, ELF's prefix tokens...). One table,
:data:`LOGICAL_AXIS_RULES`, says which mesh axes each logical name may be split over; its rows
are in order of preference. An array's spec is then: ``tensor`` on its most preferred axis
whose name allows ``tensor`` and whose size the ``tensor`` size divides, then ``fsdp`` on its
most preferred remaining axis whose name allows ``fsdp`` and whose size the ``fsdp`` size
divides (falling back down the table when the preferred one does not divide). The leading
``layers`` axis of stacked blocks is never split (``lax.scan`` walks it); scalars and arrays
under :data:`MIN_SHARDED_SIZE` elements are replicated. Optimizer-state leaves and the EMA hold
copies of the model's modules, declarations included, so they get their parameter's spec. An
array big enough to shard whose layer declares no axes is an error, never silently replicated.

With ZeRO-1 (``over_data``: optimizer state only, :mod:`elf_eqx.training.state_sharding`), an
array is also split over ``data``: on its most preferred axis still free whose name allows
``fsdp`` and whose size ``data`` divides, else together with ``fsdp`` (then ``tensor``) on the axis
already split when the product divides it; otherwise it stays whole on every data shard.

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
from typing import Any

import jax
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

from elf_eqx.nn.axes import LAYERS, AxisNames, leaf_axes
from elf_eqx.parallel.mesh import DATA_AXIS, FSDP_AXIS, TENSOR_AXIS
from elf_eqx.tree_paths import dotted, path_names

# Logical axis name -> the mesh axes it may be split over. Rows are in order of preference: an
# array's axis named higher up takes a mesh axis before one named lower down. With tensor > 1,
# qkv and w12 split their output columns (contiguously: not head-aligned, see the module
# docstring), proj and w3 their input rows, unembed (and the baselines' head) its vocabulary;
# fsdp then takes the first remaining axis it divides, in this order.
LOGICAL_AXIS_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vocab", (TENSOR_AXIS, FSDP_AXIS)),   # output logits: unembed, the baselines' head
    ("vocab_rows", (FSDP_AXIS,)),          # rows of a token-embedding table
    ("mlp", (TENSOR_AXIS, FSDP_AXIS)),     # MLP hidden width: w12 columns, w3 rows
    ("qkv", (TENSOR_AXIS, FSDP_AXIS)),     # fused [q | k | v] columns
    ("heads", (TENSOR_AXIS, FSDP_AXIS)),   # heads × head_dim: proj rows (q, k, v columns of the encoders)
    ("positions", (FSDP_AXIS,)),           # rows of a learned position table
    ("latent_pair", (FSDP_AXIS,)),         # concat(z, x̂_prev): the self-conditioning input
    ("embed", (FSDP_AXIS,)),               # the model width (hidden size H, d_model)
    ("latent", (FSDP_AXIS,)),              # the encoder's latent width D
    ("freq", (FSDP_AXIS,)),                # sinusoidal features of a scalar embedder
    ("bottleneck", (FSDP_AXIS,)),          # ELF's D -> 128 -> H input bottleneck
    ("prefix", ()),                        # ELF's learned time / SC-CFG / mode tokens
    ("head_dim", ()),                      # per-head q/k norms
    ("token_types", ()),                   # BERT's token-type rows
    ("buckets", ()),                       # T5's relative-position buckets
    ("attn_heads", ()),                    # one column per head (T5's relative bias)
    (LAYERS, ()),                          # stacked blocks: lax.scan walks this axis
)
_RANK = {name: rank for rank, (name, _) in enumerate(LOGICAL_AXIS_RULES)}
_MESH_AXES = dict(LOGICAL_AXIS_RULES)
# Arrays smaller than this stay replicated: sharding them saves no memory worth a collective.
MIN_SHARDED_SIZE = 1 << 14


def _with_data(axes: list, names: AxisNames, shape: tuple[int, ...], mesh: Mesh | AbstractMesh) -> None:
    """Add the ``data`` axis to ``axes`` (in place) as ZeRO-1 places it (see the module docstring)."""
    size = mesh.shape.get(DATA_AXIS, 1)
    if size <= 1:
        return
    allowed = [i for i, n in enumerate(names) if FSDP_AXIS in _MESH_AXES[n]]
    free = [i for i in allowed if axes[i] is None and shape[i] % size == 0]
    if free:
        axes[min(free, key=lambda i: (_RANK[names[i]], i))] = DATA_AXIS
        return
    for taken in (FSDP_AXIS, TENSOR_AXIS):
        for i, axis in enumerate(axes):
            if axis == taken and shape[i] % (size * mesh.shape[taken]) == 0:
                axes[i] = (taken, DATA_AXIS)
                return


def leaf_spec(
    names: AxisNames, shape: tuple[int, ...], mesh: Mesh | AbstractMesh, *, tensor_rules: bool = True,
    over_data: bool = False,
) -> PartitionSpec:
    """The :class:`PartitionSpec` of an array of ``shape`` whose axes have the logical ``names``
    (only the mesh's axis sizes are read, so an :class:`AbstractMesh` serves too).
    ``tensor_rules=False`` leaves the ``tensor`` axis out (fsdp only); ``over_data`` splits it over
    ``data`` too (ZeRO-1, see the module docstring)."""
    if len(names) != len(shape):
        raise ValueError(f"logical axes {names} do not match shape {shape}")
    unknown = [n for n in names if n not in _MESH_AXES]
    if unknown:
        raise ValueError(f"logical axis names {unknown} are not in partition.LOGICAL_AXIS_RULES")
    axes: list[str | None] = [None] * len(shape)
    if len(shape) == 0 or math.prod(shape) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    for mesh_axis in ((TENSOR_AXIS,) if tensor_rules else ()) + (FSDP_AXIS,):
        size = mesh.shape.get(mesh_axis, 1)
        if size <= 1:
            continue
        free = [i for i, n in enumerate(names)
                if axes[i] is None and mesh_axis in _MESH_AXES[n] and shape[i] % size == 0]
        if free:
            axes[min(free, key=lambda i: (_RANK[names[i]], i))] = mesh_axis
    if over_data:
        _with_data(axes, names, shape, mesh)
    return PartitionSpec(*axes)


def _is_array(leaf: Any) -> bool:
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype")


def _leaf_specs(tree: Any, mesh: Mesh | AbstractMesh, tensor_rules: bool,
                over_data: bool = False) -> list[tuple[str, PartitionSpec | None]]:
    """``(dotted path, spec)`` for every leaf of ``tree`` in leaf order (spec ``None``: not an array)."""
    out, undeclared = [], []
    for path, leaf, names in leaf_axes(tree):
        name = dotted(path_names(path))
        if not _is_array(leaf):
            out.append((name, None))
            continue
        shape = tuple(leaf.shape)
        if names is not None:
            out.append((name, leaf_spec(names, shape, mesh, tensor_rules=tensor_rules, over_data=over_data)))
            continue
        if len(shape) and math.prod(shape) >= MIN_SHARDED_SIZE:
            undeclared.append(f"{name} {shape}")
        out.append((name, PartitionSpec()))  # a step count, a small optimizer constant
    if undeclared:
        raise ValueError("arrays whose layers declare no logical axes (give the layer its names, "
                         "elf_eqx/nn/axes.py): " + "; ".join(undeclared))
    return out


def tree_specs(tree: Any, mesh: Mesh | AbstractMesh, *, tensor_rules: bool = True,
               over_data: bool = False) -> dict[str, PartitionSpec]:
    """``{dotted path: spec}`` of every array (or ``ShapeDtypeStruct``) leaf of ``tree``. Raises
    ``ValueError`` naming every array of at least :data:`MIN_SHARDED_SIZE` elements whose layer
    declares no logical axes; smaller undeclared ones (step counts) are replicated."""
    return {name: spec for name, spec in _leaf_specs(tree, mesh, tensor_rules, over_data) if spec is not None}


def tree_shardings(tree: Any, mesh: Mesh, *, tensor_rules: bool = True, over_data: bool = False) -> Any:
    """A pytree like ``tree`` with a :class:`NamedSharding` on every array (or
    ``ShapeDtypeStruct``) leaf, ``None`` elsewhere; the specs of :func:`tree_specs` (``over_data``:
    split over ``data`` too, ZeRO-1)."""
    leaves = [None if spec is None else NamedSharding(mesh, spec)
              for _, spec in _leaf_specs(tree, mesh, tensor_rules, over_data)]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), leaves)


def replicated_shardings(tree: Any, mesh: Mesh) -> Any:
    """Every array leaf of ``tree`` replicated over ``mesh``."""
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda leaf: whole if hasattr(leaf, "shape") else None, tree)
