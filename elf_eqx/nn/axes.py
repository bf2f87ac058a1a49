"""Logical axis names: what each axis of each parameter array means.

Every layer that holds arrays declares, in a ``logical_axes`` attribute, a mapping from the
names of its own array fields to the logical names of their axes: ``Linear`` gives
``{"weight": (in_axis, out_axis), "bias": (out_axis,)}`` with the names its owner chose, a norm
``{"weight": ("embed",)}``, ELF its learned prefix tokens. Sub-layers declare their own arrays.
:mod:`elf_eqx.parallel.partition` maps the names to mesh axes with one table, so where an array
is placed follows from the layer that holds it, not from the attribute path that leads to it.

Stacked layers (blocks built by ``filter_vmap``, run under ``lax.scan``) keep the declaration of
one layer; their arrays have one more axis in front, which :func:`leaf_axes` names
:data:`LAYERS`. Optimizer states (Muon's momentum, Adam's moments) and the EMA hold copies of
the model's modules, declarations included, so their leaves get the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax

AxisNames = tuple[str, ...]

LAYERS = "layers"
"""The leading axis of stacked layers (the one ``lax.scan`` walks)."""


def declares_axes(node: Any) -> bool:
    """Whether ``node`` is a module that declares the logical axes of its arrays."""
    return isinstance(node, eqx.Module) and isinstance(getattr(node, "logical_axes", None), Mapping)


def _names_for(declared: Mapping[str, AxisNames], path: tuple[Any, ...], leaf: Any) -> AxisNames | None:
    """The names of the array reached from a declaring module by ``path`` (one attribute step), with
    :data:`LAYERS` in front when the array has one axis more than declared (a stacked layer)."""
    if len(path) != 1 or not isinstance(path[0], jax.tree_util.GetAttrKey) or path[0].name not in declared:
        return None
    names = tuple(declared[path[0].name])
    ndim = len(getattr(leaf, "shape", ()))
    if ndim == len(names) + 1:
        return (LAYERS, *names)
    if ndim != len(names):
        raise ValueError(f"the logical axes {names} declared for {path[0].name!r} do not fit its shape "
                         f"{tuple(leaf.shape)}")
    return names


def leaf_axes(tree: Any) -> list[tuple[tuple[Any, ...], Any, AxisNames | None]]:
    """``(key path, leaf, logical axis names or None)`` for every leaf of ``tree``, in the order of
    ``jax.tree_util.tree_leaves(tree)``. ``None``: no enclosing layer declares that leaf (optimizer
    step counts, or a layer that forgot to declare)."""
    out: list[tuple[tuple[Any, ...], Any, AxisNames | None]] = []

    def walk(node: Any, prefix: tuple[Any, ...]) -> None:
        declared = node.logical_axes if declares_axes(node) else None
        stop = lambda x: x is not node and declares_axes(x)  # noqa: E731  (sub-layers declare their own)
        for path, leaf in jax.tree_util.tree_flatten_with_path(node, is_leaf=stop)[0]:
            if stop(leaf):
                walk(leaf, prefix + path)
            else:
                names = _names_for(declared, path, leaf) if declared is not None else None
                out.append((prefix + path, leaf, names))

    walk(tree, ())
    return out
