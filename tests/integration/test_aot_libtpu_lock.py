"""libtpu held by another process: a TPU target's devices fail with a one-line error saying how to
share it (ALLOW_MULTIPLE_LIBTPU_LOAD=1), and succeed with that set.

Runs two fresh processes (libtpu's lock is taken when it loads, once per process). The rest of the
suite runs with ALLOW_MULTIPLE_LIBTPU_LOAD=1 (tests/conftest.py), so it passes while another process
holds libtpu.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from elf_eqx.aot.devices import has_libtpu

REPO = Path(__file__).resolve().parents[2]

HOLD = """
from jax.experimental import topologies
try:
    topologies.get_topology_desc("v5p:2x2x1", "tpu")
finally:
    print("loaded", flush=True)
import time
time.sleep(120)
"""

ASK = """
from elf_eqx.aot import parse_target
from elf_eqx.errors import ConfigError
try:
    print("devices", len(parse_target("v5p:2x2x1").devices()))
except ConfigError as error:
    print("ConfigError", error)
"""


@pytest.mark.skipif(not has_libtpu(), reason='libtpu not installed (pip install -e ".[tpu-aot]")')
def test_a_held_libtpu_is_a_clear_error_until_sharing_is_allowed():
    env = {k: v for k, v in os.environ.items() if k != "ALLOW_MULTIPLE_LIBTPU_LOAD"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}")
    holder = subprocess.Popen([sys.executable, "-c", HOLD], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "loaded"  # (or it failed because another process holds it)
        held = subprocess.run([sys.executable, "-c", ASK], env=env, capture_output=True, text=True, timeout=300)
        line = held.stdout.strip().splitlines()[-1]
        assert line.startswith("ConfigError --target v5p:2x2x1: libtpu is held by another process")
        assert "ALLOW_MULTIPLE_LIBTPU_LOAD=1" in line
        shared = subprocess.run([sys.executable, "-c", ASK], env={**env, "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"},
                                capture_output=True, text=True, timeout=300)
        assert shared.stdout.strip().splitlines()[-1] == "devices 4"
    finally:
        holder.kill()
        holder.wait()
