"""On a real mesh with ``tensor = 2`` (4 CPU devices in a subprocess, whatever this host has),
the parameters the partition rules name are placed split over ``tensor``: each device holds
half of the rule's dimension."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PLACE = r"""
import json, re
import jax, numpy as np
from elf_eqx.config import preset
from elf_eqx.model import ELF
from elf_eqx.parallel.mesh import MeshConfig, make_mesh
from elf_eqx.parallel.partition import MIN_SHARDED_SIZE, TENSOR_RULES, dotted_path, tree_shardings

mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2))
model = ELF(preset("ELF-XS", encoder_dim=64, vocab_size=512), key=jax.random.key(0))
placed = jax.device_put(model, tree_shardings(model, mesh))
report = {}
for path, leaf in jax.tree_util.tree_leaves_with_path(placed):
    name = dotted_path(path)
    for pattern, dim in TENSOR_RULES:
        if re.search(pattern, name) and leaf.size >= MIN_SHARDED_SIZE:
            shard = leaf.addressable_shards[0].data.shape
            report[name] = {"whole": leaf.shape[dim], "shard": shard[dim], "devices": len(leaf.devices())}
print(json.dumps(report))
"""


def test_rule_parameters_are_split_over_tensor_on_a_mesh():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0")
    done = subprocess.run([sys.executable, "-c", PLACE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    weights = {f"blocks.{m}.weight" for m in ("attn.qkv", "attn.proj", "mlp.w12", "mlp.w3")} | {"unembed.weight"}
    assert weights <= set(report), sorted(report)
    for name, got in report.items():
        assert got["devices"] == 4 and got["shard"] * 2 == got["whole"], (name, got)
