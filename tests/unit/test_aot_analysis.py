"""Compiling for compile-only TPU chips and reading the report (elf_eqx.aot.compile, .analysis, .render).

Each program is tiny (a compile of about a second on two CPU cores); none depends on how many
devices this machine has.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from elf_eqx.aot import (REQUIRED_KEYS, abstract, analyze, compile_for_target, parse_target, per_device_bytes,
                         render_reports, target_mesh)
from elf_eqx.aot.devices import has_libtpu
from elf_eqx.parallel.mesh import MeshConfig


pytestmark = pytest.mark.skipif(not has_libtpu(), reason='libtpu not installed (pip install -e ".[tpu-aot]")')


@pytest.fixture(scope="module")
def four_chips():
    """Four compile-only v5p chips on an fsdp axis."""
    target = parse_target("v5p:2x2x1")
    return target, target_mesh(target, MeshConfig(data=1, fsdp=4))


def test_a_parameter_sharded_over_fsdp_takes_its_share_of_each_chip(four_chips):
    target, mesh = four_chips
    w = jax.ShapeDtypeStruct((1024, 256), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp", None)))
    x = jax.ShapeDtypeStruct((8, 1024), jnp.float32)  # no sharding: replicated on the target's mesh
    program = compile_for_target(lambda w, x: x @ w, (w, x), target=target, mesh=mesh)
    report = analyze(program, target, global_batch=8, analytic_flops=2.0 * 8 * 1024 * 256, tokens_per_step=8,
                     steps_per_epoch=100, param_bytes_per_device=per_device_bytes(w))
    share = 1024 * 256 * 4 // 4
    assert report["param_bytes_per_device"] == share
    replicated_x = abstract(x, NamedSharding(mesh, PartitionSpec()))
    assert report["argument_bytes"] == share + 8 * 1024 * 4 == per_device_bytes((w, replicated_x))
    assert report["total_bytes"] == (report["argument_bytes"] + report["output_bytes"] + report["temp_bytes"]
                                     - report["alias_bytes"])
    assert report["fits"] is True and 0.99 < report["headroom"] < 1
    assert report["devices"] == 4 and report["hosts"] == 1 and report["compile_s"] > 0
    # TPU has a cost model: a step-time estimate and what follows from it, per device times devices.
    assert report["compiler_estimate_s"] > 0 and report["compiler_flops"] == 4 * report["compiler_flops_per_device"]
    assert report["tokens_per_s"] == pytest.approx(8 / report["compiler_estimate_s"])
    assert report["mfu"] == pytest.approx(report["analytic_flops"] / (report["compiler_estimate_s"] * 459e12 * 4))
    assert report["epoch_s"] == pytest.approx(100 * report["compiler_estimate_s"])
    assert set(REQUIRED_KEYS) <= set(report)
    assert json.loads(json.dumps(report))["target"] == "v5p:2x2x1"


def test_an_array_too_big_for_one_chip_does_not_fit():
    target = parse_target("v5p:1x1x1")
    mesh = target_mesh(target)
    half = jax.ShapeDtypeStruct((32, 2**30), jnp.bfloat16)  # 64 GiB: fits alone, not with its output
    # The TPU compiler refuses a program over HBM; the report says it does not fit, with the compiler's total.
    refused = compile_for_target(lambda a: a * 2, (half,), target=target, mesh=mesh)
    assert refused.compiled is None and "RESOURCE_EXHAUSTED" in refused.out_of_memory
    report = analyze(refused, target)
    assert report["fits"] is False and report["total_bytes"] == 128 * 2**30 and report["headroom"] < 0
    assert report["argument_bytes"] is None and report["compiler_estimate_s"] is None
    # Donated, the output reuses the argument's buffer: it compiles, and fits.
    donated = analyze(compile_for_target(lambda a: a * 2, (half,), target=target, mesh=mesh, donate_argnums=0), target)
    assert donated["argument_bytes"] == donated["output_bytes"] == donated["alias_bytes"] == 64 * 2**30
    assert donated["fits"] is True and donated["total_bytes"] < target.hbm_bytes
    table = render_reports([report, donated])
    assert "NO (over by" in table and "the compiler refused it: RESOURCE_EXHAUSTED" in table


def test_gathering_a_sharded_parameter_shows_an_all_gather_of_its_full_size(four_chips):
    target, mesh = four_chips
    w = jax.ShapeDtypeStruct((1024, 256), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp", None)))
    program = compile_for_target(lambda w: w * 2, (w,), target=target, mesh=mesh,
                                 out_shardings=NamedSharding(mesh, PartitionSpec()))
    report = analyze(program, target)
    gather = report["collectives"]["all-gather"]
    assert gather["count"] == 1 and gather["bytes"] == 1024 * 256 * 4
    assert report["output_bytes"] == 1024 * 256 * 4 and report["argument_bytes"] == 1024 * 256


def test_a_scan_is_reported_as_a_loop_whose_body_the_compiler_counts_once(four_chips):
    target, mesh = four_chips
    layers = jax.ShapeDtypeStruct((6, 256, 256), jnp.float32)

    def stack(layers, x):
        return jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, layers)[0]

    x = jax.ShapeDtypeStruct((64, 256), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp", None)))
    report = analyze(compile_for_target(stack, (layers, x), target=target, mesh=mesh), target)
    assert report["while_loops"] == 1
    one_layer = 2 * 16 * 256 * 256  # per device: 16 rows
    assert one_layer <= report["compiler_flops_per_device"] < 2 * one_layer
    assert "XLA counts each while/scan body once" in render_reports([report])


def test_the_table_labels_every_estimate_as_the_compilers_and_dashes_what_is_missing():
    base = {"program": "train_step", "target": "v5p-64", "devices": 32, "hosts": 8, "global_batch": 512,
            "argument_bytes": 2**30, "output_bytes": 2**30, "temp_bytes": 5 * 2**30, "alias_bytes": 2**30,
            "total_bytes": 6 * 2**30, "hbm_bytes_per_device": 95 * 10**9, "fits": True, "headroom": 0.93,
            "analytic_flops": 1e15, "compiler_flops": 9e14, "compiler_estimate_s": 0.25, "tokens_per_s": 2e6,
            "mfu": 0.27, "epoch_s": 5400.0, "collectives": {"all-gather": {"count": 3, "bytes": 3 * 2**20,
                                                                           "in_loop_count": 0}},
            "while_loops": 0, "compile_s": 12.0}
    gpu = {**base, "target": "h100x8", "program": "sample_step", "compiler_flops": None, "compiler_estimate_s": None,
           "tokens_per_s": None, "mfu": None, "epoch_s": None, "collectives": {}}
    table = render_reports([base, gpu])
    lines = table.splitlines()
    assert "train_step @ v5p-64" in lines[0] and "sample_step @ h100x8" in lines[0]
    for label in ("step time", "tokens/s", "MFU", "time per epoch"):
        row = next(line for line in lines if line.startswith(label))
        assert "(compiler estimate)" in row
    assert any(line.startswith("step time") and "0.25 s" in line and line.rstrip().endswith("–") for line in lines)
    assert any("27.0%" in line for line in lines) and any("1.50 h" in line for line in lines)
    assert any(line.startswith("collective: all-gather") and "3 ops, 3.00 MiB" in line for line in lines)
    assert "yes (93% free)" in table and "no cost model" in table
