"""The partition table on the real parameter shapes (abstract meshes: no devices): every array of
every network, encoder, judge and optimizer state declares its logical axes; the table splits the
documented matrices over ``tensor`` and nothing else; specs follow the layer, not the path."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from elf_eqx.config import preset
from elf_eqx.encoders.bert import BertConfig, BertEncoder
from elf_eqx.encoders.t5 import T5Config, T5Encoder
from elf_eqx.evaluate.judge import GPT2, GPT2Config
from elf_eqx.families import network_template
from elf_eqx.nn import Linear
from elf_eqx.nn.axes import LAYERS, leaf_axes
from elf_eqx.parallel.mesh import DATA_AXIS, FSDP_AXIS, MESH_AXES, TENSOR_AXIS
from elf_eqx.parallel.partition import LOGICAL_AXIS_RULES, MIN_SHARDED_SIZE, leaf_spec, tree_shardings, tree_specs
from elf_eqx.training.optim import make_optimizer
from elf_eqx.training.step import TrainState
from elf_eqx.tree_paths import dotted, path_names

KEY = jax.random.key(0)
FAMILIES = ("elf", "mdlm", "ar")
# Where the tensor axis goes (dimension counted from the end), as README "Scaling out" documents.
TENSOR_SPLIT = {
    "blocks.attn.qkv.weight": -1, "blocks.attn.qkv.bias": -1,  # output columns
    "blocks.attn.proj.weight": -2,                              # input rows
    "blocks.mlp.w12.weight": -1, "blocks.mlp.w12.bias": -1,     # output columns
    "blocks.mlp.w3.weight": -2,                                 # input rows
    "unembed.weight": -1, "unembed.bias": -1,                   # vocabulary (ELF)
    "head.weight": -1, "head.bias": -1,                         # vocabulary (the baselines)
}


def network(family: str = "elf", name: str = "ELF-B") -> eqx.Module:
    """An abstract network of ``family`` (nothing is allocated)."""
    return network_template(family, preset(name, encoder_dim=512, vocab_size=32100))


def encoders() -> dict[str, eqx.Module]:
    """Abstract T5 (plain and gated FFN), BERT (MiniLM's shape) and GPT-2 judge."""
    build = lambda cls, config: eqx.filter_eval_shape(cls, config, key=KEY)  # noqa: E731
    return {
        "t5": build(T5Encoder, T5Config(32128, 512, 64, 2048, 6, 8)),
        "t5_gated": build(T5Encoder, T5Config(32128, 768, 64, 2048, 2, 12, is_gated_act=True)),
        "bert": build(BertEncoder, BertConfig(30522, 384, 6, 12, 1536)),
        "judge": build(GPT2, GPT2Config(n_layer=2)),
    }


def train_state(model: eqx.Module, optimizer: str) -> TrainState:
    return eqx.filter_eval_shape(TrainState.create, model, make_optimizer(model, 1e-3, name=optimizer))


def mesh(fsdp: int = 2, tensor: int = 1) -> AbstractMesh:
    return AbstractMesh((1, fsdp, tensor), MESH_AXES)


def padded(spec: PartitionSpec, ndim: int) -> tuple:
    return tuple(spec) + (None,) * (ndim - len(tuple(spec)))


def shapes(tree) -> dict[str, tuple[int, ...]]:
    return {dotted(path_names(p)): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)
            if hasattr(leaf, "shape")}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", ["ELF-B", "ELF-T"])
def test_every_network_array_declares_its_axes(family, size):
    model = network(family, size)
    undeclared = [dotted(path_names(p)) for p, leaf, names in leaf_axes(model) if names is None]
    assert not undeclared
    arrays = [(p, leaf, names) for p, leaf, names in leaf_axes(model) if hasattr(leaf, "shape")]
    assert len(arrays) == len(jax.tree_util.tree_leaves(model))
    table = dict(LOGICAL_AXIS_RULES)
    assert all(len(names) == leaf.ndim and set(names) <= set(table) for _, leaf, names in arrays)
    stacked = [names for p, _, names in arrays if path_names(p)[0] == "blocks"]
    assert stacked and all(names[0] == LAYERS for names in stacked)  # the scanned depth axis


