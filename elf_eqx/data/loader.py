"""An endless, resumable iterator of process-local batches."""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
from jaxtyping import Int

from elf_eqx.data.collate import collate
from elf_eqx.errors import DataError
from elf_eqx.data.spec import DataSpec


class Loader:
    """Batches of laid-out ``rows`` (columns ``input_ids``, ``cond_length``) for one process.

    Epoch ``e`` visits the rows in the order ``np.random.default_rng([seed, e]).permutation``
    (or in order, with ``shuffle=False``), ``global_batch_size`` at a time; the last
    incomplete global batch is dropped and the next epoch begins. Process ``p`` of ``n`` takes
    rows ``[p·G/n, (p+1)·G/n)`` of every global batch, so the processes' shards are disjoint
    and, concatenated in process order, form the global batch.

    ``state()`` is the position of the next batch, a small JSON-serialisable dict;
    ``restore(state)`` moves there, after which the loader yields exactly what the
    uninterrupted one would have.
    """

    def __init__(
        self,
        rows: datasets.Dataset,
        spec: DataSpec,
        global_batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        if process_count < 1 or not 0 <= process_index < process_count:
            raise DataError(f"process_index {process_index} is not in [0, process_count={process_count})")
        if global_batch_size < 1 or global_batch_size % process_count:
            raise DataError(
                f"global batch size {global_batch_size} must be a positive multiple of process_count {process_count}"
            )
        if len(rows) < global_batch_size:
            raise DataError(f"dataset has {len(rows)} rows, fewer than one global batch of {global_batch_size}")
        self.spec = spec
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.seed = seed
        self.shuffle = shuffle
        self.process_index = process_index
        self.process_count = process_count
        self.num_rows = len(rows)
        self._rows = rows.with_format("arrow")
        self._epoch = 0
        self._step = 0
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch."""
        return self.num_rows // self.global_batch_size

    @property
    def epoch(self) -> int:
        """The epoch of the next batch."""
        return self._epoch

    def batch_indices(self, epoch: int, step: int) -> Int[np.ndarray, " b"]:
        """Row indices of this process's share of global batch ``step`` of ``epoch``: ``(G/n,)``."""
        start = step * self.global_batch_size + self.process_index * self.local_batch_size
        return self._epoch_order(epoch)[start : start + self.local_batch_size]

    def __iter__(self) -> "Loader":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        """The next process-local batch: ``collate``'s dict of ``(G/n, L)`` arrays."""
        batch = self._fetch(self.batch_indices(self._epoch, self._step))
        self._step += 1
        if self._step == self.steps_per_epoch:
            self._epoch, self._step = self._epoch + 1, 0
        return batch

    def state(self) -> dict[str, int]:
        """The position of the next batch (JSON-serialisable), with the settings it depends on."""
        return {
            "epoch": self._epoch,
            "step": self._step,
            "seed": self.seed,
            "shuffle": int(self.shuffle),
            "global_batch_size": self.global_batch_size,
            "num_rows": self.num_rows,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from ``state()``, perhaps of another process or run).

        Raises ``DataError`` if it was saved with another seed, batch size or dataset size,
        under which the same position would name other rows.
        """
        for key in ("seed", "shuffle", "global_batch_size", "num_rows"):
            if key in state and int(state[key]) != int(self.state()[key]):
                raise DataError(f"loader state has {key}={state[key]}, this loader has {self.state()[key]}")
        epoch, step = int(state["epoch"]), int(state["step"])
        if epoch < 0 or not 0 <= step < self.steps_per_epoch:
            raise DataError(f"loader state epoch={epoch}, step={step} is outside 0..{self.steps_per_epoch - 1}")
        self._epoch, self._step = epoch, step

    def _epoch_order(self, epoch: int) -> np.ndarray:
        # Read the cache once: a prefetch thread and a batch_indices() caller may ask for two epochs at once.
        cached = self._order
        if cached is None or cached[0] != epoch:
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
            else:
                order = np.arange(self.num_rows)
            cached = self._order = (epoch, order)
        return cached[1]

    def _fetch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        table = self._rows[indices.tolist()]
        ids = table.column("input_ids").combine_chunks()
        offsets = ids.offsets.to_numpy()
        values = ids.values.to_numpy()
        rows = [values[offsets[b] : offsets[b + 1]] for b in range(len(indices))]
        return collate(rows, table.column("cond_length").to_numpy(), self.spec)
