"""Newton–Schulz shared over compile-only TPU chips (elf_eqx.training.ns_shared): on four
data-parallel v5p chips each chip's Newton–Schulz FLOPs are a quarter of the replicated optimizer's,
and the results come back through one all-gather."""

from __future__ import annotations


import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from optax.contrib import MuonDimensionNumbers

from elf_eqx.aot import analyze, compile_for_target, parse_target, target_mesh
from elf_eqx.aot.devices import has_libtpu
from elf_eqx.config import preset
from elf_eqx.model import ELF
from elf_eqx.nn.axes import leaf_axes
from elf_eqx.parallel.mesh import MeshConfig, traced_on
from elf_eqx.training.ns_shared import from_matrices, to_matrices
from elf_eqx.training.optim import _muon_matrix, newton_schulz_plan, orthogonalize_tree



def test_a_leaf_goes_to_its_matrices_and_back():
    x = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
    dims = MuonDimensionNumbers(reduction_axis=(1,), output_axis=3)
    m = to_matrices(x, dims)
    assert m.shape == (8, 3, 5)  # the batch axes (0, 2) first, then reduction, then output
    assert (from_matrices(m, x.shape, dims) == x).all()


@pytest.mark.slow  # two TPU compiles: ~20 s on 2 cores
@pytest.mark.skipif(not has_libtpu(), reason='libtpu not installed (pip install -e ".[tpu-aot]")')
def test_four_data_parallel_chips_each_do_a_quarter_of_the_newton_schulz_flops():
    target = parse_target("v5p:2x2x1")
    mesh = target_mesh(target, MeshConfig(data=4))
    model = eqx.filter_eval_shape(ELF, preset("ELF-XS", depth=8, encoder_dim=16, vocab_size=40), key=jax.random.key(0))
    matrices = [(leaf, _muon_matrix(path, axes)) for path, leaf, axes in leaf_axes(model)]
    matrices = [(leaf, dims) for leaf, dims in matrices if dims is not None]
    dims = [d for _, d in matrices]
    whole = NamedSharding(mesh, PartitionSpec())
    args = ([jax.ShapeDtypeStruct(leaf.shape, jnp.float32, sharding=whole) for leaf, _ in matrices],
            jax.ShapeDtypeStruct((3,), jnp.float32, sharding=whole))

    def per_chip(share: bool) -> dict:
        def program(xs, coeffs):
            with traced_on(mesh):
                return orthogonalize_tree(xs, dims, coeffs, ns_dtype=jnp.bfloat16, ns_steps=5, eps=1e-8, share=share)
        return analyze(compile_for_target(jax.jit(program), args, target=target, mesh=mesh), target)

    replicated, shared = per_chip(False), per_chip(True)
    plan = newton_schulz_plan(model, 4)
    assert plan.total_flops / plan.per_device_flops == pytest.approx(3.97, abs=0.01)
    ratio = replicated["compiler_flops_per_device"] / shared["compiler_flops_per_device"]
    assert 3.6 < ratio <= 4.0, ratio  # per chip: a quarter, up to the balance of 8×4 + 11 matrices on 4 chips
    gather = shared["collectives"]["all-gather"]
    assert gather["count"] == 1 and gather["bytes"] == 2 * plan.gathered_elements()  # bf16 results, once
    assert not replicated["collectives"]
