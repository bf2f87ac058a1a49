"""The partition-rule table on the real parameter shapes: every parameter a rule names is split
over ``tensor`` along the rule's dimension, and nothing else is (abstract meshes: no devices)."""

from __future__ import annotations

import re

import jax
import pytest
from jax.sharding import AbstractMesh

from elf_eqx.config import preset
from elf_eqx.families import network_template
from elf_eqx.parallel.mesh import FSDP_AXIS, MESH_AXES, TENSOR_AXIS
from elf_eqx.parallel.partition import TENSOR_RULES, dotted_path, leaf_spec


def abstract_leaves(name: str = "ELF-B", family: str = "elf") -> dict[str, tuple[int, ...]]:
    """``{dotted path: shape}`` of every array of an abstract network of ``family`` (nothing is allocated)."""
    model = network_template(family, preset(name, encoder_dim=512, vocab_size=32100))
    leaves = jax.tree_util.tree_leaves_with_path(model)
    return {dotted_path(path): tuple(leaf.shape) for path, leaf in leaves if hasattr(leaf, "shape")}


@pytest.mark.parametrize("tensor", [2, 4])
def test_every_rule_splits_its_parameters_over_tensor(tensor):
    shapes = {**abstract_leaves(), **abstract_leaves(family="mdlm")}  # ELF and the baselines' network
    mesh = AbstractMesh((1, 2, tensor), MESH_AXES)
    for pattern, dim in TENSOR_RULES:
        named = [name for name in shapes if re.search(pattern, name)]
        assert named, f"rule {pattern!r} names no parameter of any network"
        for name in named:
            spec = tuple(leaf_spec(name, shapes[name], mesh)) + (None,) * len(shapes[name])
            assert spec[len(shapes[name]) + dim] == TENSOR_AXIS, (name, spec)
    untouched = [n for n in shapes if not any(re.search(p, n) for p, _ in TENSOR_RULES)]
    assert untouched and all(TENSOR_AXIS not in tuple(leaf_spec(n, shapes[n], mesh)) for n in untouched)


def test_without_a_tensor_axis_only_fsdp_splits():
    shapes = abstract_leaves()
    mesh = AbstractMesh((1, 2, 1), MESH_AXES)
    specs = {name: tuple(leaf_spec(name, shape, mesh)) for name, shape in shapes.items()}
    assert all(TENSOR_AXIS not in spec for spec in specs.values())
    assert specs["blocks.attn.qkv.weight"][0] is None  # the stacked depth axis is never split
    assert FSDP_AXIS in specs["blocks.attn.qkv.weight"]
