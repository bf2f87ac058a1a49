"""Joining a multi-process (multi-host) run through JAX's own distributed runtime.

:func:`cluster_environment` says which launcher, if any, started this process as one of several,
from the environment alone (no network service is asked: JAX's own detection on a Cloud TPU VM
asks the VM's metadata server, and only :func:`initialize_distributed` lets it).
:func:`initialize_distributed` starts ``jax.distributed`` with the run's coordination-service
timeouts (``--heartbeat-timeout-s``, ``--shutdown-timeout-s``, ``--init-timeout-s``) and, for
training, JAX's preemption service: a SIGTERM to any process then becomes a stop that every
process agrees on (:mod:`elf_eqx.training.stop_signal`).
"""

from __future__ import annotations

import os
import sys

import jax
from jax._src import distributed as jax_distributed

from elf_eqx.cli.args import ProcessFlags
from elf_eqx.errors import ConfigError, PeerLostError

# Environment variables by which launchers announce a multi-process job. SLURM and Open MPI are
# recognised by JAX's own (environment-only) checks; these are the rest.
CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
               "TPU_PROCESS_ADDRESSES")
JOINED = "process {index} of {count} joined the run"
"""The line (on stderr) each process of a multi-process run prints once it has joined; the
supervisor (:mod:`elf_eqx.parallel.supervisor`) reads which process it runs from it."""


def running_on_cloud_tpu_vm() -> bool:
    """Whether this is a Cloud TPU VM whose slice JAX finds through the VM's metadata server:
    TPU chips on this host with libtpu installed (what ``import jax`` checks, on the PCI bus), and
    no ``TPU_SKIP_MDS_QUERY`` (which JAX sets on hosts without chips). Asks no server."""
    from jax._src import cloud_tpu_init

    return bool(cloud_tpu_init.running_in_cloud_tpu_vm) and os.environ.get("TPU_SKIP_MDS_QUERY") is None


def cluster_environment() -> str | None:
    """The launcher that started this process as one of several, from the environment alone:
    ``"slurm"`` (inside ``srun``), ``"openmpi"``, one of :data:`CLUSTER_ENV` (a coordinator given
    by the environment; GKE TPU pods), ``"cloud-tpu-vm"`` (:func:`running_on_cloud_tpu_vm`), or
    ``None`` (a plain machine: ``jax.distributed`` is not started)."""
    from jax._src.clusters import ompi_cluster, slurm_cluster

    if slurm_cluster.SlurmCluster.is_env_present():
        return "slurm"
    if ompi_cluster.OmpiCluster.is_env_present():
        return "openmpi"
    for name in CLUSTER_ENV:
        if os.environ.get(name):
            return name
    if running_on_cloud_tpu_vm():
        return "cloud-tpu-vm"
    return None


def check_process_flags(flags: ProcessFlags) -> bool:
    """Whether the three process flags are given (all of them, consistently); none given: ``False``."""
    given = [flags.coordinator_address is not None, flags.num_processes is not None, flags.process_id is not None]
    if any(given) and not all(given):
        raise ConfigError("--coordinator-address, --num-processes and --process-id go together (give all three)")
    if all(given) and not 0 <= flags.process_id < flags.num_processes:
        raise ConfigError(f"--process-id {flags.process_id} is not in [0, --num-processes={flags.num_processes})")
    return all(given)


def joins_a_cluster(flags: ProcessFlags) -> bool:
    """Whether :func:`initialize_distributed` would start ``jax.distributed`` (flags given, or a
    cluster environment); decided without starting anything."""
    return check_process_flags(flags) or cluster_environment() is not None


def initialize_distributed(flags: ProcessFlags, *, preemption: bool = True) -> bool:
    """Start ``jax.distributed`` when asked by flags (all three given) or by a cluster environment
    (:func:`cluster_environment`: JAX detects the rest), with the flags' heartbeat, shutdown and
    initialisation timeouts; returns whether it started. ``preemption``: JAX's preemption service
    takes SIGTERM (training agrees on a step to stop at with it); without it (sampling, evaluation)
    SIGTERM ends the process as usual. Must run before anything touches a device. A process that
    cannot reach the others within ``--init-timeout-s`` raises :class:`PeerLostError` (retryable)."""
    explicit = check_process_flags(flags)
    if not explicit and cluster_environment() is None:
        return False
    jax.config.update("jax_enable_preemption_service", preemption)
    # On CPU, the processes exchange their devices when each first touches one (after loading its
    # data and encoder): a slow starter must be waited for as long as a slow joiner.
    minutes = max(1, -(-flags.init_timeout_s // 60))
    for name in ("jax_cpu_get_local_topology_timeout_minutes", "jax_cpu_get_global_topology_timeout_minutes"):
        jax.config.update(name, max(minutes, getattr(jax.config, name)))
    timeouts = dict(initialization_timeout=flags.init_timeout_s, heartbeat_timeout_seconds=flags.heartbeat_timeout_s,
                    shutdown_timeout_seconds=flags.shutdown_timeout_s)
    where = flags.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or "the cluster's coordinator"
    try:
        if explicit:
            jax.distributed.initialize(flags.coordinator_address, flags.num_processes, flags.process_id, **timeouts)
        else:
            jax.distributed.initialize(**timeouts)
    except (RuntimeError, ValueError) as err:  # JaxRuntimeError is a RuntimeError
        if "already" in str(err) or not _connection_failure(err):
            raise
        raise PeerLostError(f"could not join the run at {where} within --init-timeout-s {flags.init_timeout_s}: "
                            f"{' '.join(str(err).split())[:300]}") from None
    state = jax_distributed.global_state
    print(JOINED.format(index=state.process_id, count=state.num_processes), file=sys.stderr, flush=True)
    return True


def _connection_failure(err: BaseException) -> bool:
    text = str(err)
    return any(s in text for s in ("DEADLINE_EXCEEDED", "UNAVAILABLE", "Barrier timed out", "timed out", "connect"))


def preemption_sync_available() -> bool:
    """Whether JAX's preemption sync point works here: ``jax.distributed`` started with its
    preemption service (which then owns SIGTERM)."""
    state = jax_distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


def process_index_started() -> int:
    """This process's index in the run as ``jax.distributed`` knows it (0 when it was not started),
    without starting a backend."""
    state = jax_distributed.global_state
    return state.process_id if state.client is not None else 0


def process_count_started() -> int:
    """Processes of the run as ``jax.distributed`` knows them (1 when it was not started), without
    starting a backend."""
    state = jax_distributed.global_state
    return state.num_processes if state.client is not None else 1