@pytest.mark.parametrize("which", ["t5", "t5_gated", "bert", "judge"])
def test_every_encoder_and_judge_array_declares_its_axes(which):
    tree = encoders()[which]
    entries = leaf_axes(tree)
    assert entries and all(names is not None for _, _, names in entries), [
        dotted(path_names(p)) for p, _, names in entries if names is None]
    specs = tree_specs(tree, mesh(fsdp=4), tensor_rules=False)
    assert len(specs) == len(entries) and all(TENSOR_AXIS not in tuple(s) for s in specs.values())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_optimizer_states_and_ema_take_their_parameters_spec(family, optimizer):
    model = network(family)
    state = train_state(model, optimizer)
    the_mesh = mesh(fsdp=4, tensor=2)
    params = tree_specs(model, the_mesh)
    specs = tree_specs(state, the_mesh)
    by_leaf = {dotted(path_names(p)): names for p, _, names in leaf_axes(state)}
    matched = 0
    for name, spec in specs.items():
        if by_leaf[name] is None:  # the step and the optimizer's counts and constants: small, replicated
            assert name.rsplit(".", 1)[-1] in ("step", "count", "ns_coeffs") and spec == PartitionSpec(), name
            continue
        owner = [p for p in params if name.endswith("." + p)]
        assert len(owner) == 1, name
        assert spec == params[owner[0]], (name, spec, params[owner[0]])
        matched += 1
    # model, EMA and at least one moment per parameter
    assert matched >= 3 * len(params)


@pytest.mark.parametrize("tensor", [2, 4])
def test_the_table_splits_the_documented_matrices_over_tensor(tensor):
    the_mesh = mesh(fsdp=2, tensor=tensor)
    tensor_names = {name for name, axes in LOGICAL_AXIS_RULES if TENSOR_AXIS in axes}
    for family in ("elf", "mdlm"):  # ELF and the baselines' network
        model = network(family)
        leaf_shapes, specs = shapes(model), tree_specs(model, the_mesh)
        names = {dotted(path_names(p)): n for p, _, n in leaf_axes(model)}
        documented = {n: d for n, d in TENSOR_SPLIT.items() if n in specs}
        assert len(documented) == 8, sorted(documented)
        for name, spec in specs.items():
            ndim = len(leaf_shapes[name])
            spec = padded(spec, ndim)
            if name in documented:
                dim = ndim + documented[name]
                assert spec[dim] == TENSOR_AXIS and names[name][dim] in tensor_names, (name, spec)
            else:
                assert TENSOR_AXIS not in spec, (name, spec)


def test_without_a_tensor_axis_only_fsdp_splits():
    model = network()
    specs = {n: tuple(s) for n, s in tree_specs(model, mesh(fsdp=2)).items()}
    assert all(TENSOR_AXIS not in spec for spec in specs.values())
    assert specs["blocks.attn.qkv.weight"] == (None, None, FSDP_AXIS)  # never the stacked depth axis
    assert specs["blocks.attn.proj.weight"] == (None, FSDP_AXIS, None)
    assert specs["blocks.mlp.w12.weight"] == (None, None, FSDP_AXIS)
    assert specs["blocks.mlp.w3.weight"] == (None, FSDP_AXIS, None)
    assert specs["unembed.weight"] == (None, FSDP_AXIS)
    assert specs["time_tokens"] == () and specs["blocks.norm1.weight"] == ()  # under 16K elements
    assert all(set(spec) <= {None} for spec in tree_specs(model, mesh(fsdp=1)).values())  # nothing to split over


def test_fsdp_falls_back_down_the_table_when_the_preferred_axis_does_not_divide():
    # unembed (latent 512, vocab 32100): 32100 = 4 · 8025, so fsdp 4 takes the vocabulary, fsdp 8 the latent
    assert leaf_spec(("latent", "vocab"), (512, 32100), mesh(fsdp=4)) == PartitionSpec(None, FSDP_AXIS)
    assert leaf_spec(("latent", "vocab"), (512, 32100), mesh(fsdp=8)) == PartitionSpec(FSDP_AXIS, None)
    assert leaf_spec(("latent", "vocab"), (512, 32100), mesh(fsdp=8, tensor=4)) == PartitionSpec(FSDP_AXIS, TENSOR_AXIS)
    # the layers axis is never split, even when nothing else divides
    assert leaf_spec((LAYERS, "embed", "mlp"), (8, 1000, 3001), mesh(fsdp=8)) == PartitionSpec(None, FSDP_AXIS, None)
    assert leaf_spec((LAYERS, "embed", "mlp"), (8, 999, 3001), mesh(fsdp=8)) == PartitionSpec(None, None, None)
    assert leaf_spec(("embed", "mlp"), (8, 8), mesh(fsdp=8)) == PartitionSpec()  # small: replicated
    with pytest.raises(ValueError, match="not in partition.LOGICAL_AXIS_RULES"):
        leaf_spec(("embd", "mlp"), (1024, 4096), mesh())


