"""Explicit sharding on 8 CPU devices (a subprocess, since this test process has one device):
train steps and sampling on several meshes match one device, a checkpoint saved on one mesh
restores on another; two ``jax.distributed`` processes train like one; bad meshes are named."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import AbstractMesh

from elf_eqx.parallel.mesh import MeshConfig, check_global_batch
from elf_eqx.config import preset
from helpers import cpu_env, logged_losses, run_two_processes, script_result
from tolerances import reassociation

# A mesh's program against one device's: XLA splits and reorders the float32 sums. Losses, weights
# and latents are O(1); a training step is ELF-T's 2 blocks forward and back, a sampling step forward.
FAN_IN = preset("ELF-T").mlp_hidden
TRAIN_TOL = reassociation(FAN_IN, layers=2 * 4)  # sharding_check.py trains 2 steps
SAMPLE_TOL = reassociation(FAN_IN, layers=3 * 2)  # and samples 3


@pytest.fixture(scope="module")
def mesh_results() -> dict:
    return script_result("sharding_check.py", devices=8, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["(8, 1, 1)", "(2, 4, 1)", "(1, 8, 1)", "(2, 2, 2)"])
def test_train_step_on_a_mesh_matches_one_device(mesh_results, shape):
    got = mesh_results["train"][shape]
    assert got["loss"] < TRAIN_TOL and got["state"] < TRAIN_TOL
    if shape != "(8, 1, 1)":
        assert got["sharded_leaves"] > 0  # parameters and optimizer state really are split


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["(8, 1, 1)", "(2, 4, 1)", "(1, 8, 1)", "(2, 2, 2)"])
def test_sampling_on_a_mesh_matches_one_device(mesh_results, shape):
    got = mesh_results["sample"][shape]
    assert got["tokens_equal"] and got["latents"] < SAMPLE_TOL


@pytest.mark.slow
def test_checkpoint_saved_on_one_mesh_restores_on_another(mesh_results):
    got = mesh_results["restore"]
    assert got["restored_on"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert got["state_vs_saved"] == 0.0 and got["loss"] < reassociation(FAN_IN, layers=4)


def test_bad_meshes_and_batches_are_named():
    with pytest.raises(ValueError, match=r"needs 16 devices, but only 8 are available"):
        MeshConfig(2, 4, 2).shape(8)
    with pytest.raises(ValueError, match="8 devices do not split into fsdp 3"):
        MeshConfig(-1, 3, 1).shape(8)
    with pytest.raises(ValueError, match="--global-batch 12 is not divisible by the 8 devices of the data×fsdp"):
        check_global_batch(12, AbstractMesh((2, 4, 1), ("data", "fsdp", "tensor")))


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, corpus):
    args = ["--preset", "quickstart", "--model", "ELF-T", "--global-batch", "8", "--max-length", "16",
            "--warmup-steps", "2", "--log-every", "1", "--save-every", "3", "--sample-every", "3", "--max-steps", "3",
            "--sample-steps", "2", "--num-samples", "4", "--data", str(corpus), "--cache-dir", str(tmp_path / "cache"),
            "--mesh-fsdp", "2"]
    train = [sys.executable, "-m", "elf_eqx.train", *args]
    one = subprocess.run([*train, "--output-dir", str(tmp_path / "one")], env=cpu_env(4), capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    run_two_processes([*train, "--output-dir", str(tmp_path / "two")], cpu_env(2))
    losses = logged_losses

    # two processes' program against one's, through 3 steps of ELF-T forward and back
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=reassociation(FAN_IN, layers=12))
    assert len(losses(tmp_path / "two")) == 3  # one writer: process 0
    assert (tmp_path / "two" / "checkpoints" / "3").is_dir()
    assert (tmp_path / "two" / "samples" / "step_0000003.txt").is_file()

    # The two processes' checkpoint restores in this one process (one device), near the one-process run's
    # weights, and exports one tensor at a time to the same weights, bitwise.
    from elf_eqx.export import main as export_main
    from elf_eqx.io.safetensors_io import SafetensorsFolder
    from elf_eqx.training.run_directory import load_model_from_checkpoint
    from elf_eqx.training.state_tree import named_leaves
    from tolerances import assert_reassociated

    two = {".".join(n): np.asarray(leaf) for n, leaf in named_leaves(load_model_from_checkpoint(tmp_path / "two"))}
    one = {".".join(n): np.asarray(leaf) for n, leaf in named_leaves(load_model_from_checkpoint(tmp_path / "one"))}
    for name in one:
        assert_reassociated(two[name], one[name], terms=FAN_IN, layers=12)
    export_main([str(tmp_path / "two"), "--output", str(tmp_path / "exported")])
    exported = SafetensorsFolder(tmp_path / "exported")
    assert all(np.array_equal(exported.read(name), value) for name, value in two.items())
