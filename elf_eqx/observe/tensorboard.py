"""TensorBoard event files without torch or TensorFlow: the ``tensorboard`` package's own event
writer and protos (``pip install 'elf_eqx[tensorboard]'``). Scalars are written as TensorBoard's
classic ``simple_value`` summaries, which its scalar dashboard and ``EventAccumulator`` read."""

from __future__ import annotations

import time
from pathlib import Path


class TensorBoardWriter:
    """Appends scalar summaries to an event file in ``directory`` (a new file per writer)."""

    def __init__(self, directory: str | Path):
        from tensorboard.compat.proto.event_pb2 import Event  # optional dependency
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = Event, Summary
        self._writer = EventFileWriter(str(directory))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event holding every ``name: value`` of ``values`` at ``step``."""
        summary = self._summary(value=[self._summary.Value(tag=name, simple_value=float(value))
                                       for name, value in values.items()])
        self._writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
