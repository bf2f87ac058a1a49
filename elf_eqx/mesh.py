"""The device mesh a run trains on, and how batches and replicated state are placed on it.

A one-axis ``data`` mesh over every device: parameters, EMA and optimizer state replicated,
batches split along their leading axis. Multi-process runs feed each process's rows with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A ``("data",)`` mesh over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the ``data`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_global_batch(global_batch: int, mesh: Mesh | AbstractMesh) -> None:
    """A clear error when the global batch does not split evenly over the mesh's data axis."""
    n = mesh.shape[DATA_AXIS]
    if global_batch % n:
        raise ValueError(f"--global-batch {global_batch} is not divisible by the {n} devices of the data axis")


def shard_batch(local: Any, sharding: NamedSharding) -> Any:
    """A global array per leaf of ``local`` (this process's rows, NumPy) split along the batch axis."""
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local)
