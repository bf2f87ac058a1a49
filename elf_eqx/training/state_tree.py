"""A state pytree as orbax stores it: a nested dict of its array leaves keyed by path names.

Orbax reconstructs only containers it knows (dicts, lists, tuples); an ``eqx.Module`` or an
optax state would come back as dicts. So we save ``{"model": {"blocks": {...}}, "opt_state":
{"0": ...}}`` and, on restore, put the arrays back into the caller's template, whose own
pytree structure (module classes, static fields, optax state types) is therefore reproduced
exactly. Leaves that are not arrays are not stored; they come from the template. Leaves are
named by :func:`elf_eqx.tree_paths.path_names`, the helper the partition rules use too.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from elf_eqx.tree_paths import dotted, path_names

Nested = dict[str, Any]


def _is_array_like(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct))


def named_leaves(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
    """``(path components, leaf)`` for each array (or ``ShapeDtypeStruct``) leaf of ``tree``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    named = [(path_names(path), leaf) for path, leaf in flat if _is_array_like(leaf)]
    seen: set[tuple[str, ...]] = set()
    for names, _ in named:
        if names in seen:
            raise ValueError(f"two leaves of the state share the checkpoint name {dotted(names)!r}")
        seen.add(names)
    return named


def to_nested(pairs: list[tuple[tuple[str, ...], Any]]) -> Nested:
    """Nested dict from ``(path components, value)`` pairs."""
    root: Nested = {}
    for names, value in pairs:
        node = root
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value
    return root


def flatten_nested(tree: Any) -> dict[tuple[str, ...], Any]:
    """The inverse of :func:`to_nested` for any dict-of-dicts (e.g. orbax's stored metadata)."""
    out: dict[tuple[str, ...], Any] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*prefix, str(k)))
        elif node is not None:
            out[prefix] = node

    walk(tree, ())
    return out


def abstract_leaf(leaf: Any, default_sharding: jax.sharding.Sharding) -> jax.ShapeDtypeStruct:
    """The shape, dtype and placement one template leaf asks for: a concrete array keeps its own
    sharding, a ``ShapeDtypeStruct`` its ``sharding`` when it has one, otherwise ``default_sharding``."""
    sharding = getattr(leaf, "sharding", None)
    if isinstance(leaf, (np.ndarray, np.generic)) or sharding is None:
        sharding = default_sharding
    return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)


def fill_template(template: Any, restored: dict[tuple[str, ...], Any]) -> Any:
    """``template`` with each array leaf replaced by ``restored[its path components]``."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = [
        restored[path_names(path)] if _is_array_like(leaf) else leaf
        for path, leaf in flat
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def misfits(expected: dict[tuple[str, ...], jax.ShapeDtypeStruct], stored: dict[tuple[str, ...], Any]) -> list[str]:
    """Human-readable differences between the leaves a template expects and those stored:
    missing or unexpected parameters, and shape or dtype mismatches (``stored`` values need
    ``.shape`` and ``.dtype``)."""
    problems = []
    for names, want in expected.items():
        have = stored.get(names)
        if have is None:
            problems.append(f"{dotted(names)} missing from the checkpoint (expected {tuple(want.shape)} {want.dtype})")
        elif tuple(have.shape) != tuple(want.shape):
            problems.append(f"{dotted(names)}: checkpoint {tuple(have.shape)} vs expected {tuple(want.shape)}")
        elif np.dtype(have.dtype) != np.dtype(want.dtype):
            problems.append(f"{dotted(names)}: checkpoint dtype {np.dtype(have.dtype)} vs expected {np.dtype(want.dtype)}")
    return problems


def unexpected(expected: dict[tuple[str, ...], Any], stored: dict[tuple[str, ...], Any]) -> list[str]:
    """Names of stored parameters the template has no place for."""
    return [f"{dotted(names)} in the checkpoint but not in the target" for names in stored if names not in expected]
