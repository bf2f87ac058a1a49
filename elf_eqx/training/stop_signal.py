"""A stop asked for (SIGTERM, SIGINT, a platform's preemption notice) becomes a stop after one
step, the same step on every process of the run; that step is then saved and the run exits 0.

- **One process** (no ``jax.distributed``): while a :class:`StopRequest` is active, SIGTERM and
  SIGINT set :attr:`StopRequest.requested`; the step running when it arrives is the last.
- **Several processes**: ``jax.distributed`` is started with JAX's preemption service
  (:func:`~elf_eqx.parallel.distributed.initialize_distributed`), which owns SIGTERM on every
  process: a SIGTERM to any one of them (the preemption notice of TPU VMs, GKE and SLURM) is passed
  through JAX's coordination service to all, and :meth:`StopRequest.after_step`, called once per
  step on every process, asks JAX's preemption sync point
  (``multihost_utils.reached_preemption_sync_point``): it answers yes on every process at the same
  step, the one after the furthest any process had reached when the notice arrived. SIGINT is
  passed on to that service as a SIGTERM to this process. Nothing is added to the compiled step: the
  check is a lock and a comparison on the host (benchmarks/RESULTS.md).
- Several processes whose ``jax.distributed`` runs without the preemption service
  (``jax_enable_preemption_service`` off): each process's own flag is gathered from all processes
  at every step (:func:`~elf_eqx.parallel.agreement.gather`), a round trip to the coordinator.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from elf_eqx.parallel import agreement
from elf_eqx.parallel.distributed import preemption_sync_available, process_count_started

AGREED = "a stop request (SIGTERM, SIGINT or a preemption notice) to one of the processes"
"""What a stop agreed through JAX's preemption service is reported as (the process that received
the signal does not know it did: JAX's handler took it)."""
_checks = [0]
"""Steps checked so far by this process (all :class:`StopRequest` s together): the number JAX's sync
point is called with, rising by one per step on every process alike from 1. Not the step number:
a notice that arrives before the first check (during start-up) sets the sync point to 1, which a
resumed run's steps would never meet. (orbax's own saves call the sync point with the step; both
sequences are the same on every process, so the stop is still agreed.)"""


class StopRequest:
    """While active (``with StopRequest() as stop``), a stop signal asks the run to stop after the
    current step; :meth:`after_step` says, once per step, whether this step is the last. A second
    SIGINT falls back to the default (immediate) behaviour."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}
        self._synced = preemption_sync_available()
        self._processes = process_count_started()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        if self._synced:  # JAX's preemption service (its own SIGTERM handler) tells the other processes
            os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self) -> "StopRequest":
        # With JAX's preemption service SIGTERM stays with JAX's handler (installed by
        # jax.distributed.initialize); replacing it would hide the notice from the other processes.
        for sig in (signal.SIGINT,) if self._synced else (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def after_step(self) -> str | None:
        """Called once per optimizer step on every process, after the step is dispatched: the
        reason to stop after this step (every process gets it at the same step), or ``None``."""
        if self._synced:
            from jax.experimental import multihost_utils

            _checks[0] += 1
            return AGREED if multihost_utils.reached_preemption_sync_point(_checks[0]) else None
        if self._processes > 1:
            return agreement.first_reason("stop", self.requested)
        return self.requested
