"""The device mesh a run uses, and how batches are placed on it.

Axes ``("data", "fsdp", "tensor")``: batches are split over ``data × fsdp``; parameters and
optimizer state are sharded over ``fsdp`` (and ``tensor``) by the rules of
:mod:`elf_eqx.parallel.partition`. A size of -1 on the data axis takes every remaining device.
Multi-process runs feed each process's rows with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Shaped

from elf_eqx.errors import MeshError

DATA_AXIS, FSDP_AXIS, TENSOR_AXIS = "data", "fsdp", "tensor"
MESH_AXES = (DATA_AXIS, FSDP_AXIS, TENSOR_AXIS)
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Devices per mesh axis; ``data=-1`` takes all devices left after fsdp × tensor."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def shape(self, device_count: int) -> tuple[int, int, int]:
        """``(data, fsdp, tensor)`` for ``device_count`` devices; a clear error when they do not fit."""
        for name in ("fsdp", "tensor"):
            if getattr(self, name) < 1:
                raise MeshError(f"--mesh-{name} must be at least 1, got {getattr(self, name)}")
        data = self.data
        if data == -1:
            if device_count % (self.fsdp * self.tensor):
                raise MeshError(f"{device_count} devices do not split into fsdp {self.fsdp} × tensor {self.tensor}")
            data = device_count // (self.fsdp * self.tensor)
        elif data < 1:
            raise MeshError(f"--mesh-data must be -1 or at least 1, got {data}")
        size = data * self.fsdp * self.tensor
        if size > device_count:
            raise MeshError(f"mesh (data {data}, fsdp {self.fsdp}, tensor {self.tensor}) needs {size} devices, "
                            f"but only {device_count} are available")
        return data, self.fsdp, self.tensor


def make_mesh(config: MeshConfig = MeshConfig(), devices: list[jax.Device] | None = None) -> Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh over ``devices`` (default: all devices of all
    processes; a mesh smaller than that uses the first ones)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = config.shape(len(devices))
    chosen = devices[: math.prod(shape)]
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=chosen)


def traced_on(mesh: Mesh | AbstractMesh | None) -> contextlib.AbstractContextManager:
    """While tracing a program that runs on ``mesh``: its abstract mesh as the current one
    (``jax.sharding.get_abstract_mesh()``), for kernels that must be mapped over it by hand;
    ``None`` (or a one-device mesh) changes nothing."""
    if mesh is None or mesh.size == 1:
        return contextlib.nullcontext()
    return jax.sharding.use_abstract_mesh(getattr(mesh, "abstract_mesh", mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_axes(mesh: Mesh | AbstractMesh) -> tuple[str, ...]:
    """The mesh axes a batch's leading axis is split over (``data`` and ``fsdp`` where present)."""
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data × fsdp``."""
    return NamedSharding(mesh, PartitionSpec(batch_axes(mesh)))


def batch_split(mesh: Mesh | AbstractMesh) -> int:
    """How many pieces a batch is split into: the product of the batch axes' sizes."""
    return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def check_global_batch(global_batch: int, mesh: Mesh | AbstractMesh) -> None:
    """A clear error when the global batch does not split evenly over the mesh's batch axes."""
    n = batch_split(mesh)
    if global_batch % n:
        axes = "×".join(batch_axes(mesh))
        raise MeshError(f"--global-batch {global_batch} is not divisible by the {n} devices of the {axes} axis")


def shard_batch(local: Any, sharding: NamedSharding) -> Any:
    """A global array per leaf of ``local`` (this process's rows, NumPy) split along the batch axis."""
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local)


def gather(array: Shaped[Array, "*shape"]) -> Shaped[np.ndarray, "*shape"]:
    """The whole of a (possibly multi-process, sharded) array, shape ``(*shape)``, as NumPy on this host."""
    if getattr(array, "is_fully_addressable", True):
        return np.asarray(jax.device_get(array))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def place_global(tree: Any, shardings: Any) -> Any:
    """Each array leaf of ``tree`` as a global array with the matching sharding of ``shardings`` (a
    pytree prefix of ``tree``). Leaves already placed so are kept; others must hold the same
    whole value on every process (a replicated computation, a shared key), which each process
    then slices for its own devices."""

    def one(sharding, subtree):
        def leaf(x):
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x
            if jax.process_count() == 1:
                return jax.device_put(x, sharding)
            host = np.asarray(jax.device_get(x))
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        return jax.tree_util.tree_map(leaf, subtree)

    return jax.tree_util.tree_map(one, shardings, tree, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
