"""Keeping a traced batch split over the devices inside the networks (docs/method.md#parallelism).

The train step and the sampler are traced under their mesh's abstract mesh
(:func:`elf_eqx.parallel.mesh.traced_on`). Inside, a network may receive a subset of the batch
(one branch's rows) whose size the batch shards do not divide, and XLA's partitioner, left to
itself, may replicate such activations when the block loop is unrolled (every device then computes
every row). :func:`sharded_rows` pads the rows to a multiple of the shards with rows of zeros
(dropped again by the caller; rows never interact in the networks) and :func:`constrain_rows` pins
their split. Outside a mesh both do nothing.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, Shaped

from elf_eqx.parallel.mesh import batch_axes


def traced_row_axes() -> tuple[str, ...]:
    """The current abstract mesh's batch axes with more than one device (none outside a mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    return tuple(a for a in batch_axes(mesh) if mesh.shape[a] > 1)


def sharded_rows(x: Shaped[Array, "B ..."]) -> Shaped[Array, "P ..."]:
    """``x`` with rows of zeros appended up to a multiple of the batch shards, split over them;
    ``x`` itself outside a mesh. The caller keeps ``x.shape[0]`` to drop the padding."""
    axes = traced_row_axes()
    if not axes:
        return x
    mesh = jax.sharding.get_abstract_mesh()
    shards = math.prod(mesh.shape[a] for a in axes)
    b = x.shape[0]
    padded = -(-b // shards) * shards
    if padded != b:
        x = jnp.pad(x, ((0, padded - b),) + ((0, 0),) * (x.ndim - 1))
    return constrain_rows(x)


def constrain_rows(x: Shaped[Array, "B ..."]) -> Shaped[Array, "B ..."]:
    """``x`` with its rows pinned to the batch shards of the current mesh (whose count divides
    them: see :func:`sharded_rows`); ``x`` itself outside a mesh."""
    axes = traced_row_axes()
    if not axes:
        return x
    spec = PartitionSpec(axes, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(jax.sharding.get_abstract_mesh(), spec))
