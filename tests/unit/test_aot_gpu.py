"""Compiling for NVIDIA cards with no GPU (elf_eqx.aot with the CUDA plugin and XLA's target specs).

Runs where JAX's CUDA plugin is installed (``pip install -e ".[gpu-aot]"``); skipped otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from elf_eqx.aot import analyze, compile_for_target, parse_target, render_reports, target_mesh
from elf_eqx.aot.devices import has_cuda_plugin
from elf_eqx.parallel.mesh import MeshConfig

pytestmark = pytest.mark.skipif(not has_cuda_plugin(),
                                reason='JAX\'s CUDA plugin is not installed (pip install -e ".[gpu-aot]")')


@pytest.mark.parametrize("spelling", ["h100", "h200", "a100", "a100-40", "h100x16"])
def test_every_gpu_spec_gives_devices_of_its_card(spelling):
    target = parse_target(spelling)
    devices = target.devices()
    assert len(devices) == target.chips and {d.device_kind for d in devices} == {target.device_kind}
    assert {d.platform for d in devices} == {"gpu"} and len({d.process_index for d in devices}) == target.hosts


def test_an_fsdp_step_on_four_h100s_has_memory_and_async_collectives_but_no_estimate():
    target = parse_target("h100x4")
    mesh = target_mesh(target, MeshConfig(data=1, fsdp=4))
    shard = NamedSharding(mesh, PartitionSpec("fsdp", None))
    w = jax.ShapeDtypeStruct((1024, 512), jnp.float32, sharding=shard)
    x = jax.ShapeDtypeStruct((64, 1024), jnp.float32, sharding=shard)

    def step(w, x):
        return w - 0.1 * jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2))(w)

    program = compile_for_target(step, (w, x), target=target, mesh=mesh, out_shardings=shard, donate_argnums=0)
    assert program.compiled.as_text().count("-start(") >= 2  # the GPU compiler runs collectives asynchronously
    report = analyze(program, target, global_batch=64, analytic_flops=1e9, tokens_per_step=64)
    assert report["argument_bytes"] == (1024 * 512 + 64 * 1024) * 4 // 4
    assert report["alias_bytes"] == 1024 * 512 and report["fits"] is True
    assert report["hbm_bytes_per_device"] == 84942979072
    assert report["compiler_flops"] is None and report["compiler_estimate_s"] is None and report["mfu"] is None
    gather, scatter = report["collectives"]["all-gather"], report["collectives"]["reduce-scatter"]
    assert gather["async_count"] == gather["count"] == 1 and gather["bytes"] == 1024 * 512 * 4
    assert scatter["count"] == 1 and scatter["bytes"] == 1024 * 512 * 4
    assert "step time (compiler estimate)" in render_reports([report])


def test_cudnn_attention_compiles_to_its_custom_call_and_an_over_hbm_program_still_compiles():
    target = parse_target("h100")
    mesh = target_mesh(target)
    q = jax.ShapeDtypeStruct((2, 128, 4, 64), jnp.bfloat16)
    program = compile_for_target(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn"),
                                 (q, q, q), target=target, mesh=mesh)
    assert "__cudnn$fmha" in program.compiled.as_text()
    big = jax.ShapeDtypeStruct((48, 2**30), jnp.bfloat16)  # 96 GiB in, 96 GiB out
    report = analyze(compile_for_target(lambda a: a * 2, (big,), target=target, mesh=mesh), target)
    assert report["total_bytes"] >= 192 * 2**30 and report["fits"] is False and report["out_of_memory"] is None


def test_xla_options_reach_the_deviceless_compile():
    target = parse_target("a100")
    mesh = target_mesh(target)
    a = jax.ShapeDtypeStruct((256, 256), jnp.float32)
    program = compile_for_target(lambda a, b: a @ b, (a, a), target=target, mesh=mesh,
                                 compiler_options={"xla_gpu_enable_triton_gemm": False})
    text = program.compiled.as_text()
    assert "__cublas" in text and "gemm_fusion" not in text  # cuBLAS calls instead of Triton GEMM fusions
