"""Muon's Newton–Schulz shared over the devices of a mesh (docs/method.md#optimisation): each
matrix is orthogonalised once, on the device :class:`~elf_eqx.training.ns_plan.NSPlan` gives it
(or, column-split, by all of them), and the results are shared, instead of every data-parallel
device orthogonalising every matrix.

Whole matrices run in a ``shard_map`` over every mesh axis: device ``d`` takes the ``d``-th branch
of a ``lax.switch`` on its index, orthogonalises its chunks with the same function the replicated
optimizer uses, writes them into a buffer of ``plan.buffer_size`` elements, and one tiled
all-gather gives every device every buffer, from which each leaf is put back together. The
inputs enter replicated (an all-gather where the momentum is sharded over fsdp, tensor or, with
ZeRO-1, data). A column-split leaf is padded with zero columns on its long side to a multiple of
the devices (exact: a zero column changes neither the norm nor ``XXᵀ`` and maps to zero), pinned
split over every device, and orthogonalised by the partitioner's program.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float
from optax.contrib import MuonDimensionNumbers

from elf_eqx.training.ns_plan import MatrixBatch, NSPlan

Orthogonalize = Callable[[Float[Array, "k m n"], Array], Float[Array, "k m n"]]
"""``f(matrices, ns_coeffs)``: Newton–Schulz on a batch of matrices."""


def _axes(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def matrix_batch_view(shape: tuple[int, ...], dims: MuonDimensionNumbers) -> tuple[tuple[int, ...], MatrixBatch]:
    """``(transpose, batch)``: the axis order that puts an array of ``shape`` in ``(batch...,
    reduction..., output...)`` order, and the ``(layers, rows, cols)`` it then reshapes to."""
    ndim = len(shape)
    reduction, output = _axes(dims.reduction_axis, ndim), _axes(dims.output_axis, ndim)
    batch = tuple(a for a in range(ndim) if a not in reduction + output)
    size = lambda axes: math.prod(shape[a] for a in axes)  # noqa: E731
    return batch + reduction + output, MatrixBatch(size(batch), size(reduction), size(output))


def to_matrices(x: Array, dims: MuonDimensionNumbers) -> Float[Array, "k m n"]:
    """``x`` as its batch of matrices (see :func:`matrix_batch_view`)."""
    order, b = matrix_batch_view(x.shape, dims)
    return x.transpose(order).reshape(b.layers, b.rows, b.cols)


def from_matrices(m: Float[Array, "k m n"], shape: tuple[int, ...], dims: MuonDimensionNumbers) -> Array:
    """The inverse of :func:`to_matrices` for an array of ``shape``."""
    order, _ = matrix_batch_view(shape, dims)
    return m.reshape(tuple(shape[a] for a in order)).transpose(np.argsort(order))


def _pinned(x: Array, mesh: AbstractMesh, axis: int | None = None) -> Array:
    """``x`` replicated over ``mesh`` (``axis=None``) or split along ``axis`` over all of its devices."""
    parts: list = [None] * x.ndim
    if axis is not None:
        parts[axis] = tuple(mesh.axis_names)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*parts)))


def _column_split(x: Float[Array, "k m n"], orthogonalize: Orthogonalize, coeffs: Array,
                  mesh: AbstractMesh) -> Float[Array, "k m n"]:
    long = 1 if x.shape[1] > x.shape[2] else 2
    size = x.shape[long]
    padded = -(-size // mesh.size) * mesh.size
    pad = [(0, 0)] * 3
    pad[long] = (0, padded - size)
    # Through a replicated copy both ways: the partitioner cannot move an fsdp/tensor layout to the
    # long-side split (or back) directly, and would replicate and re-split it itself, with a warning.
    y = orthogonalize(_pinned(jnp.pad(_pinned(x, mesh), pad), mesh, long), coeffs)
    return _pinned(jax.lax.slice_in_dim(y, 0, size, axis=long), mesh)


def _chunk_rows(x: Float[Array, "k m n"], layers: tuple[int, ...]) -> Float[Array, "c m n"]:
    if layers == tuple(range(layers[0], layers[-1] + 1)):
        return x[layers[0]: layers[-1] + 1]
    return x[np.asarray(layers)]


def _shared_buffers(xs: Sequence[Array], plan: NSPlan, orthogonalize: Orthogonalize,
                    coeffs: Array, mesh: AbstractMesh) -> Float[Array, " devices_times_buffer"]:
    """Every device's buffer of results, gathered: ``(devices · buffer_size,)`` (``xs``: every
    leaf's ``(layers, rows, cols)`` matrices)."""
    axes = tuple(mesh.axis_names)
    whole = [i for i, split in enumerate(plan.split) if not split]
    position = {leaf: k for k, leaf in enumerate(whole)}
    dtype = xs[whole[0]].dtype

    def branch(device: int) -> Callable:
        def run(coeffs, xs):
            parts = [orthogonalize(_chunk_rows(xs[position[c.leaf]], c.layers), coeffs).reshape(-1)
                     for c in plan.work[device]]
            flat = jnp.concatenate(parts) if parts else jnp.zeros((0,), dtype)
            return jnp.pad(flat, (0, plan.buffer_size - flat.shape[0]))
        return run

    def per_device(coeffs, xs):
        mine = jax.lax.switch(jax.lax.axis_index(axes), [branch(d) for d in range(plan.devices)], coeffs, xs)
        return jax.lax.all_gather(mine, axes, tiled=True)

    # The all-gather's result is the same on every device, which shard_map's replication check
    # cannot see through the switch on the device index.
    return jax.shard_map(per_device, mesh=mesh, in_specs=PartitionSpec(), out_specs=PartitionSpec(),
                         check_vma=False)(coeffs, [xs[i] for i in whole])


def orthogonalize_shared(xs: Sequence[Array], plan: NSPlan, orthogonalize: Orthogonalize,
                         coeffs: Array, mesh: AbstractMesh) -> list[Array]:
    """Newton–Schulz of each batch of matrices in ``xs`` (each ``(layers, rows, cols)`` as
    ``plan.matrices`` describes it) as
    ``plan`` shares it over ``mesh``'s devices: the same values ``orthogonalize(x, coeffs)`` gives
    each, up to the order of the sums of a column-split leaf."""
    out: list = [None] * len(xs)
    for i, x in enumerate(xs):
        if plan.split[i]:
            out[i] = _column_split(x, orthogonalize, coeffs, mesh)
    if any(plan.work):
        gathered = _shared_buffers(xs, plan, orthogonalize, coeffs, mesh)
        layers: list[list] = [[None] * b.layers for b in plan.matrices]
        for device, chunks in enumerate(plan.work):
            for c in chunks:
                b = plan.matrices[c.leaf]
                start = device * plan.buffer_size + c.offset
                block = gathered[start: start + len(c.layers) * b.size].reshape(len(c.layers), b.rows, b.cols)
                for k, layer in enumerate(c.layers):
                    layers[c.leaf][layer] = block[k]
        for i, parts in enumerate(layers):
            if not plan.split[i]:
                out[i] = jnp.stack(parts)
    return out
