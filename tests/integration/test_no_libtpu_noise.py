"""A command on a host without a TPU prints nothing from libtpu, though ``[dev]`` installs it.

JAX would try its TPU backend on every host where libtpu is installed, and on a host with no TPU
chip libtpu prints an error block first. The command lines keep JAX to the hardware present
(elf_eqx/parallel/platforms.py). Each command runs in a fresh process without ``JAX_PLATFORMS``
(which the test session sets for itself), as a user's shell would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from elf_eqx.parallel.platforms import has_libtpu, prefer_present_hardware, tpu_chip_count

REPO = Path(__file__).resolve().parents[2]
LIBTPU_LINES = ("host bounds", "TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE", "libtpu", "InitGoogle",
                "worker hostname", "Source Location Trace")

pytestmark = pytest.mark.skipif(tpu_chip_count() > 0, reason="this host has TPU chips: JAX should use them")


def _user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "JAX_FORCE_TPU_INIT")}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(word in line for word in LIBTPU_LINES)]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], env=_user_env(), cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.skipif(not has_libtpu(), reason="without libtpu there is no noise to show")
def test_plain_jax_would_print_the_libtpu_block(tmp_path):
    """The control: what the commands avoid is real on this host (so the test below can fail)."""
    done = _run(["-c", "import jax; jax.devices()"], tmp_path)
    assert _noise(done.stderr), done.stderr


@pytest.mark.slow
def test_help_and_a_one_step_run_print_nothing_from_libtpu(tmp_path, shared_dir):
    assert not _noise(_run(["-m", "elf_eqx.train", "--help"], tmp_path).stderr)
    corpus = tmp_path / "chapters.jsonl"
    corpus.write_text("\n".join((shared_dir / "data" / "kjv" / "valid.jsonl").read_text().splitlines()[:4]) + "\n")
    done = _run(["-m", "elf_eqx.train", "--preset", "quickstart", "--model", "ELF-T", "--global-batch", "2",
                 "--max-length", "16", "--warmup-steps", "1", "--log-every", "1", "--max-steps", "1",
                 "--sampling.every", "1", "--sampling.steps", "2", "--sampling.num-samples", "1",
                 "--data", str(corpus), "--cache-dir", str(tmp_path / "cache"),
                 "--output-dir", str(tmp_path / "run")], tmp_path)
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert not _noise(done.stderr), _noise(done.stderr)


def test_a_users_platform_choice_is_left_alone(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert prefer_present_hardware() is None
