"""Read and write ``.safetensors`` weight files (single or sharded) as NumPy, bfloat16 included.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
``{dtype, shape, data_offsets}``, then the raw little-endian bytes. Parsing it directly keeps
bfloat16 checkpoints readable without torch (``ml_dtypes`` ships with JAX).

Reading is lazy (:class:`SafetensorsFolder`: the headers first, then one tensor at a time), and
so is writing (:func:`write_safetensors`): the headers are laid out from the tensors' shapes and
dtypes alone, then each tensor is asked for, written and dropped, so a model is never held whole
in memory by either. Sharded folders follow Hugging Face's layout: ``model-00001-of-00003.safetensors``
… and ``model.safetensors.index.json`` (``{"metadata": {"total_size": N}, "weight_map": {name: file}}``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

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
_CODES: dict[np.dtype, str] = {dtype: code for code, dtype in _DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
DEFAULT_SHARD_BYTES = 5 * 1024**3
"""Hugging Face's default largest shard (``save_pretrained(max_shard_size="5GB")``)."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor's name, shape and dtype: all a header needs."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def dtype_code(dtype: Any) -> str:
    """The safetensors name of a NumPy dtype (``F32``, ``BF16``, ...)."""
    dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).byteorder == ">" else np.dtype(dtype)
    if dtype not in _CODES:
        raise ValueError(f"dtype {dtype} cannot be stored in safetensors (known: {sorted(_CODES.values())})")
    return _CODES[dtype]


# -- reading ---------------------------------------------------------------------------------


class SafetensorsFile:
    """One ``.safetensors`` file opened for reading: its header at once, tensors on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingInputError(f"safetensors file not found: {self.path}")
        size = self.path.stat().st_size
        if size < 8:
            raise BadWeightsError(f"{self.path} is too short to be a safetensors file")
        with self.path.open("rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            if header_len > size - 8:
                raise BadWeightsError(f"{self.path} is not a safetensors file: its header length {header_len} "
                                      f"exceeds the file ({size} bytes)")
            raw = handle.read(header_len)
        try:
            header = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadWeightsError(f"{self.path} is not a safetensors file: bad header ({err})") from err
        if not isinstance(header, dict):
            raise BadWeightsError(f"{self.path} is not a safetensors file: its header is no mapping")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._base = 8 + header_len
        self._size = size
        self.entries: dict[str, tuple[TensorInfo, int, int]] = {}
        for name, info in header.items():
            try:
                code, shape, (start, end) = info["dtype"], tuple(int(n) for n in info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError) as err:
                raise BadWeightsError(f"{self.path}: tensor {name} has a bad header entry ({err!r})") from None
            if code not in _DTYPES:
                raise BadWeightsError(f"{self.path}: tensor {name} has unsupported dtype {code}")
            self.entries[name] = (TensorInfo(name, shape, _DTYPES[code]), int(start), int(end))

    def info(self) -> dict[str, TensorInfo]:
        """Every tensor's name, shape and dtype, in the header's order."""
        return {name: entry[0] for name, entry in self.entries.items()}

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name``, read from the file straight into a new array (one copy, nothing mapped)."""
        with self.path.open("rb") as handle:
            return self._read(handle, name)

    def _read(self, handle: Any, name: str) -> np.ndarray:
        info, start, end = self.entries[name]
        array = np.empty(info.shape, info.dtype)
        if end - start != info.nbytes or self._base + end > self._size:
            raise BadWeightsError(f"{self.path} ends early at tensor {name} (truncated or incomplete download?)")
        handle.seek(self._base + start)
        if info.nbytes and handle.readinto(memoryview(array.reshape(-1).view(np.uint8))) != info.nbytes:
            raise BadWeightsError(f"{self.path} ends early at tensor {name} (truncated or incomplete download?)")
        return array

    def read_all(self) -> dict[str, np.ndarray]:
        """All tensors (one pass over the file)."""
        with self.path.open("rb") as handle:
            return {name: self._read(handle, name) for name in self.entries}


