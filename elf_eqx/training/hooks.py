"""What happens around the steps of a run: each :class:`Hook` has its own :class:`Schedule` and is
called with the :class:`StepInfo` of every step it is due at (metrics and NaN checks, checkpoints,
sample files). :func:`drive` runs any producer of steps (training, distillation) through a list of hooks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
from tqdm.auto import tqdm

from elf_eqx.errors import NonFiniteLoss
from elf_eqx.observe.device_memory import memory_figures
from elf_eqx.observe.profiler import StepRange, Trace, traces_here
from elf_eqx.observe.sample_files import read_sample_file
from elf_eqx.observe.step_clock import StepClock, StepTiming, Throughput
from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.training.metrics_log import MetricsLog
from elf_eqx.training.step import TrainState


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """One completed optimizer step: its number (1-based), the state after it, its metrics (device
    arrays, not yet fetched), the run's length, the stop signal read once for this step, and the
    host's clock readings of it (:class:`~elf_eqx.observe.step_clock.StepTiming`; ``None``: not timed)."""

    step: int
    state: TrainState
    metrics: dict[str, jax.Array]
    total_steps: int
    stopping: str | None = None
    timing: StepTiming | None = None

    @property
    def final(self) -> bool:
        """The run's last step."""
        return self.step == self.total_steps

    @property
    def last(self) -> bool:
        """The last step this process runs: the final one, or the one a stop signal ends on."""
        return self.final or self.stopping is not None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Due every ``every`` steps, and at the final step (``at_final``) and the step a stop signal
    ends on (``at_stop``)."""

    every: int
    at_final: bool = True
    at_stop: bool = True

    def due(self, info: StepInfo) -> bool:
        return (info.step % self.every == 0 or (self.at_final and info.final)
                or (self.at_stop and info.stopping is not None))


@dataclasses.dataclass(frozen=True)
class AtSteps:
    """Due at the given steps only."""

    steps: frozenset[int]

    def due(self, info: StepInfo) -> bool:
        return info.step in self.steps


class Hook:
    """Something done at the steps its :attr:`schedule` says; :meth:`close` runs when the run ends."""

    schedule: Schedule

    def __call__(self, info: StepInfo) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the hook holds (files, progress bars)."""


def drive(steps: Iterable[StepInfo], hooks: Sequence[Hook]) -> StepInfo | None:
    """Run every step of ``steps`` through the ``hooks`` due at it, in order; closes the hooks at
    the end (also on an error). Returns the last step's info (``None`` when there was none)."""
    last = None
    try:
        for info in steps:
            for hook in hooks:
                if hook.schedule.due(info):
                    hook(info)
            last = info
    finally:
        for hook in hooks:
            hook.close()
    return last


