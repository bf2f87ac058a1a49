"""The training step on data, data × fsdp and data × fsdp × tensor meshes of 8 CPU devices compiles
without XLA's "Involuntary full rematerialization" (a tensor the partitioner replicates and re-splits
on every step because it cannot move it from one sharding to another): the compiler's log of a
dry run of ELF-T (Muon shared, ZeRO-1 on and off), read from the subprocess's stderr."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO, cpu_env

WARNING = "Involuntary full rematerialization"
# Batch 16 on 8 shards: the decode branch takes 3 rows and the denoise branch 13, padded to 8 and 16.
TINY = ["--preset", "quickstart", "--model", "ELF-T", "--optimizer", "muon", "--max-length", "16", "--global-batch", "16",
        "--data", "/no/such/data.jsonl", "--output-dir", "unused", "--dry-run", "--target", "local", "--no-estimate"]
MESHES = {"data 8": [], "data 2 × fsdp 4": ["--mesh-fsdp", "4"],
          "data 2 × fsdp 2 × tensor 2": ["--mesh-fsdp", "2", "--mesh-tensor", "2"]}


@pytest.mark.slow
@pytest.mark.parametrize("zero1", [False, True], ids=["replicated optimizer state", "zero1"])
@pytest.mark.parametrize("mesh", list(MESHES))
def test_the_step_compiles_without_involuntary_rematerialization(mesh, zero1):
    flags = [*TINY, *MESHES[mesh], *(["--shard-optimizer-state"] if zero1 else ["--no-shard-optimizer-state"])]
    env = {**cpu_env(8), "TF_CPP_MIN_LOG_LEVEL": "0"}  # XLA's warnings reach stderr
    done = subprocess.run([sys.executable, "-m", "elf_eqx.train", *flags], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices (hosts)" in done.stdout  # the report: the step was compiled
    found = [line[:400] for line in done.stderr.splitlines() if WARNING in line]
    assert not found, "\n".join(found)
