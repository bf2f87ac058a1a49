"""The sampler compiled for a device mesh: weights sharded by :mod:`elf_eqx.parallel.partition`, the
batch of conditions and the outputs split over ``data × fsdp``, the key replicated.

JAX's threefry draws are partitionable (``jax_threefry_partitionable``, on by default), so a
sharded run draws the same noise, and gives the same samples, as a single device.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray

from elf_eqx.parallel.mesh import batch_sharding, place_global, replicated, traced_on
from elf_eqx.parallel.partition import tree_shardings
from elf_eqx.sampler import Condition, Sampler, SampleOutput
from elf_eqx.baselines.token_sampling import TokenCondition, TokenSampleOutput


def make_sample_fn(
    sampler: Sampler | eqx.Module, mesh: Mesh | None, model: eqx.Module, *, eos_id: int | None, pad_id: int
) -> Callable[[eqx.Module, PRNGKeyArray, Condition | TokenCondition], SampleOutput | TokenSampleOutput]:
    """``fn(model, key, condition) -> SampleOutput`` compiled once per input shape.

    ``sampler`` is ELF's :class:`Sampler` or a baseline's (see :func:`elf_eqx.families.make_sampler`).
    ``condition`` is a :class:`Condition` of ``(B, L, D)`` latents and a ``(B, L)`` mask
    (``Condition.none`` for unconditional samples), or a baseline's ``TokenCondition``; ``B`` must split over the mesh's
    ``data × fsdp`` devices. With ``mesh=None`` the function is a plain single-device jit.
    ``model`` fixes the parameter shardings (its shapes, not its values, are used; an abstract
    model of ``ShapeDtypeStruct`` leaves serves). For compiling without running (the dry run),
    ``fn.jitted`` is the jitted ``(params, key data, condition)`` program and
    ``fn.abstract_params(model)`` its first argument's shapes on the mesh.
    """
    params, static = eqx.partition(model, _is_array_like)

    def run(params, key_data, condition):
        key = jax.random.wrap_key_data(key_data)
        with traced_on(mesh):
            return sampler(eqx.combine(params, static), key, condition=condition, eos_id=eos_id, pad_id=pad_id)

    if mesh is None:
        compiled = jax.jit(run)
        place = lambda *args: args  # noqa: E731
        param_shardings = None
    else:
        rows = batch_sharding(mesh)
        # The key travels as its raw data (plain uint32), so it is placed like any other array.
        param_shardings = tree_shardings(params, mesh)
        shardings = (param_shardings, replicated(mesh), rows)  # rows: every leaf of the condition
        compiled = jax.jit(run, in_shardings=shardings, out_shardings=rows)
        place = lambda *args: place_global(args, shardings)  # noqa: E731

    def sample(model: eqx.Module, key: PRNGKeyArray, condition: Condition | TokenCondition) -> SampleOutput | TokenSampleOutput:
        """Samples for ``condition``'s batch from ``model`` (same structure as at construction)."""
        return compiled(*place(eqx.filter(model, eqx.is_array), jax.random.key_data(key), condition))

    def abstract_params(model: eqx.Module) -> eqx.Module:
        """``model``'s arrays as ``ShapeDtypeStruct`` leaves with the program's parameter shardings."""
        arrays = eqx.filter(model, _is_array_like)
        if param_shardings is None:
            return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), arrays)
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), arrays, param_shardings)

    sample.jitted = compiled
    sample.abstract_params = abstract_params
    return sample


def _is_array_like(leaf: object) -> bool:
    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)
