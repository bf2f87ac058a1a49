"""Importing a command line starts no JAX backend: ``jax.distributed.initialize`` (multi-host
runs) must come before anything touches a device."""

from __future__ import annotations

import os
import subprocess
import sys

CHECK = """
import elf_eqx.train, elf_eqx.sample, elf_eqx.distill, elf_eqx.eval, elf_eqx.convert
from jax._src import xla_bridge
print(xla_bridge.backends_are_initialized())
"""


def test_importing_the_command_lines_starts_no_backend():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
