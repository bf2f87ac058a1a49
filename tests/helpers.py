"""Small builders shared by the core tests."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp

from elf_eqx.config import preset
from elf_eqx.model import ELF
from elf_eqx.objective import LatentBatch

TINY_D, TINY_V = 16, 40
TESTS = Path(__file__).resolve().parent  # tests/: the subprocess scripts and these helpers
REPO = TESTS.parent  # this checkout's elf_eqx, not whichever one is installed


def tiny_model(seed: int = 0, **overrides) -> ELF:
    """ELF-T (depth 2, H 64, 4 heads) with D=16, V=40, and the final layer made non-zero so
    that predictions depend on the input."""
    model = ELF(preset("ELF-T", encoder_dim=TINY_D, vocab_size=TINY_V, **overrides), key=jax.random.key(seed))
    w = 0.05 * jax.random.normal(jax.random.key(seed + 100), model.final_linear.weight.shape)
    return eqx_set(model, lambda m: m.final_linear.weight, w)


def eqx_set(tree, where, value):
    import equinox as eqx

    return eqx.tree_at(where, tree, value)


def random_batch(batch: int = 4, length: int = 8, seed: int = 1, dim: int = TINY_D) -> LatentBatch:
    """Unconditional latents, token ids and an all-true loss mask."""
    kx, kt = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (batch, length, dim))
    tokens = jax.random.randint(kt, (batch, length), 0, TINY_V)
    return LatentBatch.unconditional(x, tokens, jnp.ones((batch, length), bool))


def xla_flags(devices: int | None = None) -> str:
    """The suite's XLA flags (conftest.py: the optimisation level, any ISA cap given to the suite)
    for a subprocess, with ``devices`` CPU devices when given."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now (for a jax.distributed coordinator)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env(devices: int) -> dict[str, str]:
    """The environment of a subprocess on ``devices`` CPU devices that imports this checkout and
    these helpers."""
    env = dict(os.environ)
    path = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices), PYTHONPATH=path)
    return env


def run_two_processes(command: list[str], env: dict[str, str], timeout: int = 600) -> list[str]:
    """Run ``command`` as processes 0 and 1 of one ``jax.distributed`` job (a fresh coordinator
    port on 127.0.0.1), each with ``env``; both must exit 0. Returns each process's stderr."""
    import subprocess

    address = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([*command, "--coordinator-address", address, "--num-processes", "2", "--process-id",
                               str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}: {err[-3000:]}"
    return [err for _, err in outs]


def logged_losses(folder: Path) -> list[float]:
    """The losses a local run folder's ``metrics.jsonl`` logged, in order."""
    import json

    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def script_result(script: str, devices: int, timeout: int, *args: str, cwd: Path = TESTS) -> dict:
    """Run the script ``tests/<script> args…`` in ``cwd`` on ``devices`` CPU devices; the JSON its
    last line prints."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(TESTS / script), *args], env=cpu_env(devices), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_same_batches(mine, theirs, batches: int) -> None:
    """The next ``batches`` batches of two loaders are equal, array by array."""
    import numpy as np

    for _ in range(batches):
        a, b = next(mine), next(theirs)
        assert a.keys() == b.keys()
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
