"""Run with 8 CPU devices by tests/integration/test_export_mesh.py: a tiny ELF run trained on an
fsdp 4 × tensor 2 mesh (so its checkpoint is saved sharded), then its EMA restored onto that mesh
and written out gathered, samples drawn on that mesh, and on a mesh of another shape (data 2 ×
fsdp 2 × tensor 2) a run started from it (--init-from, learning rate 0: its weights kept) and a
distillation round taught by it. Prints one JSON object."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from elf_eqx.distill import main as distill_main
from elf_eqx.parallel.mesh import MeshConfig, make_mesh
from elf_eqx.parallel.partition import tree_shardings
from elf_eqx.sampling.text import TextSampler
from elf_eqx.train import main as train_main
from elf_eqx.training.run_directory import load_model_from_checkpoint, open_run
from elf_eqx.training.state_tree import named_leaves
from elf_eqx.training.trainer import abstract_on_mesh

MESH = MeshConfig(1, 4, 2)
OTHER_MESH = ["--mesh-data", "2", "--mesh-fsdp", "2", "--mesh-tensor", "2"]
TRAIN = ["--preset", "quickstart", "--model", "ELF-T", "--max-length", "16", "--global-batch", "8",
         "--warmup-steps", "1", "--log-every", "1", "--save-every", "2", "--sampling.every", "100", "--max-steps", "2",
         "--mesh-data", "1", "--mesh-fsdp", "4", "--mesh-tensor", "2"]


def main(out: Path) -> None:
    run = out / "run"
    train_main([*TRAIN, "--cache-dir", str(out / "cache"), "--output-dir", str(run)])
    mesh = make_mesh(MESH)
    with open_run(run) as opened:
        record, step = opened.record()
        template = record.model_family.network_template(record.architecture)
        ema = opened.manager.restore_part(abstract_on_mesh(template, tree_shardings(template, mesh)), "ema", step)
    leaves = named_leaves(ema)
    split = [".".join(n) for n, leaf in leaves if len(leaf.sharding.device_set) == 8
             and not leaf.sharding.is_fully_replicated]
    np.savez(out / "ema.npz", **{".".join(n): np.asarray(jax.device_get(leaf)) for n, leaf in leaves})
    session = TextSampler.open(str(run), mesh=MESH)
    records = session.draw(session.bundle.sampling, seed=0, batch_size=8, num_samples=8, progress=False)

    started = out / "init_from"
    train_main([*TRAIN[:TRAIN.index("--max-steps")], "--max-steps", "1", "--save-every", "1", "--blr", "0",
                "--warmup-steps", "0", *OTHER_MESH, "--init-from", str(run), "--cache-dir", str(out / "cache"),
                "--output-dir", str(started)])
    kept = {".".join(n): np.asarray(leaf) for n, leaf in named_leaves(load_model_from_checkpoint(started, "model"))}
    students = out / "students"
    distill_main([str(run), "--from-steps", "4", "--to-steps", "2", "--steps-per-round", "1", "--global-batch", "8",
                  "--save-every", "1", "--samples-every", "1", "--warmup-steps", "0", *OTHER_MESH,
                  "--cache-dir", str(out / "cache"), "--output-dir", str(students)])
    json.dump({"step": step, "split_leaves": split, "mesh": dict(session.mesh.shape),
               "tokens": [r["token_ids"] for r in records],
               "init_from_kept": all(np.array_equal(kept[".".join(n)], np.asarray(jax.device_get(leaf)))
                                     for n, leaf in leaves),
               "distilled": json.loads((students / "distillation.json").read_text())["rounds"]["2"]["complete"]},
              sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