class Renamed(eqx.Module):
    """The same layers under other attribute names, one level deeper."""

    fused_input_projection: Linear
    inner: eqx.Module


class Wrapper(eqx.Module):
    projection_out: Linear


def test_the_spec_comes_from_the_layer_not_the_path():
    model = network()
    the_mesh = mesh(fsdp=2, tensor=2)
    original = tree_specs(model, the_mesh)
    renamed = Renamed(model.blocks.attn.qkv, Wrapper(model.unembed))
    specs = tree_specs(renamed, the_mesh)
    assert specs["fused_input_projection.weight"] == original["blocks.attn.qkv.weight"]
    assert specs["fused_input_projection.bias"] == original["blocks.attn.qkv.bias"]
    assert specs["inner.projection_out.weight"] == original["unembed.weight"]
    assert TENSOR_AXIS in tuple(specs["fused_input_projection.weight"])


def test_an_undeclared_array_is_refused_not_replicated():
    big = eqx.filter_eval_shape(Linear, 1024, 1024, key=KEY)  # a Linear whose owner named no axes
    with pytest.raises(ValueError, match=r"declare no logical axes.*weight \(1024, 1024\)"):
        tree_specs({"model": big}, mesh())
    small = eqx.filter_eval_shape(Linear, 8, 8, key=KEY)  # too small to shard: replicated either way
    assert set(tree_specs(small, mesh()).values()) == {PartitionSpec()}
    assert MIN_SHARDED_SIZE == 1 << 14


def data_mesh(data: int, fsdp: int = 1, tensor: int = 1) -> AbstractMesh:
    return AbstractMesh((data, fsdp, tensor), MESH_AXES)


def test_zero1_splits_optimizer_state_over_data_where_a_free_axis_divides():
    # qkv (12, 768, 2304) on data 32: the columns (rank of qkv above embed) take data
    assert leaf_spec((LAYERS, "embed", "qkv"), (12, 768, 2304), data_mesh(32), over_data=True) == \
        PartitionSpec(None, None, DATA_AXIS)
    # ELF-L's w12 (32, 1280, 6826): 6826 is not a multiple of 32, so the model width takes data
    assert leaf_spec((LAYERS, "embed", "mlp"), (32, 1280, 6826), data_mesh(32), over_data=True) == \
        PartitionSpec(None, DATA_AXIS, None)
    # nothing free divides: data joins fsdp on its axis when the product divides it
    assert leaf_spec(("latent", "vocab"), (512, 32100), data_mesh(8, fsdp=8), over_data=True) == \
        PartitionSpec((FSDP_AXIS, DATA_AXIS), None)
    # never the layers axis; small arrays stay whole; without the flag nothing changes
    assert leaf_spec((LAYERS, "embed", "mlp"), (8, 999, 3001), data_mesh(8), over_data=True) == PartitionSpec(None, None, None)
    assert leaf_spec(("embed",), (768,), data_mesh(32), over_data=True) == PartitionSpec()
    assert leaf_spec((LAYERS, "embed", "qkv"), (12, 768, 2304), data_mesh(32)) == PartitionSpec(None, None, None)


@pytest.mark.parametrize("zero1", [False, True])
def test_zero1_moves_only_the_optimizer_state(zero1):
    from elf_eqx.training.state_sharding import train_state_shardings

    model = network()
    state = train_state(model, "muon")
    the_mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), MESH_AXES)
    sharded = train_state_shardings(state, the_mesh, shard_optimizer_state=zero1)
    assert jax.tree_util.tree_structure(sharded) == jax.tree_util.tree_structure(tree_shardings(state, the_mesh))
    abstract = AbstractMesh((8, 2, 1), MESH_AXES)
    plain, zero = tree_specs(state.opt_state, abstract), tree_specs(state.opt_state, abstract, over_data=True)
    moved = [name for name in plain if plain[name] != zero[name]]
    assert len(moved) > 14 and all(DATA_AXIS in str(zero[name]) for name in moved)  # Muon's momentum, Adam's moments
    assert tree_specs(state.model, abstract, over_data=False) == tree_specs(state.ema, abstract)
