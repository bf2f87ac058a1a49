"""Filling an Equinox module's leaves from a flat dict of named checkpoint arrays.

A loader describes each checkpoint name with a :class:`Slot` (which leaf it fills, which layer of
a stacked leaf, whether it is stored transposed); :func:`fill_module` checks every name and shape
at once and reports all problems in one error, instead of failing on the first shape crash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from elf_eqx.errors import IncompatibleModelError

ModuleT = TypeVar("ModuleT", bound=eqx.Module)


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one checkpoint array goes: ``leaf`` names an entry of the ``leaves`` table given to
    :func:`fill_module`; ``layer`` is its index in a leaf stacked over layers (None if unstacked);
    ``transpose`` marks ``(out, in)`` PyTorch Linear weights for our ``(in, out)``."""

    leaf: str
    layer: int | None = None
    transpose: bool = False


def strip_prefix(tensors: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Drop the first of ``prefixes`` that a name starts with (e.g. ``transformer.``, ``bert.``)."""
    out = {}
    for name, value in tensors.items():
        for prefix in prefixes:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        out[name] = value
    return out


def fill_module(
    template: ModuleT,
    leaves: Mapping[str, Callable[[ModuleT], Any]],
    slots: Mapping[str, Slot],
    tensors: Mapping[str, np.ndarray],
    *,
    what: str,
    dtype: Any = jnp.float32,
    ignore: Callable[[str], bool] = lambda name: False,
) -> ModuleT:
    """``template`` (shapes only, e.g. from ``eqx.filter_eval_shape``) with every leaf in ``leaves``
    replaced by the checkpoint arrays ``tensors`` named in ``slots``; floating arrays are cast to
    ``dtype``. Raises :class:`~elf_eqx.errors.IncompatibleModelError` (a ``ValueError``) listing
    every missing, unexpected (and not ``ignore``d) or misshapen name, with ``what`` naming the
    checkpoint."""
    problems = [f"missing {name}" for name in slots if name not in tensors]
    problems += [f"unexpected {name} {tuple(np.shape(v))}" for name, v in tensors.items()
                 if name not in slots and not ignore(name)]
    parts: dict[str, dict[int | None, np.ndarray]] = {key: {} for key in leaves}
    for name, slot in slots.items():
        if name not in tensors:
            continue
        array = np.asarray(tensors[name])
        array = array.T if slot.transpose else array
        full = tuple(leaves[slot.leaf](template).shape)
        expected = full if slot.layer is None else full[1:]
        if tuple(array.shape) != expected:
            problems.append(f"{name}: checkpoint {tuple(array.shape)} vs model {expected}"
                            + (" (after transposing (out, in) to (in, out))" if slot.transpose else ""))
        parts[slot.leaf][slot.layer] = array
    if problems:
        raise IncompatibleModelError(f"{what} does not fit the model:\n  " + "\n  ".join(problems))
    values = []
    for key in leaves:
        found = parts[key]
        value = found[None] if None in found else np.stack([found[i] for i in sorted(found)])
        floating = jnp.issubdtype(value.dtype, jnp.floating)
        values.append(jnp.asarray(value, dtype if floating else None))
    getters = list(leaves.values())
    return eqx.tree_at(lambda m: [get(m) for get in getters], template, values)


def module_tensors(
    module: ModuleT, leaves: Mapping[str, Callable[[ModuleT], Any]], slots: Mapping[str, Slot]
) -> dict[str, np.ndarray]:
    """The inverse of :func:`fill_module`: every checkpoint name in ``slots`` with its array taken
    from ``module`` (one layer of a stacked leaf, transposed back where the slot says so)."""
    out = {}
    for name, slot in slots.items():
        value = np.asarray(leaves[slot.leaf](module))
        value = value if slot.layer is None else value[slot.layer]
        out[name] = value.T if slot.transpose else value
    return out


def shape_template(build: Callable[[jax.Array], ModuleT]) -> ModuleT:
    """The module ``build(key)`` would return, with ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
    return eqx.filter_eval_shape(build, jax.random.key(0))
