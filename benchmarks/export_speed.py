"""What exporting a model costs (issue 30): export and load time and folder size for ELF-XS, ELF-B
and ELF-M, and the peak host memory of exporting ELF-M from a checkpoint saved sharded on 8 devices.

For each preset a randomly initialised training state (network, EMA, Muon state) is saved as a run
by the training checkpointer — on ``--devices`` CPU devices as an fsdp × tensor mesh (a subprocess
with ``--xla_force_host_platform_device_count``), so every array is saved split — with the offline
MiniLM tokenizer and encoder (width 384, 30,522 ids: the ELF-B/M blocks are the published ones, the
embedding and vocabulary head a little smaller than T5's). Then, each in a fresh one-device process
whose peak resident memory (``ru_maxrss``) is read when it ends:

- ``export``: ``python -m elf_eqx.export RUN --output DIR`` (the weights read one tensor at a time);
- ``load``: ``load_model_source(DIR)`` (the exported folder onto one device);
- ``load run``: ``load_model_source(RUN)`` (the whole EMA restored from the checkpoint: what an export
  that loaded the model first would hold);
- ``idle``: the same imports, JAX start-up and the tokenizer, no weights (the floor under every figure).

Times are of the call alone (``process_seconds``: with the imports and start-up).

    python benchmarks/export_speed.py --out runs/export_bench                 # ELF-XS, ELF-B, ELF-M
    python benchmarks/export_speed.py --presets ELF-XS --devices 1
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from elf_eqx.cli.errors import run_parsed

_MAKE = """
import sys, jax, equinox as eqx
from elf_eqx.config import preset
from elf_eqx.data import DataSpec
from elf_eqx.encoders.load import load_tokenizer
from elf_eqx.families import ELF_FAMILY
from elf_eqx.parallel.mesh import MeshConfig, make_mesh
from elf_eqx.parallel.partition import tree_shardings
from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.optim import make_optimizer
from elf_eqx.training.run_record import RunRecord
from elf_eqx.training.step import TrainState

out, name, fsdp, tensor = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tok = load_tokenizer("offline-minilm")
run = TrainConfig.from_dict({"model": name, "encoder": "offline-minilm", "data": "embedded", "max_length": 64,
                             "latent_std": 0.28})
spec = DataSpec.from_tokenizer(tok, 64)
config = preset(name, encoder_dim=384, vocab_size=len(tok))
optimizer = make_optimizer(ELF_FAMILY.network_template(config), 1e-3, name="muon")
init = lambda key: TrainState.create(ELF_FAMILY.build_network(config, key), optimizer)
mesh = make_mesh(MeshConfig(-1, fsdp, tensor))
shardings = tree_shardings(eqx.filter_eval_shape(init, jax.random.key(0)), mesh)
state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
split = sum(1 for leaf in jax.tree_util.tree_leaves(state) if hasattr(leaf, "sharding")
            and not leaf.sharding.is_fully_replicated)
record = RunRecord(elf=config, encoder="offline-minilm", tokenizer="offline-minilm", data_spec=spec, run=run)
with CheckpointManager(out, run_record=record) as manager:
    manager.save(1, state, {"data": {}})
print(split, dict(mesh.shape))
"""

_MEASURE = """
import json, resource, sys, time
begun = time.perf_counter()
import jax
import elf_eqx.export, elf_eqx.release.model_source
from elf_eqx.encoders.load import load_tokenizer
jax.devices()
what, source = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if what == "export":
    elf_eqx.export.main([source, "--output", sys.argv[3]])
elif what in ("load", "load_run"):
    jax.block_until_ready(elf_eqx.release.model_source.load_model_source(source).model)
else:  # the floor: the imports, JAX, and the tokenizer every export and load reads
    load_tokenizer("offline-minilm")
print(json.dumps({"seconds": time.perf_counter() - start, "process_seconds": time.perf_counter() - begun,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


@dataclasses.dataclass(frozen=True)
class Args:
    out: str = "runs/export_bench"
    """Where the runs and exports are written (removed afterwards unless --keep)."""
    presets: tuple[str, ...] = ("ELF-XS", "ELF-B", "ELF-M")
    devices: int = 8
    """CPU devices the checkpoints are saved from (fsdp × tensor = devices)."""
    tensor: int = 2
    """Tensor-parallel size of that mesh (fsdp = devices / tensor)."""
    keep: bool = False
    results: str | None = "benchmarks/results/export_speed.json"


def _env(devices: int) -> dict[str, str]:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
            "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])}


def _measure(*argv: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _MEASURE, *argv], env=_env(1), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench(args: Args) -> list[dict]:
    root = Path(args.out)
    rows = []
    idle = _measure("idle", "-")
    for name in args.presets:
        run, folder = root / name, root / f"{name}-export"
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        made = subprocess.run([sys.executable, "-c", _MAKE, str(run), name, str(args.devices // args.tensor),
                               str(args.tensor)], env=_env(args.devices), capture_output=True, text=True)
        if made.returncode:
            raise RuntimeError(made.stderr[-3000:])
        split = made.stdout.strip().splitlines()[-1]
        export = _measure("export", str(run), str(folder))
        load = _measure("load", str(folder))
        load_run = _measure("load_run", str(run))
        weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        row = {"preset": name, "saved_from": split, "checkpoint_bytes": _size(run / "checkpoints"),
               "folder_bytes": _size(folder), "weights_bytes": weights, "files": sorted(p.name for p in folder.iterdir()),
               "export": export, "load": load, "load_run": load_run, "idle": idle}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
    print()
    print("| preset | weights | folder | checkpoint | export s | load s | export peak RSS | load peak RSS | "
          "restore-run peak RSS | idle RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    gb = lambda n: f"{n / 1e9:.2f} GB"  # noqa: E731
    for r in rows:
        print(f"| {r['preset']} | {gb(r['weights_bytes'])} | {gb(r['folder_bytes'])} | {gb(r['checkpoint_bytes'])} | "
              f"{r['export']['seconds']:.1f} | {r['load']['seconds']:.1f} | {gb(r['export']['peak_rss_bytes'])} | "
              f"{gb(r['load']['peak_rss_bytes'])} | {gb(r['load_run']['peak_rss_bytes'])} | "
              f"{gb(r['idle']['peak_rss_bytes'])} |")
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    started = time.time()
    run_parsed(Args, bench)
    print(f"({time.time() - started:.0f} s)")
