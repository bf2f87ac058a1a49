"""On a real mesh with ``tensor = 2`` (4 CPU devices in a subprocess, whatever this host has),
the parameters whose declared logical axes the partition table maps to ``tensor`` are placed
split over it: each device holds half of that dimension."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import xla_flags

PLACE = r"""
import json
import jax, numpy as np
from elf_eqx.config import preset
from elf_eqx.model import ELF
from elf_eqx.parallel.mesh import MeshConfig, TENSOR_AXIS, make_mesh
from elf_eqx.parallel.partition import tree_shardings, tree_specs
from elf_eqx.tree_paths import dotted, path_names

mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2))
model = ELF(preset("ELF-XS", encoder_dim=64, vocab_size=512), key=jax.random.key(0))
placed = jax.device_put(model, tree_shardings(model, mesh))
specs = tree_specs(model, mesh)
report = {}
for path, leaf in jax.tree_util.tree_leaves_with_path(placed):
    name = dotted(path_names(path))
    spec = tuple(specs[name])
    if TENSOR_AXIS in spec:
        dim = spec.index(TENSOR_AXIS)
        shard = leaf.addressable_shards[0].data.shape
        report[name] = {"whole": leaf.shape[dim], "shard": shard[dim], "dim": dim - leaf.ndim,
                        "devices": len(leaf.devices())}
print(json.dumps(report))
"""


def test_rule_parameters_are_split_over_tensor_on_a_mesh():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(4))
    done = subprocess.run([sys.executable, "-c", PLACE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    weights = {"blocks.attn.qkv.weight": -1, "blocks.attn.proj.weight": -2, "blocks.mlp.w12.weight": -1,
               "blocks.mlp.w3.weight": -2, "unembed.weight": -1}
    assert set(weights) <= set(report), sorted(report)
    for name, got in report.items():
        assert got["devices"] == 4 and got["shard"] * 2 == got["whole"], (name, got)
        assert name not in weights or got["dim"] == weights[name], (name, got)