class SafetensorsFolder:
    """The weights of a Hugging Face checkpoint folder, ``model.safetensors`` or the shards listed
    in ``model.safetensors.index.json``: every tensor's shape and dtype from the headers alone,
    then :meth:`read` one tensor at a time."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / INDEX_NAME
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise BadWeightsError(f"{index}: not a safetensors index ({type(err).__name__}: {err})") from None
            self.files = [SafetensorsFile(self.folder / shard) for shard in shards]
            listed = {name for file in self.files for name in file.entries}
            missing = sorted(set(weight_map) - listed)
            if missing:
                raise BadWeightsError(f"{index} lists tensors its shards do not hold: {missing[:5]}")
        elif (self.folder / SINGLE_NAME).is_file():
            self.files = [SafetensorsFile(self.folder / SINGLE_NAME)]
        else:
            raise MissingInputError(
                f"{self.folder} holds no {SINGLE_NAME} (nor {INDEX_NAME}); PyTorch .bin checkpoints are "
                "not read, convert them to safetensors first"
            )
        self._where = {name: file for file in self.files for name in file.entries}

    def info(self) -> dict[str, TensorInfo]:
        """Every tensor's name, shape and dtype."""
        return {name: file.entries[name][0] for name, file in self._where.items()}

    def read(self, name: str) -> np.ndarray:
        return self._where[name].read(name)

    def read_all(self) -> dict[str, np.ndarray]:
        tensors: dict[str, np.ndarray] = {}
        for file in self.files:
            tensors.update(file.read_all())
        return tensors


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of one ``.safetensors`` file as NumPy arrays (copied out of the file)."""
    return SafetensorsFile(path).read_all()


def read_safetensors_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a Hugging Face checkpoint folder: ``model.safetensors``, or every shard
    listed in ``model.safetensors.index.json``."""
    return SafetensorsFolder(folder).read_all()


# -- writing ---------------------------------------------------------------------------------


def shard_plan(tensors: Sequence[TensorInfo], max_shard_bytes: int) -> list[list[TensorInfo]]:
    """``tensors`` in order, cut into shards of at most ``max_shard_bytes`` (a tensor larger than
    that is a shard of its own)."""
    shards: list[list[TensorInfo]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def shard_names(count: int) -> list[str]:
    """``model.safetensors``, or Hugging Face's ``model-0000i-of-0000n.safetensors``."""
    if count == 1:
        return [SINGLE_NAME]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def _header(tensors: Sequence[TensorInfo], metadata: Mapping[str, str]) -> bytes:
    """The 8-byte length and the JSON header of a file holding ``tensors`` in order, padded with
    spaces to a multiple of 8 bytes (as the safetensors library writes it)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {"dtype": dtype_code(tensor.dtype), "shape": list(tensor.shape),
                               "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors(
    folder: str | Path,
    tensors: Sequence[TensorInfo],
    read: Callable[[TensorInfo], Any],
    *,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write ``tensors`` into ``folder`` as ``model.safetensors``, or as shards of at most
    ``max_shard_bytes`` with the index file; returns the file names written.

    ``read(info)`` gives one tensor's values (NumPy or a JAX array); each is asked for when its
    turn comes, checked against its ``info``, written and dropped: a model is never held whole.
    """
    folder = Path(folder)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("two tensors share a name")
    shards = shard_plan(tensors, max_shard_bytes)
    files = shard_names(len(shards))
    for file, shard in zip(files, shards):
        with (folder / file).open("wb") as handle:
            handle.write(_header(shard, metadata or {}))
            for tensor in shard:
                array = np.asarray(read(tensor))
                if tuple(array.shape) != tensor.shape or array.dtype != tensor.dtype:
                    raise ValueError(f"tensor {tensor.name} is {array.dtype}{list(array.shape)}, "
                                     f"expected {np.dtype(tensor.dtype)}{list(tensor.shape)}")
                array = np.ascontiguousarray(array, dtype=np.dtype(tensor.dtype).newbyteorder("<"))
                handle.write(array.reshape(-1).view(np.uint8).data)
                del array
    if len(files) > 1:
        weight_map = {t.name: file for file, shard in zip(files, shards) for t in shard}
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}
        (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        files.append(INDEX_NAME)
    return files


def iter_infos(tensors: Mapping[str, Any]) -> Iterator[TensorInfo]:
    """:class:`TensorInfo` of each array (or ``ShapeDtypeStruct``) of ``tensors``."""
    for name, value in tensors.items():
        yield TensorInfo(name, tuple(int(n) for n in np.shape(value)), np.dtype(value.dtype))
