"""What a training step measurably cost, from host clocks alone: no device synchronisation is added.

Each step the host (1) waits for its batch, (2) calls the jitted step, which hands the work to the
device and returns (the first call traces and compiles first), and (3) runs the hooks. It blocks on
the device only when it fetches the queued metrics (every ``--log-every`` steps, and before a
checkpoint or a sample file). Between two fetches every step's work has finished, so the wall time
from the start of the first step after one fetch to the end of the next fetch, over the steps in
between, is a device-synchronised step time. Time spent in hooks right after a fetch (checkpoint
saves, sample files) falls before the next window starts and is left out; so is the first call's
compile, logged once as ``compile_s``.

Per record (:meth:`StepClock.figures`; seconds unless named otherwise):

- ``step_time_s``: wall seconds per optimizer step since the previous record.
- ``tokens_per_s``: tokens per step / ``step_time_s``.
- ``mfu``: the family's analytic step FLOPs (:mod:`elf_eqx.flops`) / (``step_time_s`` × peak dense
  bf16 FLOP/s per device × devices in use); only where a peak is known
  (:func:`elf_eqx.observe.chips.peak_flops_for`, or ``--peak-flops``).
- ``data_wait_s``: seconds per step blocked waiting for the next batch; ``data_wait_share`` its
  share of ``step_time_s``.
- ``host_share``: share of the step the host was busy (everything but waiting for the device at
  the fetch): near 1 the device waits for the host (input pipeline, Python, dispatch); near 0 the
  host waits for the device. With synchronous dispatch (JAX on CPU in the test suite) the call runs
  the step, so the host share is ~1 there.
- ``bound``: ``data``, ``host`` or ``device``: the largest of ``data_wait_share``,
  ``host_share − data_wait_share`` and ``1 − host_share``.
- ``compile_s``: the first call's seconds (tracing, compiling, dispatching; with synchronous dispatch
  also running it), on the first record after it only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jax

from elf_eqx.observe.chips import peak_flops_for
from elf_eqx.observe.device_memory import MEMORY_FIELDS

MEASURED_FIELDS: tuple[str, ...] = ("step_time_s", "tokens_per_s", "mfu", "data_wait_s", "data_wait_share",
                                     "host_share", "bound", "compile_s", *MEMORY_FIELDS)
"""Every record field that is a measurement (differs between two runs of the same computation)."""

B = TypeVar("B")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class StepTiming:
    """The host's clock readings for one step (``time.perf_counter`` seconds)."""

    started: float
    """When the host began the step (asked for its batch)."""
    data_wait_s: float
    """Seconds blocked waiting for the batch."""
    call_s: float
    """Seconds in the jitted step's call: dispatch (the first call: tracing and compiling too)."""
    compiled: bool
    """Whether this call compiled the step (the first of its program in this process)."""


class StepStopwatch:
    """Times each step's batch and call and marks the step for the profiler (a
    ``StepTraceAnnotation`` named ``train_step``); costs a few microseconds a step."""

    def __init__(self) -> None:
        self._first = True

    def step(self, number: int, fetch: Callable[[], B], call: Callable[[B], R]) -> tuple[R, StepTiming]:
        """``call(fetch())`` for step ``number`` (1-based), with its :class:`StepTiming`."""
        with jax.profiler.StepTraceAnnotation("train_step", step_num=number):
            started = time.perf_counter()
            batch = fetch()
            fetched = time.perf_counter()
            result = call(batch)
            done = time.perf_counter()
        timing = StepTiming(started, fetched - started, done - fetched, self._first)
        self._first = False
        return result, timing


@dataclasses.dataclass(frozen=True)
class Throughput:
    """What turns a step time into tokens/s and MFU: one step's tokens and analytic FLOPs, the
    devices in use, their kind and peak (``None``: unknown, no MFU)."""

    tokens_per_step: float
    flops_per_step: float
    devices: int
    device_kind: str
    platform: str
    peak_flops_per_device: float | None
    peak_from: str
    """Where the peak came from: a chip of the table, ``--peak-flops``, or ``unknown``."""

    @staticmethod
    def of(per_step: dict[str, Any], devices: list[Any], peak_override: float | None = None) -> "Throughput":
        """From a run's per-step compute (``tokens``, ``train_flops``) and the devices of its mesh."""
        first = devices[0]
        peak, source = peak_flops_for(first.device_kind, first.platform, peak_override)
        return Throughput(float(per_step["tokens"]), float(per_step["train_flops"]), len(devices),
                          str(first.device_kind), str(first.platform), peak, source)

    def describe(self) -> dict[str, Any]:
        """JSON-ready fields (what ``run_info.json`` records of a start)."""
        return dataclasses.asdict(self)


class StepClock:
    """Collects the :class:`StepTiming` of every step and the fetch waits, and turns each stretch
    between two records into the figures of the module docstring."""

    def __init__(self) -> None:
        self._window_start: float | None = None
        self._window_steps = 0
        self._compiling = 0.0  # the compile inside the open window, left out of its wall time
        self._compile_s: float | None = None  # a compile not yet on a record
        self._reset_totals()

    def _reset_totals(self) -> None:
        self._wall = self._data = self._device = 0.0
        self._steps = 0

    def add(self, timing: StepTiming) -> None:
        """One step's timing (every step, in order)."""
        if self._window_start is None:
            self._window_start = timing.started
        self._window_steps += 1
        self._data += timing.data_wait_s
        if timing.compiled:
            self._compiling += timing.call_s
            self._compile_s = (self._compile_s or 0.0) + timing.call_s

    def synced(self, wait_s: float) -> None:
        """The metrics were just fetched, after ``wait_s`` seconds blocked on the device: every step
        added since the previous fetch has finished."""
        if self._window_start is None:
            return
        now = time.perf_counter()
        self._wall += max(now - self._window_start - self._compiling, 0.0)
        self._compiling = 0.0
        self._device += wait_s
        self._steps += self._window_steps
        self._window_start, self._window_steps = None, 0

    def figures(self, throughput: Throughput) -> dict[str, Any]:
        """The figures since the previous record (``{}`` when no step was timed), then start afresh."""
        if not self._steps or self._wall <= 0.0:
            return {}
        wall, steps = self._wall, self._steps
        step_time = wall / steps
        data_share, host_share = self._data / wall, max(0.0, 1.0 - self._device / wall)
        shares = {"data": data_share, "host": max(0.0, host_share - data_share), "device": 1.0 - host_share}
        out: dict[str, Any] = {
            "step_time_s": step_time,
            "tokens_per_s": throughput.tokens_per_step / step_time,
            "data_wait_s": self._data / steps,
            "data_wait_share": min(data_share, 1.0),
            "host_share": min(host_share, 1.0),
            "bound": max(shares, key=shares.__getitem__),
        }
        if throughput.peak_flops_per_device is not None:
            out["mfu"] = throughput.flops_per_step / (step_time * throughput.peak_flops_per_device * throughput.devices)
        if self._compile_s is not None:
            out["compile_s"], self._compile_s = self._compile_s, None
        self._reset_totals()
        return out
