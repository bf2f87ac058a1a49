"""Lower and compile a function for a target, from abstract arguments, and time it.

Arguments are pytrees of ``jax.ShapeDtypeStruct`` (no data), each with a sharding on a mesh of
the target's devices (:func:`target_mesh`). Every array argument needs a sharding on that mesh:
an argument without one would make JAX lower for this machine's default backend (the CPU), not
the target, so :func:`compile_for_target` replicates any argument that has none.

The compile-only devices can compile but not run: the result is a ``jax.stages.Compiled`` to
read (``memory_analysis()``, ``cost_analysis()``, ``as_text()``), see :mod:`elf_eqx.aot.analysis`.

The TPU compiler refuses a program that needs more HBM than the chip has ("RESOURCE_EXHAUSTED:
Ran out of memory on HBM, the total memory required for HLO temporaries (128.00G) exceeds
available HBM (95.74G)"; the figure is the whole program: arguments, outputs and temporaries).
That is an answer, not a failure: :func:`compile_for_target` returns a :class:`CompiledProgram`
with no ``compiled`` and the message in ``out_of_memory``, which the analysis reports as not
fitting, with the compiler's total. (The GPU compiler does not check; its programs always compile.)
XLA options for one compile go in ``compiler_options``, on top of those the target always needs
(:attr:`Target.compiler_options`: deviceless NVIDIA targets compile matmuls as cuBLAS calls).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from elf_eqx.aot.targets import Target
from elf_eqx.parallel.mesh import MeshConfig, make_mesh


@dataclasses.dataclass(frozen=True)
class CompiledProgram:
    """A program compiled for a target, with how long lowering and compiling took."""

    compiled: Any          # jax.stages.Compiled; None when the compiler refused it for memory
    target: Target
    mesh: Mesh
    lower_s: float
    compile_s: float
    out_of_memory: str | None = None  # the compiler's out-of-memory message, when it refused the program

    @property
    def device_count(self) -> int:
        """Devices the program runs on (the mesh's size)."""
        return int(self.mesh.size)


def target_mesh(target: Target, config: MeshConfig = MeshConfig()) -> Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh (:func:`elf_eqx.parallel.mesh.make_mesh`) over the
    target's devices (``data=-1`` takes every device left after fsdp × tensor)."""
    return make_mesh(config, target.devices())


def abstract(tree: Any, shardings: Any = None) -> Any:
    """``tree`` (arrays or anything with ``shape`` and ``dtype``) as ``ShapeDtypeStruct`` leaves,
    each with the matching sharding of ``shardings`` (a tree of the same structure, one sharding
    for all, or None to keep each leaf's own)."""
    def one(leaf: Any, sharding: Any) -> jax.ShapeDtypeStruct:
        sharding = sharding if sharding is not None else getattr(leaf, "sharding", None)
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    if shardings is None or isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda leaf: one(leaf, shardings), tree)
    return jax.tree.map(one, tree, shardings)


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of ``tree``'s array leaves: each leaf's shard (its sharding's
    ``shard_shape``; the whole leaf where it has no sharding). With an uneven split this is the
    largest shard, which is what a device allocates."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            continue
        sharding = getattr(leaf, "sharding", None)
        shape = sharding.shard_shape(tuple(leaf.shape)) if sharding is not None else tuple(leaf.shape)
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return int(total)


def _with_sharding(leaf: Any, replicated: NamedSharding) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated, weak_type=leaf.weak_type)
    return leaf


def compile_for_target(
    fn: Callable[..., Any],
    args: Sequence[Any],
    *,
    target: Target,
    mesh: Mesh,
    in_shardings: Any = None,
    out_shardings: Any = None,
    donate_argnums: int | Sequence[int] = (),
    static_argnums: int | Sequence[int] = (),
    compiler_options: dict[str, Any] | None = None,
) -> CompiledProgram:
    """Lower and compile ``fn(*args)`` for ``target`` on ``mesh`` (made from ``target.devices()``).

    ``args`` are abstract (``ShapeDtypeStruct`` pytrees, see :func:`abstract`); a struct without a
    sharding is replicated over ``mesh``. ``fn`` may already be jitted (anything with ``.lower``);
    then the jit options here are not used. Returns the compiled program with the seconds spent
    lowering and compiling.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    args = tuple(jax.tree.map(lambda leaf: _with_sharding(leaf, replicated), tuple(args)))
    if hasattr(fn, "lower"):
        jitted = fn
    else:
        options: dict[str, Any] = {"donate_argnums": donate_argnums, "static_argnums": static_argnums}
        if in_shardings is not None:
            options["in_shardings"] = in_shardings
        if out_shardings is not None:
            options["out_shardings"] = out_shardings
        jitted = jax.jit(fn, **options)
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    out_of_memory = None
    try:
        options = {**target.compiler_options, **(compiler_options or {})}
        compiled = lowered.compile(options) if options else lowered.compile()
    except Exception as error:  # noqa: BLE001 - only the compiler's out-of-memory answer is kept
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if "RESOURCE_EXHAUSTED" not in message:
            raise
        compiled, out_of_memory = None, message
    done = time.perf_counter()
    return CompiledProgram(compiled=compiled, target=target, mesh=mesh, lower_s=lowered_at - start,
                           compile_s=done - lowered_at, out_of_memory=out_of_memory)
