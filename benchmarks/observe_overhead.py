"""What the run's own measurements cost (issue 29: under 1% of a quickstart step).

One training run of ``--preset quickstart`` (or any training flags after ``--``) alternates blocks of
``--block`` steps run two ways on the same state, data and compiled step:

- *measured*: the trainer's own steps (batch wait and call timed, each step marked for the
  profiler) through the metrics hook with every measurement on (records with step time, tokens/s,
  MFU, data wait, host share, device memory, into a metrics log), fetching the metrics once a block;
- *bare*: the same batches and step calls in a plain loop, fetching the metrics once a block.

Both wait on the device once per block, as a run does once per ``--log-every``. Each block is timed
from its start to its fetch; the ratio of the median seconds per step is printed (measured / bare),
with the median of the instrumentation's own cost per step timed apart (no device work at all).

    python benchmarks/observe_overhead.py --pairs 6 --block 10
    python benchmarks/observe_overhead.py -- --preset owt_elf_b --global-batch 8
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax

from elf_eqx.cli.errors import run_parsed
from elf_eqx.observe.device_memory import memory_figures
from elf_eqx.observe.step_clock import StepClock, StepStopwatch, Throughput
from elf_eqx.training.config import parse_train_config
from elf_eqx.training.hooks import MetricsHook, Schedule
from elf_eqx.training.metrics_log import MetricsLog
from elf_eqx.training.stop_signal import StopRequest
from elf_eqx.training.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Args:
    pairs: int = 6
    """Measured/bare block pairs (alternating, measured first in odd pairs, bare first in even ones)."""
    block: int = 10
    """Steps per block (one metrics fetch per block, like --log-every)."""


def instrumentation_cost(steps: int = 20000) -> float:
    """Seconds per step of the measurements alone: the stopwatch around a no-op step, the clock's
    bookkeeping and, once per 10 steps, its figures and a memory query."""
    watch, clock = StepStopwatch(), StepClock()
    throughput = Throughput(1.0, 1.0, 1, "cpu", "cpu", 1e12, "--peak-flops")
    devices = jax.local_devices()
    start = time.perf_counter()
    for n in range(1, steps + 1):
        _, timing = watch.step(n, lambda: None, lambda batch: None)
        clock.add(timing)
        if n % 10 == 0:
            clock.synced(0.0)
            clock.figures(throughput)
            memory_figures(devices)
    return (time.perf_counter() - start) / steps


def run(flags: list[str], args: Args) -> None:
    """Measure ``args.pairs`` block pairs of the training run of ``flags``; print the result as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_train_config([*flags, "--output-dir", str(Path(tmp) / "run"), "--max-steps", "1000000",
                                  "--save-every", "1000000", "--sampling.every", "1000000"])
        trainer = Trainer.build(cfg)
        step_key = jax.random.fold_in(trainer.key, 1)
        throughput = Throughput.of(trainer.per_step, list(trainer.mesh.devices.flat), 1e12)

        def bare() -> None:
            pending = []
            for _ in range(args.block):
                batch = trainer.run.next_batch(trainer.batch_sharding)
                trainer.state, metrics = trainer.step_fn(trainer.state, batch, step_key, trainer.objective,
                                                         trainer.latent_encoder)
                pending.append(metrics)
            jax.device_get(pending)

        with StopRequest() as stop:
            steps = trainer.steps(stop)
            # One metrics hook for the whole run, as in training (its log and run_info.json are
            # opened once); it fetches when a block ends, since every block is --block steps long.
            hook = MetricsHook(MetricsLog(Path(tmp) / "log"), log_every=args.block, flush=(Schedule(args.block),),
                               learning_rate=lambda s: 0.0, throughput=throughput, initial_step=args.block,
                               total_steps=trainer.total_steps, show=False, local_devices=trainer.mesh.local_devices)

            def measured() -> None:
                for info in itertools.islice(steps, args.block):
                    hook(info)

            bare()  # compiles; the measured path's first call then finds the program compiled
            jax.device_get(trainer.state.step)
            times: dict[str, list[float]] = {"measured": [], "bare": []}
            for pair in range(args.pairs):
                order = ("measured", "bare") if pair % 2 == 0 else ("bare", "measured")
                for way in order:
                    start = time.perf_counter()
                    measured() if way == "measured" else bare()
                    times[way].append((time.perf_counter() - start) / args.block)
            hook.close()
        trainer.close()
    medians = {way: statistics.median(values) for way, values in times.items()}
    result = {"train": flags, "block": args.block, "pairs": args.pairs, "device_kind": jax.devices()[0].device_kind,
              "s_per_step": times, "median_s_per_step": medians, "ratio": medians["measured"] / medians["bare"],
              "instrumentation_s_per_step": instrumentation_cost()}
    result["instrumentation_share"] = result["instrumentation_s_per_step"] / medians["bare"]
    ratios = [m / b for m, b in zip(times["measured"], times["bare"])]
    result["pair_ratios"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    run_parsed(Args, functools.partial(run, argv[cut + 1:] or ["--preset", "quickstart"]), argv[:cut])
