"""Data prepared once for every host: the tokenized, laid-out rows as fixed-width token shards that
each host reads only its own rows from, locally or in a bucket (``python -m elf_eqx.prepare``).

A prepared folder (or bucket prefix)::

    manifest.json              written last: the folder is complete once it is there
    shard-00000.tokens         rows × max_length token ids, row-major, uint16 (vocab ≤ 65536) or int32,
                               each row padded with zeros past its length
    shard-00000.lengths.npy    int32 (rows, 2): each row's length and condition length

Row ``i`` of a shard is the byte range ``[i·L·w, i·L·w + length·w)``: a host fetches exactly the
bytes of its rows (one ranged read per row, issued concurrently per batch through fsspec's
``cat_ranges``; a local shard is memory-mapped). The lengths (8 bytes a row) are read whole when a
host opens the folder. Rows are the ones :func:`~elf_eqx.data.pipeline.prepare_data` lays out, in
its order, so the :class:`~elf_eqx.data.loader.Loader`'s permutation, per-host shares and saved
position are those of the same data read through ``datasets``.

Why this format rather than Arrow/Parquet through ``datasets`` or Grain's ArrayRecord: see
docs/method.md#prepared-data.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from elf_eqx.errors import DataError
from elf_eqx.data.spec import DataSpec
from elf_eqx.io import storage
from elf_eqx.io.atomic import staged_folder

FORMAT = "elf_eqx.prepared/1"
MANIFEST = "manifest.json"
ROWS_PER_SHARD = 1 << 16


def is_prepared(source: str | Any) -> bool:
    """Whether ``source`` names a prepared folder (one with a ``manifest.json``)."""
    if not isinstance(source, str) or source == "embedded":
        return False
    if storage.scheme_of(source) is not None and not storage.is_remote(source):
        return False
    try:
        path = storage.as_path(source)
        return (path / MANIFEST).is_file()
    except OSError:
        return False


def write_prepared(rows: Any, spec: DataSpec, out: storage.AnyPath | str, *, conditional: bool,
                   about: dict[str, Any] | None = None, overwrite: bool = False,
                   rows_per_shard: int = ROWS_PER_SHARD, flag: str | None = "--overwrite",
                   keep_existing: bool = False) -> dict[str, Any]:
    """Write the laid-out ``rows`` (a ``datasets.Dataset`` with ``input_ids`` and ``cond_length``)
    as a prepared folder at ``out`` (local or a bucket), ``manifest.json`` last; returns the manifest.
    ``about`` (source, tokenizer...) is recorded in it."""
    width = spec.max_length
    dtype = np.uint16 if spec.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    table = rows.with_format("arrow")
    total = len(rows)
    shards = []
    with staged_folder(out, overwrite=overwrite, flag=flag, marker=MANIFEST, keep_existing=keep_existing) as folder:
        for index, start in enumerate(range(0, total, rows_per_shard)):
            chunk = table[start:start + rows_per_shard]
            ids = chunk.column("input_ids").combine_chunks()
            offsets, values = ids.offsets.to_numpy(), ids.values.to_numpy()
            lengths = np.diff(offsets).astype(np.int32)
            if len(lengths) and lengths.max() > width:
                raise DataError(f"a laid-out row has {lengths.max()} ids, more than max_length {width}")
            block = np.zeros((len(lengths), width), dtype)
            mask = np.arange(width)[None, :] < lengths[:, None]
            block[mask] = values[offsets[0]:offsets[-1]]
            name = f"shard-{index:05d}"
            (folder / f"{name}.tokens").write_bytes(block.tobytes())
            info = np.stack([lengths, chunk.column("cond_length").to_numpy().astype(np.int32)], axis=1)
            np.save(folder / f"{name}.lengths.npy", info)
            shards.append({"name": name, "rows": len(lengths)})
        manifest = {"format": FORMAT, "num_rows": total, "max_length": width, "dtype": np.dtype(dtype).name,
                    "shards": shards, "spec": spec.to_dict(), "conditional": conditional, **(about or {})}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


class PreparedRows:
    """The rows of a prepared folder, for the :class:`~elf_eqx.data.loader.Loader`: ``len()``,
    :meth:`fetch` (only the asked rows' bytes are read) and :meth:`select` (first rows, for the
    sample condition). :attr:`rows_read` counts the rows fetched."""

    def __init__(self, path: storage.AnyPath | str, *, flag: str = "--data"):
        self.path = storage.user_path(str(path), flag)
        try:
            self.manifest = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{flag} {path}: not a prepared data folder ({err})") from None
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{flag} {path}: prepared with format {self.manifest.get('format')!r}, "
                            f"this version reads {FORMAT!r}; run python -m elf_eqx.prepare again")
        self.width = int(self.manifest["max_length"])
        self.dtype = np.dtype(self.manifest["dtype"])
        names = [s["name"] for s in self.manifest["shards"]]
        infos = [np.load(io.BytesIO((self.path / f"{n}.lengths.npy").read_bytes())) for n in names]
        self.lengths = np.concatenate([i[:, 0] for i in infos]) if infos else np.zeros(0, np.int32)
        self.cond_lengths = np.concatenate([i[:, 1] for i in infos]) if infos else np.zeros(0, np.int32)
        self.starts = np.cumsum([0] + [len(i) for i in infos])
        self.names = names
        if self.starts[-1] != self.manifest["num_rows"]:
            raise DataError(f"{flag} {path}: the shards hold {self.starts[-1]} rows, the manifest says "
                            f"{self.manifest['num_rows']}")
        self.rows_read = 0
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest["spec"]

    def _shard_of(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(self.starts, indices, side="right") - 1
        return shard, indices - self.starts[shard]

    def fetch(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """The token ids of rows ``indices`` (each its own length), reading only their bytes."""
        indices = np.asarray(indices, np.int64)
        shard, local = self._shard_of(indices)
        lengths = self.lengths[indices]
        row_bytes = self.width * self.dtype.itemsize
        self.rows_read += len(indices)
        if not storage.is_remote(self.path):
            out = []
            for s, i, n in zip(shard, local, lengths):
                if s not in self._maps:
                    self._maps[s] = np.memmap(self.path / f"{self.names[s]}.tokens", self.dtype, "r").reshape(-1, self.width)
                out.append(np.asarray(self._maps[s][i, :n], np.int32))
            return out
        fs = storage.filesystem(self.path)
        base = str(self.path).split("://", 1)[1].rstrip("/")
        paths = [f"{base}/{self.names[s]}.tokens" for s in shard]
        starts = [int(i) * row_bytes for i in local]
        ends = [start + int(n) * self.dtype.itemsize for start, n in zip(starts, lengths)]
        wanted = [k for k, n in enumerate(lengths) if n > 0]
        blobs = fs.cat_ranges([paths[k] for k in wanted], [starts[k] for k in wanted], [ends[k] for k in wanted])
        out = [np.zeros(0, np.int32) for _ in indices]
        for k, blob in zip(wanted, blobs):
            if isinstance(blob, Exception):
                raise DataError(f"reading {paths[k]}: {blob}")
            out[k] = np.frombuffer(blob, self.dtype).astype(np.int32)
        return out

    def select(self, indices: Sequence[int] | range) -> dict[str, list]:
        """``{"input_ids": [...], "cond_length": [...]}`` of rows ``indices`` (as ``datasets``' select gives them)."""
        idx = np.asarray(list(indices), np.int64)
        return {"input_ids": [row.tolist() for row in self.fetch(idx)],
                "cond_length": self.cond_lengths[idx].tolist()}


def check_fits(rows: PreparedRows, spec: DataSpec, tokenizer_fingerprint: str, where: str) -> None:
    """The prepared rows were laid out as ``spec`` with the run's tokenizer, else a one-line error."""
    stored = rows.manifest.get("spec", {})
    differ = [f"{k}: prepared {stored.get(k)!r}, this run {v!r}" for k, v in spec.to_dict().items() if stored.get(k) != v]
    if differ:
        raise DataError(f"--data {where} was prepared for another layout ({'; '.join(differ[:4])}); "
                        "prepare it again with this run's --tokenizer and --max-length")
    got = rows.manifest.get("tokenizer_fingerprint")
    if got is not None and got != tokenizer_fingerprint:
        raise DataError(f"--data {where} was prepared with another tokenizer ({rows.manifest.get('tokenizer')}); "
                        "prepare it again with this run's --tokenizer")


def wait_for(path: storage.AnyPath, seconds: float, what: str) -> None:
    """Wait until ``path``'s ``manifest.json`` exists (another process is preparing it), polling;
    after ``seconds`` a one-line :class:`DataError`."""
    deadline = time.monotonic() + seconds
    delay = 0.2
    while not (path / MANIFEST).is_file():
        if storage.is_remote(path):
            storage.filesystem(path).invalidate_cache()
        if time.monotonic() > deadline:
            raise DataError(f"waited {seconds:g} s for process 0 to prepare {what} at {path} (no {MANIFEST}); "
                            "check process 0's log, or prepare it first with python -m elf_eqx.prepare "
                            "(raise --data-wait for a slow one)")
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)


def bytes_per_row(spec: DataSpec) -> int:
    """Bytes a prepared row takes: ``max_length`` ids and 8 bytes of lengths."""
    width = 2 if spec.vocab_size <= 65536 else 4
    return spec.max_length * width + 8


def shard_count(rows: int, rows_per_shard: int = ROWS_PER_SHARD) -> int:
    return max(1, math.ceil(rows / rows_per_shard))


@dataclasses.dataclass(frozen=True)
class PreparedSummary:
    """What ``prepare`` did: rows, shards, bytes and the seconds it took."""

    rows: int
    shards: int
    bytes: int
    seconds: float
