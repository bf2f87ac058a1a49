"""Muon at pod scale on 8 CPU devices (a subprocess: tests/muon_shared_check.py): Newton–Schulz shared
over the mesh gives the replicated optimizer's update, and a run resumed across ZeRO-1 (saved with
replicated optimizer state, restored sharded, and back) continues bitwise."""

from __future__ import annotations

import pytest

from helpers import script_result
from tolerances import reassociation

# The shared and the replicated update are the same math; where a leaf is column-split (or the
# replicated program splits a matrix over fsdp/tensor) the float32 sums are ordered differently.
# Updates at learning rate 1 are the orthogonalised momenta (entries up to ~3): 1e-6 of the largest.
UPDATE_TOL = 1e-6


@pytest.fixture(scope="module")
def results() -> dict:
    return script_result("muon_shared_check.py", devices=8, timeout=1800)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["(8, 1, 1)", "(2, 4, 1)", "(2, 2, 2)"])
def test_shared_newton_schulz_gives_the_replicated_update(results, shape):
    got = results["updates"]["meshes"][shape]
    for against in ("vs_replicated", "vs_one_device"):
        assert got[against]["max"] <= UPDATE_TOL * got[against]["scale"], (against, got[against])
    assert got["state_vs_replicated"]["max"] == 0.0  # the momentum is elementwise: bitwise


@pytest.mark.slow
def test_on_a_data_mesh_whole_matrices_are_bitwise_the_replicated_ones(results):
    updates = results["updates"]
    split = set(updates["split_leaves"])  # ELF-T's w12 (2 × 64 × 340) on 8 devices
    differ = {name.split(".", 1)[1] for name in updates["meshes"]["(8, 1, 1)"]["vs_replicated"]["differ"]}
    assert split and differ <= split  # only the column-split leaf's sums are reordered
    assert updates["per_device_share"] < 0.2  # each of the 8 devices does under a fifth of the work


@pytest.mark.slow
def test_a_run_resumed_across_zero1_continues_bitwise(results):
    got = results["resume"]
    assert got["resumed_vs_kept"]["max"] == 0.0 and got["losses_equal"]
    assert "data" in got["momentum_spec"] and got["momentum_shard_shape"] == [2, 64, 24]  # qkv (2, 64, 192) / 8
    # against a run that never sharded its optimizer state: the gradient reduction may be ordered
    # differently (a reduce-scatter), 4 steps of ELF-T
    assert got["zero1_vs_replicated"]["max"] <= reassociation(170, layers=16) * got["zero1_vs_replicated"]["scale"]
