"""Rows/s of one host's data loader on a pre-tokenized ``save_to_disk`` dataset laid out like the
release's OpenWebText set, against what one host of a pod consumes per training step.

    taskset -c 0 python benchmarks/input_pipeline.py                 # one core, 131,072 rows
    python benchmarks/input_pipeline.py --rows 4096 --steps 20 --repeats 2 --no-cold   # a quick look

The dataset: ``--rows`` rows of ``--length`` ids in the T5 tokenizer's range (vocabulary 32,100,
EOS 1, pad 0) in an ``input_ids`` column, written once with ``datasets.save_to_disk`` under
``--workdir`` (a temporary folder by default; reused by later runs) — documents of geometric
length (mean ``--mean-doc-length``) packed EOS-separated into full rows, ``--pad-fraction`` of the
rows ending early in pad ids, as a document's last piece would. It then goes through the training
path: ``prepare_data`` (the pre-tokenized source passes through, trailing pads are stripped, rows
laid out and cached on disk), and a ``Loader`` with ``process_count=--hosts``,
``process_index=--host-index`` reads one host's share (``--global-batch / --hosts`` rows) of
every global batch.

Timed, for ``--steps`` batches, ``--repeats`` passes each (every pass a fresh loader with another
seed, so other rows): ``next(loader)`` alone (the NumPy batch); with the training step's
``TokenBatch.from_numpy`` placement (``jax.make_array_from_process_local_data`` onto a batch
sharding over this machine's devices, waited for); and the same through a
``elf_eqx.data.prefetch.Prefetcher`` of ``--prefetch`` batches. Every pass maps the row files
afresh (``datasets.load_from_disk``). Warm: the files were just read, so they sit in the page
cache; cold (``--cold``): the pass first evicts the files' pages (``fsync`` and
``posix_fadvise(DONTNEED)`` on those files only), so its rows come from the disk. The appetite at ``s`` seconds per step is
``global_batch / hosts / s`` rows/s; the margin is rows/s over that.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets
import jax
import numpy as np
import pyarrow as pa

from elf_eqx.cli.errors import run_parsed
from elf_eqx.data import DataSpec, Loader, collate, prepare_data
from elf_eqx.data.prefetch import Prefetcher
from elf_eqx.encoders.latent_encoder import TokenBatch
from elf_eqx.io.atomic import staged_folder
from elf_eqx.parallel.mesh import batch_sharding, make_mesh

PAD_ID, EOS_ID = 0, 1


@dataclasses.dataclass(frozen=True)
class Args:
    rows: int = 131_072
    """rows in the synthetic dataset"""
    length: int = 1024
    """ids per row (the release's OWT rows: 1,024)"""
    hosts: int = 8
    """processes sharing every global batch (v5p-64: 8 hosts of 4 chips)"""
    host_index: int = 0
    global_batch: int = 512
    steps: int = 200
    """batches per timed pass"""
    repeats: int = 5
    """timed passes per setting"""
    step_times: tuple[float, ...] = (0.28, 0.07)
    """seconds per training step to state the appetite at (reference's measured; issue 22's target)"""
    prefetch: int = 2
    """prefetch depth (batches) for the prefetching rows; 0 skips them"""
    cold: bool = True
    """also time passes that start with the row files evicted from the page cache"""
    breakdown: bool = True
    """also time the stages of a batch: gather rows, Arrow to NumPy, collate, placement"""
    vocab_size: int = 32100
    mean_doc_length: int = 900
    pad_fraction: float = 0.05
    seed: int = 0
    workdir: Path = Path(tempfile.gettempdir()) / "elf_eqx_input_pipeline"
    """where the dataset and its rows cache are written (and reused)"""
    json_out: Path | None = None
    """also write the numbers as JSON here"""


class _T5Range:
    """Stands in for the T5 tokenizer where ``prepare_data`` needs one (its size and a fingerprint);
    the rows are pre-tokenized, so nothing is tokenized."""

    name_or_path = "synthetic-t5-range"

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return {"<pad>": PAD_ID, "</s>": EOS_ID}


def build_source(args: Args) -> Path:
    """The synthetic pre-tokenized ``save_to_disk`` folder (built once per settings)."""
    name = (f"owt_synth_r{args.rows}_l{args.length}_v{args.vocab_size}_d{args.mean_doc_length}"
            f"_p{args.pad_fraction}_s{args.seed}")
    path = args.workdir / name
    if (path / "state.json").is_file():
        return path
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(EOS_ID + 1, args.vocab_size, (args.rows, args.length), dtype=np.int32)
    flat = ids.reshape(-1)
    ends = np.cumsum(rng.geometric(1 / args.mean_doc_length, size=2 * flat.size // args.mean_doc_length + 1))
    flat[ends[ends < flat.size]] = EOS_ID
    padded = np.flatnonzero(rng.random(args.rows) < args.pad_fraction)
    for row, keep in zip(padded, rng.integers(1, args.length, padded.size)):
        ids[row, keep:] = PAD_ID
    offsets = pa.array(np.arange(args.rows + 1, dtype=np.int32) * args.length)
    table = pa.table({"input_ids": pa.ListArray.from_arrays(offsets, pa.array(flat))})
    with staged_folder(path, keep_existing=True) as staging:
        datasets.Dataset(datasets.table.InMemoryTable(table)).save_to_disk(str(staging))
    return path


def _arrow_files(dataset: datasets.Dataset) -> list[str]:
    return [entry["filename"] for entry in dataset.cache_files]


def _warm(files: list[str]) -> None:
    for file in files:
        with open(file, "rb") as f:
            while f.read(1 << 24):
                pass


def _evict(files: list[str]) -> None:
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)  # a just-written file's dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _rate(rows_per_batch: int, steps: int, make: Callable[[datasets.Dataset, int], Iterator], consume: Callable,
          repeats: int, prepare: Callable[[], None], reopen: Callable[[], datasets.Dataset]) -> list[float]:
    """Rows/s of ``repeats`` passes of ``steps`` batches. Each pass runs ``prepare()`` (warm or evict the
    row files) while no mapping of them is open, then reads ``make(reopen(), r)`` (seed ``r``: other rows)."""
    rates = []
    for r in range(repeats):
        gc.collect()  # the last pass's memory map is gone: its pages can be evicted
        prepare()
        source = make(reopen(), r)
        start = time.perf_counter()
        for _ in range(steps):
            consume(next(source))
        rates.append(rows_per_batch * steps / (time.perf_counter() - start))
        getattr(source, "close", lambda: None)()
        del source
    return rates


def _breakdown(loader: Loader, rows: datasets.Dataset, spec: DataSpec, sharding, steps: int) -> dict[str, float]:
    """Milliseconds per batch of each stage of ``Loader.__next__`` (as ``Loader._fetch`` does them) and of placement."""
    table_rows = rows.with_format("arrow")
    totals = dict.fromkeys(("indices", "gather rows (datasets/Arrow)", "Arrow to NumPy rows", "collate",
                            "placement (from_numpy)"), 0.0)
    for step in range(steps):
        t0 = time.perf_counter()
        indices = loader.batch_indices(1, step % loader.steps_per_epoch)
        t1 = time.perf_counter()
        table = table_rows[indices.tolist()]
        t2 = time.perf_counter()
        ids = table.column("input_ids").combine_chunks()
        offsets, values = ids.offsets.to_numpy(), ids.values.to_numpy()
        batch_rows = [values[offsets[b]: offsets[b + 1]] for b in range(len(indices))]
        cond = table.column("cond_length").to_numpy()
        t3 = time.perf_counter()
        batch = collate(batch_rows, cond, spec)
        t4 = time.perf_counter()
        jax.block_until_ready(TokenBatch.from_numpy(batch, sharding))
        t5 = time.perf_counter()
        for key, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            totals[key] += seconds
    return {key: 1e3 * seconds / steps for key, seconds in totals.items()}


def _summary(rates: list[float]) -> str:
    return f"{statistics.median(rates):>9,.0f} ({min(rates):,.0f}–{max(rates):,.0f})"


def run(args: Args) -> None:
    datasets.disable_progress_bars()
    local = args.global_batch // args.hosts
    print(f"backend {jax.default_backend()}, {len(jax.devices())} device(s); "
          f"CPU affinity {sorted(os.sched_getaffinity(0))}")
    start = time.perf_counter()
    source = build_source(args)
    built = time.perf_counter() - start
    spec = DataSpec(vocab_size=args.vocab_size, pad_id=PAD_ID, eos_id=EOS_ID, max_length=args.length)
    start = time.perf_counter()
    data = prepare_data(source, _T5Range(args.vocab_size), spec, cache_dir=args.workdir / "cache")
    prepared = time.perf_counter() - start
    files = _arrow_files(data.rows)
    size = sum(os.path.getsize(f) for f in files) / 2**20
    print(f"source {source} ({built:.1f} s); rows {len(data.rows):,} in {len(files)} file(s), {size:,.0f} MiB "
          f"({prepared:.1f} s, from cache: {data.rows_from_cache})")
    rows_dir = str(Path(files[0]).parent)
    del data  # every pass maps the rows afresh: pages a process has mapped cannot be evicted

    def loader(rows: datasets.Dataset, seed: int) -> Loader:
        return Loader(rows, spec, args.global_batch, seed=args.seed + seed,
                      process_index=args.host_index, process_count=args.hosts)

    sharding = batch_sharding(make_mesh())
    place = lambda batch: jax.block_until_ready(TokenBatch.from_numpy(batch, sharding))  # noqa: E731
    settings: list[tuple[str, Callable[[datasets.Dataset, int], Iterator], Callable]] = [
        ("Loader.__next__ (NumPy batch)", loader, lambda batch: None),
        ("Loader + TokenBatch.from_numpy", loader, place),
    ]
    if args.prefetch:
        settings.append((f"Prefetcher(depth {args.prefetch}) + from_numpy",
                         lambda rows, seed: Prefetcher(loader(rows, seed), args.prefetch), place))
    caches = [("warm", lambda: _warm(files))] + ([("cold", lambda: _evict(files))] if args.cold else [])
    results = []
    for cache, prepare in caches:
        for name, make, consume in settings:
            rates = _rate(local, args.steps, make, consume, args.repeats, prepare,
                          lambda: datasets.load_from_disk(rows_dir))
            results.append({"setting": name, "page_cache": cache, "rows_per_s": rates})
    print(f"\none host of {args.hosts}: {local} rows of {args.length} ids per step; "
          f"{args.steps} batches per pass, {args.repeats} passes: median (min–max) rows/s")
    appetite = {s: local / s for s in args.step_times}
    header = "".join(f" | margin at {s} s/step" for s in args.step_times)
    print(f"| page cache | setting | rows/s per host{header} |")
    print("|---" * (3 + len(args.step_times)) + "|")
    for r in results:
        median = statistics.median(r["rows_per_s"])
        margins = "".join(f" | {median / need:,.0f}×" for need in appetite.values())
        print(f"| {r['page_cache']} | {r['setting']} | {_summary(r['rows_per_s'])}{margins} |")
    for s, need in appetite.items():
        print(f"appetite at {s} s/step: {local} / {s} = {need:,.0f} rows/s per host "
              f"({need * args.length:,.0f} tokens/s)")
    start = time.perf_counter()
    np.random.default_rng([args.seed, 1]).permutation(10_000_000)
    print(f"one epoch's order of a 10M-row dataset (np.random.default_rng.permutation): "
          f"{time.perf_counter() - start:.2f} s, once per epoch")
    stages = None
    if args.breakdown:
        _warm(files)
        rows = datasets.load_from_disk(rows_dir)
        stages = _breakdown(loader(rows, 0), rows, spec, sharding, args.steps)
        print("ms per batch, warm: " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    if args.json_out is not None:
        settings_used = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(args).items()}
        record = {"args": settings_used,
                  "appetite_rows_per_s": {str(s): v for s, v in appetite.items()}, "results": results,
                  "stages_ms": stages, "source_build_s": built, "prepare_s": prepared}
        from elf_eqx.io.storage import local_path
        local_path(args.json_out, "--json-out").write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """CLI entry (``argv`` default: ``sys.argv[1:]``); expected failures end as one line (exit 2)."""
    run_parsed(Args, run, argv)


if __name__ == "__main__":
    main()