class MetricsHook(Hook):
    """Every step: the progress bar moves, the step's metrics are queued and its timing is noted.
    When ``flush`` is due (and before any checkpoint: give ``flush`` the checkpoints' schedule too)
    the queued metrics are fetched (the only wait on the device), a non-finite loss stops the run
    naming its step (:class:`~elf_eqx.errors.NonFiniteLoss`), and the records of steps due under
    ``log`` (and the newest step) go to the metrics log with the learning rate, tokens, training
    FLOPs and what the steps since the previous record measurably cost (step time, tokens/s, MFU,
    data wait, host share, device memory: :mod:`elf_eqx.observe.step_clock`). ``sync`` schedules
    (sample files, which wait on the device anyway; a profiler trace's start and end) fetch without
    a record, so the hooks run after them stay out of the measured step time. Process 0's log
    records this start in ``run_info.json``."""

    def __init__(self, log: MetricsLog | None, *, log_every: int, flush: Sequence[Schedule],
                 learning_rate: Callable[[int], float], throughput: Throughput, initial_step: int, total_steps: int,
                 show: bool, sync: Sequence[Schedule | AtSteps] = (), local_devices: Sequence[Any] = ()):
        self.schedule = Schedule(1)
        self.log, self.log_every, self.flush_at, self.sync_at = log, log_every, tuple(flush), tuple(sync)
        self.learning_rate, self.throughput, self.total_steps = learning_rate, throughput, total_steps
        self.local_devices = tuple(local_devices)
        self.pending: list[tuple[int, dict[str, jax.Array]]] = []
        self.clock = StepClock()
        self.bar = tqdm(total=total_steps, initial=initial_step, disable=not show, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        if log is not None:
            log.record_start({"from_step": initial_step, "total_steps": total_steps, "processes": jax.process_count(),
                              **throughput.describe()})

    def __call__(self, info: StepInfo) -> None:
        self.pending.append((info.step, info.metrics))
        if info.timing is not None:
            self.clock.add(info.timing)
        if any(s.due(info) for s in self.flush_at):
            self._flush(info.step, record=True)
        elif any(s.due(info) for s in self.sync_at):
            self._flush(info.step, record=False)
        self.bar.update(1)

    def _flush(self, step: int, *, record: bool) -> None:
        waited = time.perf_counter()
        fetched = [(s, {k: float(v) for k, v in m.items()}) for s, m in jax.device_get(self.pending)]
        self.clock.synced(time.perf_counter() - waited)
        self.pending.clear()
        for s, m in fetched:
            if not math.isfinite(m["loss"]):
                raise NonFiniteLoss(f"loss is {m['loss']} at step {s}; stopping (the last saved checkpoint is kept)")
        if not record:
            return
        measured = {**self.clock.figures(self.throughput), **memory_figures(self.local_devices)}
        for s, m in fetched:
            if self.log is not None and (s % self.log_every == 0 or s == step):
                self.log.write(s, {**m, "lr": self.learning_rate(s - 1), "tokens": s * self.throughput.tokens_per_step,
                                   "train_flops": s * self.throughput.flops_per_step,
                                   **(measured if s == step else {})})
        if self.log is not None:
            self.log.flush()
        self._show(step, fetched[-1][1], measured)

    def _show(self, step: int, metrics: dict[str, float], measured: dict[str, Any]) -> None:
        """The bar's postfix: loss, tok/s, MFU (where known) and the time left at the measured pace."""
        shown = {"loss": f"{metrics['loss']:.4f}"}
        if "tokens_per_s" in measured:
            shown["tok/s"] = f"{measured['tokens_per_s']:,.0f}"
        if "mfu" in measured:
            shown["MFU"] = f"{measured['mfu']:.1%}"
        if "step_time_s" in measured:
            left = round((self.total_steps - step) * measured["step_time_s"])
            shown["left"] = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self.bar.close()
        if self.log is not None:
            self.log.close()


class CheckpointHook(Hook):
    """Saves the state with ``metadata()`` (e.g. the data position) and the run's base PRNG key."""

    def __init__(self, manager: CheckpointManager, schedule: Schedule, metadata: Callable[[], dict[str, Any]],
                 key: jax.Array):
        self.manager, self.schedule, self.metadata, self.key = manager, schedule, metadata, key

    def __call__(self, info: StepInfo) -> None:
        self.manager.save(info.step, info.state, self.metadata(), key=self.key)


class SampleHook(Hook):
    """Writes a sample file from the EMA weights (every process samples; process 0 writes) and
    gives its texts to the metrics log (process 0's; a wandb table)."""

    def __init__(self, schedule: Schedule, write: Callable[[Any, int], Any], log: MetricsLog | None = None):
        self.schedule, self.write, self.log = schedule, write, log

    def __call__(self, info: StepInfo) -> None:
        path = self.write(info.state.ema, info.step)
        if self.log is not None:
            self.log.samples(info.step, read_sample_file(path))


class ProfileHook(Hook):
    """Traces steps ``steps.first`` to ``steps.last``: starts once the step before the first is done
    (its hooks included: put this hook last), or at once when the run starts there; stops once the
    last step has run on the device (a wait only then). A run that ends or stops earlier stops the
    trace when it closes."""

    def __init__(self, steps: StepRange, directory: str, initial_step: int):
        self.schedule, self.steps = Schedule(1), steps
        self.boundaries = AtSteps(frozenset((steps.first - 1, steps.last)))
        """Where the trace starts and stops: give it to the metrics hook's ``sync``, so starting and
        writing the trace stay out of the measured step time."""
        self.trace = Trace(directory, f"steps {steps}")
        if steps.first - 1 <= initial_step < steps.last:
            self.trace.start()

    def __call__(self, info: StepInfo) -> None:
        if info.step == self.steps.first - 1:
            self.trace.start()
        elif info.step >= self.steps.last and self.trace.running:
            jax.block_until_ready(info.metrics)
            self.trace.stop()

    def close(self) -> None:
        self.trace.stop()


def profile_hooks(run: Any, initial_step: int) -> list[Hook]:
    """The :class:`ProfileHook` the run section ``run`` asks for (``--profile-steps``) on this
    process, or none."""
    steps = run.profile_range
    if steps is None or not traces_here(run.profile_all_processes):
        return []
    return [ProfileHook(steps, run.profile_directory, initial_step)]
