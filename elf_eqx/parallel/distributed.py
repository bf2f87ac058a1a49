"""Joining a multi-process (multi-host) run through JAX's own distributed runtime."""

from __future__ import annotations

import os

import jax

from elf_eqx.errors import ConfigError

# Environment variables by which cluster launchers announce a multi-process job; with none of
# them set (a plain machine), jax.distributed is not started.
CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
               "JAX_COORDINATOR_ADDRESS")


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Start ``jax.distributed`` when asked by flags (all three given) or by a cluster environment
    (SLURM, Open MPI, Cloud TPU pod slices: JAX detects the rest); returns whether it started.
    Must run before anything touches a device."""
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ConfigError("--coordinator-address, --num-processes and --process-id go together (give all three)")
    if all(given):
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id {process_id} is not in [0, --num-processes={num_processes})")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return True
    if any(os.environ.get(name) for name in CLUSTER_ENV):
        jax.distributed.initialize()
        return True
    return False
