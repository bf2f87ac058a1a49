"""Restore on any mesh: a run trained and saved on 8 CPU devices (fsdp 4 × tensor 2, in a
subprocess) restores on this process's one device with bitwise-equal weights, samples the same
tokens as on its mesh, exports (one tensor at a time) to a folder that samples the same tokens,
continues training on one device, and on a mesh of another shape starts a run (--init-from) and
teaches a distillation round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from elf_eqx.export import main as export_main
from elf_eqx.release.model_source import load_model_source
from elf_eqx.sampling.text import TextSampler
from elf_eqx.training.state_tree import named_leaves
from helpers import script_result

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sharded")
    return out, script_result("export_mesh_check.py", 8, 1200, str(out), cwd=out)


def draw(source: str) -> list[list[int]]:
    session = TextSampler.open(source)
    records = session.draw(session.bundle.sampling, seed=0, batch_size=8, num_samples=8, progress=False)
    return [r["token_ids"] for r in records]


def test_a_sharded_checkpoint_restores_on_one_device_bitwise_and_samples_the_same_tokens(sharded, tmp_path):
    out, mesh = sharded
    assert mesh["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2} and mesh["step"] == 2
    assert any("blocks" in name for name in mesh["split_leaves"])  # the checkpoint really was saved split
    assert mesh["init_from_kept"] and mesh["distilled"]  # on data 2 × fsdp 2 × tensor 2
    on_mesh = dict(np.load(out / "ema.npz"))
    bundle = load_model_source(str(out / "run"))
    here = {".".join(n): leaf for n, leaf in named_leaves(bundle.model)}
    assert here.keys() == on_mesh.keys()
    for name, leaf in here.items():
        assert len(leaf.devices()) == 1 and np.array_equal(np.asarray(leaf), on_mesh[name]), name
    assert draw(str(out / "run")) == mesh["tokens"]

    folder = tmp_path / "exported"  # one tensor at a time from the sharded checkpoint
    export_main([str(out / "run"), "--output", str(folder)])
    assert draw(str(folder)) == mesh["tokens"]


def test_a_sharded_run_continues_on_one_device(sharded, tmp_path):
    import shutil

    from elf_eqx.train import main as train_main
    from export_mesh_check import TRAIN

    out, _ = sharded
    run = tmp_path / "run"
    shutil.copytree(out / "run", run)
    mesh_flags = TRAIN.index("--mesh-data")
    train_main([*TRAIN[:mesh_flags], "--max-steps", "3", "--cache-dir", str(out / "cache"), "--output-dir", str(run)])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and np.isfinite(lines[-1]["loss"])
