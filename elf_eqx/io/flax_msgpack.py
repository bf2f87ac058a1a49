"""Read Flax ``flax.serialization`` msgpack checkpoints without depending on Flax.

Flax writes a nested dict with msgpack; NumPy arrays are msgpack *ext* records:
type 1 holds ``(shape, dtype name, raw bytes)``, type 2 a complex number ``(real, imag)``,
type 3 a NumPy scalar ``(dtype name, raw bytes)``. Arrays above Flax's chunk limit are
stored as ``{"__msgpack_chunked_array__": True, "shape": ..., "chunks": {...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from elf_eqx.errors import BadWeightsError, MissingInputError

_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
_CHUNKED_MARKER = "__msgpack_chunked_array__"


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_NDARRAY:
        shape, dtype_name, buffer = msgpack.unpackb(data, raw=False)
        return np.frombuffer(buffer, dtype=np.dtype(dtype_name)).reshape(shape)
    if code == _EXT_COMPLEX:
        real, imag = msgpack.unpackb(data, raw=False)
        return complex(real, imag)
    if code == _EXT_NPSCALAR:
        dtype_name, buffer = msgpack.unpackb(data, raw=False)
        return np.frombuffer(buffer, dtype=np.dtype(dtype_name))[0]
    return msgpack.ExtType(code, data)


def _unchunk(tree: Any) -> Any:
    """Reassemble arrays that Flax split into chunks, anywhere in the tree."""
    if isinstance(tree, dict):
        if tree.get(_CHUNKED_MARKER) is True:
            chunks = tree["chunks"]
            flat = np.concatenate([np.ravel(chunks[k]) for k in sorted(chunks, key=int)])
            return flat.reshape(tree["shape"])
        return {k: _unchunk(v) for k, v in tree.items()}
    return tree


def read_flax_msgpack(path: str | Path) -> dict[str, Any]:
    """The nested dict stored in a Flax msgpack checkpoint file, arrays as NumPy arrays."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"Flax checkpoint file not found: {path}")
    try:
        tree = msgpack.unpackb(path.read_bytes(), ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException, ValueError) as err:
        hint = " (the file ends early: truncated or incomplete download?)" if "incomplete" in str(err) else ""
        raise BadWeightsError(f"{path} is not a Flax msgpack checkpoint: {err}{hint}") from err
    if not isinstance(tree, dict):
        raise BadWeightsError(f"{path} holds a {type(tree).__name__}, not a Flax checkpoint dict")
    return _unchunk(tree)


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """``{"a": {"b": x}}`` → ``{"a/b": x}`` (the ``/``-joined names the reference release uses)."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name + "/"))
        else:
            flat[name] = np.asarray(value)
    return flat
