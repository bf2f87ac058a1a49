"""Runs in a bucket, measured on this machine (benchmarks/RESULTS.md, "Storage"):

1. ``saves``: how long the training loop is blocked per checkpoint save, synchronous against
   ``--async-save``, for ELF-XS's train state and an ELF-B-sized one (AdamW: weights, EMA, two
   moments), on local disk and on local emulators of S3 (moto) and GCS (fake-gcs-server). The
   emulators run on this machine: they measure our and orbax's protocol and the Python/HTTP cost,
   not a cloud's bandwidth.
2. ``prepare``: ``python -m elf_eqx.prepare`` rows/s with 1 and 2 workers on the KJV text and on a
   synthetic corpus of 1M short documents, and the bytes written.

    python benchmarks/storage_bench.py saves --json-out saves.json
    python benchmarks/storage_bench.py prepare --json-out prepare.json
    python benchmarks/storage_bench.py read --json-out read.json

3. ``read``: one host's share of each global batch read from the same rows as ``datasets`` Arrow
   (local disk) and as prepared shards (local disk, the S3 and GCS emulators).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the emulator helpers of the storage tests


def _state(model: str):
    """A train state's arrays shaped like ``model``'s (MiniLM latents, the BERT vocabulary), AdamW."""
    import equinox as eqx
    import jax

    from elf_eqx.config import preset
    from elf_eqx.model import ELF
    from elf_eqx.training.optim import make_optimizer
    from elf_eqx.training.step import TrainState

    config = preset(model, encoder_dim=384, vocab_size=30522)
    build = lambda: TrainState.create(ELF(config, key=jax.random.key(0)), make_optimizer(  # noqa: E731
        eqx.filter_eval_shape(ELF, config, key=jax.random.key(0)), 1e-3, name="adamw"))
    state = eqx.filter_jit(build)()
    leaves = [x for x in jax.tree_util.tree_leaves(state) if eqx.is_array(x)]
    return state, sum(x.size * x.dtype.itemsize for x in leaves)


def _time_saves(directory: str, state, *, async_save: bool, saves: int) -> dict:
    import jax

    from elf_eqx.training.checkpoint import CheckpointManager

    blocked, total = [], []
    with CheckpointManager(directory, max_to_keep=2, async_save=async_save) as manager:
        for step in range(1, saves + 1):
            start = time.perf_counter()
            manager.save(step, state, {"data": {}}, key=jax.random.key(0))
            blocked.append(time.perf_counter() - start)
            manager.wait_until_finished()
            total.append(time.perf_counter() - start)
    return {"blocked_s": blocked, "complete_s": total}


def saves(args: argparse.Namespace) -> list[dict]:
    from object_store import environment, gcs_emulator, guarded, process_env, s3_emulator

    rows = []
    for model in args.models:
        state, nbytes = _state(model)
        stores = [("local disk", None)]
        stores += [("S3 emulator (moto)", "s3"), ("GCS emulator (fake-gcs-server)", "gs")]
        for store, scheme in stores:
            for async_save in (False, True):
                if scheme is None:
                    with tempfile.TemporaryDirectory() as tmp:
                        got = _time_saves(tmp, state, async_save=async_save, saves=args.saves)
                else:
                    emulator = s3_emulator if scheme == "s3" else gcs_emulator
                    with emulator("bench") as endpoint, environment(process_env(endpoint)), guarded():
                        got = _time_saves(f"{scheme}://bench/run-{async_save}", state, async_save=async_save,
                                          saves=args.saves)
                row = {"model": model, "state_bytes": nbytes, "store": store, "async_save": async_save, **got}
                print(json.dumps({k: (v if not isinstance(v, list) else [round(x, 3) for x in v])
                                  for k, v in row.items()}), flush=True)
                rows.append(row)
    return rows


def _synthetic(path: Path, documents: int) -> None:
    import random

    words = ("the of and to in a is that for it as was with be by on not he i this are or his from at which but "
             "have an they you were her she there one all we their can has been if more when will would who so no "
             "light earth water king people land house day night word heart hand city son father mother").split()
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(documents):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))}) + "\n")


def prepare(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = Path(tmp) / "synthetic.jsonl"
        _synthetic(synthetic, args.documents)
        corpora = [("KJV text (shared/data/kjv/train.jsonl)", str(args.kjv)),
                   (f"synthetic, {args.documents:,} documents of 8-40 words", str(synthetic))]
        for name, source in corpora:
            for workers in (1, 2):
                out = Path(tmp) / f"out-{workers}-{len(rows)}"
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "elf_eqx.prepare", "--data", source, "--output", str(out),
                                       "--tokenizer", "offline-minilm", "--max-length", str(args.max_length),
                                       "--workers", str(workers)], capture_output=True, text=True,
                                      env={**os.environ, "PYTHONPATH": str(REPO)})
                wall = time.perf_counter() - start
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
                manifest = json.loads((out / "manifest.json").read_text())
                nbytes = sum(p.stat().st_size for p in out.iterdir())
                documents = sum(1 for _ in open(source))
                row = {"corpus": name, "workers": workers, "documents": documents, "rows": manifest["num_rows"],
                       "bytes": nbytes, "wall_s": wall, "documents_per_s": documents / wall,
                       "rows_per_s": manifest["num_rows"] / wall, "line": done.stdout.strip().splitlines()[-1]}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def read(args: argparse.Namespace) -> list[dict]:
    """A host's share of batches (process 0 of ``--hosts``), read from the same rows three ways:
    ``datasets`` Arrow on local disk (the pipeline's cache), prepared shards on local disk, prepared
    shards on the S3 emulator."""
    from object_store import environment, gcs_emulator, guarded, process_env, s3_emulator

    from elf_eqx.data import DataSpec, Loader, prepare_data
    from elf_eqx.data.prepared import PreparedRows, write_prepared
    from elf_eqx.encoders.load import load_tokenizer

    tokenizer = load_tokenizer("offline-minilm")
    spec = DataSpec.from_tokenizer(tokenizer, args.max_length, packing=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(str(args.kjv), tokenizer, spec, cache_dir=Path(tmp) / "cache")
        write_prepared(data.rows, spec, Path(tmp) / "prepared", conditional=False)

        def time_loader(what: str, source) -> None:
            loader = Loader(source, spec, args.global_batch, seed=0, process_index=0, process_count=args.hosts)
            next(loader)
            start = time.perf_counter()
            for _ in range(args.batches):
                next(loader)
            seconds = time.perf_counter() - start
            local = args.global_batch // args.hosts
            row = {"reader": what, "rows_per_batch": local, "batches": args.batches,
                   "ms_per_batch": 1000 * seconds / args.batches, "rows_per_s": args.batches * local / seconds}
            print(json.dumps(row), flush=True)
            rows.append(row)

        time_loader("datasets Arrow, local disk", data.rows)
        time_loader("prepared shards, local disk", PreparedRows(str(Path(tmp) / "prepared")))
        with s3_emulator("bench") as endpoint, environment(process_env(endpoint)), guarded():
            write_prepared(data.rows, spec, "s3://bench/prepared", conditional=False)
            time_loader("prepared shards, S3 emulator (moto)", PreparedRows("s3://bench/prepared"))
        with gcs_emulator("bench") as endpoint, environment(process_env(endpoint)), guarded():
            write_prepared(data.rows, spec, "gs://bench/prepared", conditional=False)
            time_loader("prepared shards, GCS emulator (fake-gcs-server)", PreparedRows("gs://bench/prepared"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("saves")
    s.add_argument("--models", nargs="+", default=["ELF-XS", "ELF-B"])
    s.add_argument("--saves", type=int, default=3)
    p = sub.add_parser("prepare")
    p.add_argument("--kjv", type=Path, default=REPO.parent / "shared" / "data" / "kjv" / "train.jsonl")
    p.add_argument("--documents", type=int, default=1_000_000)
    p.add_argument("--max-length", type=int, default=64)
    r = sub.add_parser("read")
    r.add_argument("--kjv", type=Path, default=REPO.parent / "shared" / "data" / "kjv" / "train.jsonl")
    r.add_argument("--max-length", type=int, default=1024)
    r.add_argument("--global-batch", type=int, default=256)
    r.add_argument("--hosts", type=int, default=8)
    r.add_argument("--batches", type=int, default=20)
    for q in (s, p, r):
        q.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    rows = {"saves": saves, "prepare": prepare, "read": read}[args.what](args)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
