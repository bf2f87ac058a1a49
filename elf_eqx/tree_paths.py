"""Names of pytree key paths: the one helper behind checkpoint names and partition messages.

A JAX key path (``jax.tree_util.tree_flatten_with_path``) is a tuple of entries: attribute
names of modules and named tuples, dict keys, sequence indices. :func:`path_names` turns it
into strings, ``("model", "blocks", "attn", "qkv", "weight")``; :func:`dotted` joins them as
orbax names parameters, ``"model.blocks.attn.qkv.weight"``.
"""

from __future__ import annotations

from typing import Any

from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey


def key_name(entry: Any) -> str:
    """One key-path entry as a string: an attribute's name, a dict key, a sequence index."""
    if isinstance(entry, GetAttrKey):
        return entry.name
    if isinstance(entry, DictKey):
        return str(entry.key)
    if isinstance(entry, SequenceKey):
        return str(entry.idx)
    if isinstance(entry, FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    """A key path as its names: ``(GetAttrKey("model"), GetAttrKey("unembed"), ...)`` → ``("model", "unembed", ...)``."""
    return tuple(key_name(entry) for entry in path)


def dotted(names: tuple[Any, ...]) -> str:
    """Names (or the key path itself) joined by dots: ``("model", "unembed", "weight")`` → ``"model.unembed.weight"``."""
    return ".".join(n if isinstance(n, str) else key_name(n) for n in names)
