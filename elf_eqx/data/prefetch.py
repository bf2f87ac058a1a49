"""A ``Loader`` run ahead in a background thread: the same batches, in the same order, with an
exact ``state()``/``restore()`` (opt-in; see benchmarks/RESULTS.md#input-pipeline-at-pod-scale-cpu).

    loader = prefetch(Loader(rows, spec, 512, ...), depth=2)   # depth 0: the Loader itself

One daemon thread calls ``next(loader)`` and puts each batch, with the loader's position after
it, on a queue of at most ``depth`` batches. The consumer's ``state()`` is the position of the
next batch *it* will receive (the last received batch's "after" position), never the thread's
read-ahead, so a checkpoint saved between steps — also on SIGTERM, when the training loop
finishes its step and saves — resumes at exactly the next unconsumed row. ``close()`` stops the
thread, drops the read-ahead and rewinds the loader to that position; a later ``next()`` starts
a new thread from there. An exception raised by the loader reaches the consumer at the batch
where it happened, after every batch before it; the next call starts again at that batch.
"""

from __future__ import annotations

import queue
import threading
import weakref
from typing import Any, Protocol, runtime_checkable

import numpy as np

from elf_eqx.errors import DataError

_POLL_S = 0.1  # how often a blocked thread rechecks for close()


@runtime_checkable
class PositionedIterator(Protocol):
    """What :class:`Prefetcher` needs of a loader (``Loader`` has it)."""

    def __next__(self) -> dict[str, np.ndarray]: ...
    def state(self) -> dict[str, Any]: ...
    def restore(self, state: dict[str, Any]) -> None: ...


class _Failure:
    """The loader's exception, carried to the consumer in the batch's place."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _run(loader: PositionedIterator, out: queue.Queue, stop: threading.Event) -> None:
    """The thread: batches (and their "after" positions) onto ``out`` until ``stop`` or a failure.
    It holds no reference to the Prefetcher, so an unreferenced Prefetcher is collected and stops it."""
    while not stop.is_set():
        try:
            item: Any = (next(loader), loader.state())
        except BaseException as error:  # StopIteration included: the consumer re-raises it
            item = _Failure(error)
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        if isinstance(item, _Failure):
            return


def _stop(stop: threading.Event, thread: threading.Thread, timeout: float | None) -> None:
    stop.set()
    if thread is not threading.current_thread():
        thread.join(timeout)


class Prefetcher:
    """``loader`` read up to ``depth`` batches ahead in a background thread (see the module docstring).

    Other attributes (``steps_per_epoch``, ``spec``, ``global_batch_size``, ``batch_indices`` …)
    are the loader's. Use it as the loader itself, or as a context manager that closes it.
    """

    def __init__(self, loader: PositionedIterator, depth: int = 2) -> None:
        if depth < 1:
            raise DataError(f"prefetch depth must be at least 1, got {depth}")
        self.loader = loader
        self.depth = depth
        self._state = dict(loader.state())  # the position of the consumer's next batch
        self._queue: queue.Queue | None = None
        self._stop_event: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize | None = None

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._thread is None:
            self._start()
        assert self._queue is not None
        item = self._queue.get()
        if isinstance(item, _Failure):
            self._join()  # the thread has ended; the loader is where it failed
            self.loader.restore(self._state)
            raise item.error
        batch, self._state = item
        return batch

    def state(self) -> dict[str, Any]:
        """The position of the next batch this consumer will receive (``Loader.state()``'s dict)."""
        return dict(self._state)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the read-ahead is dropped and the loader restored (it checks ``state``)."""
        self.close()
        self.loader.restore(state)
        self._state = dict(self.loader.state())

    @property
    def epoch(self) -> int:
        """The epoch of the consumer's next batch."""
        return int(self._state["epoch"])

    def close(self) -> None:
        """Stop the thread and rewind the loader to :meth:`state` (idempotent)."""
        if self._thread is None:
            return
        self._join()
        self.loader.restore(self._state)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=self.depth)
        self._stop_event = threading.Event()
        self._thread = threading.Thread(
            target=_run, args=(self.loader, self._queue, self._stop_event), name="elf_eqx-prefetch", daemon=True
        )
        self._thread.start()
        # Stops the thread when this object is collected or, at the latest, at interpreter exit.
        self._finalizer = weakref.finalize(self, _stop, self._stop_event, self._thread, 5.0)

    def _join(self) -> None:
        assert self._finalizer is not None and self._stop_event is not None and self._thread is not None
        self._finalizer.detach()
        _stop(self._stop_event, self._thread, None)
        self._queue = self._stop_event = self._thread = self._finalizer = None


def prefetch(loader: Any, depth: int) -> Any:
    """``loader`` itself when ``depth`` is 0, else a :class:`Prefetcher` of ``depth`` batches."""
    return Prefetcher(loader, depth) if depth else loader
