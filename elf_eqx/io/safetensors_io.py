"""Read ``.safetensors`` weight files (single or sharded) into NumPy, bfloat16 included.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
``{dtype, shape, data_offsets}``, then the raw little-endian bytes. Parsing it directly keeps
bfloat16 checkpoints readable without torch (``ml_dtypes`` ships with JAX).
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import ml_dtypes
import numpy as np

from elf_eqx.errors import BadWeightsError, MissingInputError

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype(bool),
}
INDEX_NAME = "model.safetensors.index.json"


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of one ``.safetensors`` file as NumPy arrays (copied out of the file)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"safetensors file not found: {path}")
    if path.stat().st_size < 8:  # (mmap refuses an empty file)
        raise BadWeightsError(f"{path} is too short to be a safetensors file")
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        header_len = int.from_bytes(data[:8], "little")
        try:
            header = json.loads(data[8 : 8 + header_len])
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadWeightsError(f"{path} is not a safetensors file: bad header ({err})") from err
        base = 8 + header_len
        tensors: dict[str, np.ndarray] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _DTYPES:
                raise BadWeightsError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
            start, end = info["data_offsets"]
            if base + end > len(data):
                raise BadWeightsError(f"{path} ends early at tensor {name} (truncated or incomplete download?)")
            array = np.frombuffer(data[base + start : base + end], dtype=_DTYPES[info["dtype"]])
            tensors[name] = array.reshape(info["shape"]).copy()
    return tensors


def read_safetensors_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a Hugging Face checkpoint folder: ``model.safetensors``, or every shard
    listed in ``model.safetensors.index.json``."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise BadWeightsError(f"{index}: not a safetensors index ({type(err).__name__}: {err})") from None
        files = [folder / shard for shard in shards]
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    else:
        raise MissingInputError(
            f"{folder} holds no model.safetensors (nor {INDEX_NAME}); PyTorch .bin checkpoints are "
            "not read, convert them to safetensors first"
        )
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        tensors.update(read_safetensors(file))
    return tensors
