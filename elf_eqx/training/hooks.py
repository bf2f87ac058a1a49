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
from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.training.metrics_log import MetricsLog
from elf_eqx.training.step import TrainState


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """One completed optimizer step: its number (1-based), the state after it, its metrics (device
    arrays, not yet fetched), the run's length, and the stop signal read once for this step."""

    step: int
    state: TrainState
    metrics: dict[str, jax.Array]
    total_steps: int
    stopping: str | None = None

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
    """Every step: the progress bar moves and the step's metrics are queued. When ``flush`` is due
    (and before any checkpoint: give ``flush`` the checkpoints' schedule too) the queued metrics are
    fetched, a non-finite loss stops the run naming its step (:class:`~elf_eqx.errors.NonFiniteLoss`),
    and the records of steps due under ``log`` (and the newest step) go to the metrics log with the
    learning rate, throughput, tokens and training FLOPs."""

    def __init__(self, log: MetricsLog | None, *, log_every: int, flush: Sequence[Schedule],
                 learning_rate: Callable[[int], float], tokens_per_step: float, flops_per_step: float,
                 initial_step: int, total_steps: int, show: bool):
        self.schedule = Schedule(1)
        self.log, self.log_every, self.flush_at = log, log_every, tuple(flush)
        self.learning_rate, self.tokens_per_step, self.flops_per_step = learning_rate, tokens_per_step, flops_per_step
        self.pending: list[tuple[int, dict[str, jax.Array]]] = []
        self.last_time, self.last_step = time.perf_counter(), initial_step
        self.bar = tqdm(total=total_steps, initial=initial_step, disable=not show, dynamic_ncols=True)

    def __call__(self, info: StepInfo) -> None:
        self.pending.append((info.step, info.metrics))
        if any(s.due(info) for s in self.flush_at):
            self._flush(info.step)
        self.bar.update(1)

    def _flush(self, step: int) -> None:
        fetched = [(s, {k: float(v) for k, v in m.items()}) for s, m in jax.device_get(self.pending)]
        self.pending.clear()
        for s, m in fetched:
            if not math.isfinite(m["loss"]):
                raise NonFiniteLoss(f"loss is {m['loss']} at step {s}; stopping (the last saved checkpoint is kept)")
        now = time.perf_counter()
        tok_s = self.tokens_per_step * (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        for s, m in fetched:
            if self.log is not None and (s % self.log_every == 0 or s == step):
                self.log.write(s, {**m, "lr": self.learning_rate(s - 1), "tokens_per_s": tok_s,
                                   "tokens": s * self.tokens_per_step, "train_flops": s * self.flops_per_step})
        shown = {k: f"{v:.4f}" for k, v in fetched[-1][1].items() if k in ("loss", "l2", "ce")}
        self.bar.set_postfix(**shown, lr=f"{self.learning_rate(step - 1):.2e}", tok_s=f"{tok_s:,.0f}")

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
    """Writes a sample file from the EMA weights (every process samples; process 0 writes)."""

    def __init__(self, schedule: Schedule, write: Callable[[Any, int], Path]):
        self.schedule, self.write = schedule, write

    def __call__(self, info: StepInfo) -> None:
        self.write(info.state.ema, info.step)
