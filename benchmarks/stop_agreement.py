"""What a pod run's survival costs (issue 28), on jax.distributed CPU processes over 127.0.0.1.

``steps``: one training run of the tiny config over ``--processes`` processes (each a worker this
script starts with the process flags) alternates blocks of ``--block`` steps run three ways on the
same state, data and compiled step, all waiting on the device once a block as a run does once per
``--log-every``:

- *bare*: the step calls alone;
- *sync point*: each step followed by :meth:`StopRequest.after_step` with JAX's preemption service
  (what a multi-process run does: ``multihost_utils.reached_preemption_sync_point``);
- *gathered flag*: each step followed by the fallback without that service, every process's stop
  flag gathered through the coordinator (:func:`elf_eqx.parallel.agreement.first_reason`).

Process 0 prints the median seconds per step of each, their ratios to bare in this one run, and the
cost of one check alone. ``lost``: a real two-process ``python -m elf_eqx.train`` run with the
default (or given) ``--heartbeat-timeout-s``; once it is stepping, process ``--victim``'s supervisor
is SIGKILLed (its host lost) and the seconds until the other process's supervisor has exited
(code 42) and said which process was lost are printed.

    python benchmarks/stop_agreement.py steps --pairs 6 --block 10
    python benchmarks/stop_agreement.py lost --victim 1
    python benchmarks/stop_agreement.py lost --victim 0 --heartbeat-timeout-s 20
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import tyro

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "quickstart", "--model", "ELF-T", "--global-batch", "4", "--max-length", "16",
        "--mesh-fsdp", "2", "--data", "embedded", "--sampling.every", "1000000", "--save-every", "1000000",
        "--log-every", "1"]


@dataclasses.dataclass(frozen=True)
class Args:
    what: tyro.conf.Positional[Literal["steps", "lost"]] = "steps"
    """steps: the per-step cost of agreeing; lost: how long a lost peer takes to be noticed."""
    processes: int = 2
    """Processes of the run (steps)."""
    pairs: int = 6
    """Rounds of the three ways, in rotating order (steps)."""
    block: int = 10
    """Steps per block: one wait on the device per block (steps)."""
    victim: int = 1
    """The process whose host is lost (lost): 1, or 0 (the coordinator)."""
    heartbeat_timeout_s: int | None = None
    """--heartbeat-timeout-s of the run (lost; default: the flag's default)."""
    process_id: int | None = None
    """(internal) this worker's process index."""
    coordinator: str | None = None
    """(internal) the coordinator's address."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]), "ELF_SUPERVISOR": "worker"}


def steps(args: Args) -> None:
    """A worker of the ``steps`` measurement."""
    import jax

    from elf_eqx.cli.args import ProcessFlags
    from elf_eqx.parallel import agreement
    from elf_eqx.parallel.distributed import initialize_distributed
    from elf_eqx.training.config import parse_train_config
    from elf_eqx.training.stop_signal import StopRequest
    from elf_eqx.training.trainer import Trainer

    initialize_distributed(ProcessFlags(args.coordinator, args.processes, args.process_id), preemption=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_train_config([*TINY, "--output-dir", os.environ["ELF_BENCH_OUT"], "--max-steps", "1000000",
                                  "--cache-dir", str(Path(tmp) / "cache")])
        trainer = Trainer.build(cfg)
        step_key = jax.random.fold_in(trainer.key, 1)
        stop = StopRequest()
        assert stop._synced, "JAX's preemption service is not running"

        def block(check) -> None:
            pending = []
            for _ in range(args.block):
                batch = trainer.run.next_batch(trainer.batch_sharding)
                trainer.state, metrics = trainer.step_fn(trainer.state, batch, step_key, trainer.objective,
                                                         trainer.latent_encoder)
                check()
                pending.append(metrics)
            jax.device_get(pending)

        ways = {"bare": lambda: None, "sync_point": stop.after_step,
                "gathered_flag": lambda: agreement.first_reason("stop", None)}
        with stop:
            block(ways["bare"])  # compiles
            times: dict[str, list[float]] = {way: [] for way in ways}
            names = list(ways)
            for pair in range(args.pairs):
                for way in names[pair % 3:] + names[: pair % 3]:
                    start = time.perf_counter()
                    block(ways[way])
                    times[way].append((time.perf_counter() - start) / args.block)
            alone = {}
            for way in ("sync_point", "gathered_flag"):
                n, start = 200, time.perf_counter()
                for _ in range(n):
                    ways[way]()
                alone[way] = (time.perf_counter() - start) / n
        trainer.close()
    if jax.process_index() == 0:
        medians = {way: statistics.median(values) for way, values in times.items()}
        print(json.dumps({"processes": args.processes, "block": args.block, "pairs": args.pairs,
                          "device_kind": jax.devices()[0].device_kind, "median_s_per_step": medians,
                          "ratio_to_bare": {w: medians[w] / medians["bare"] for w in ways if w != "bare"},
                          "one_check_s": alone, "s_per_step": times}, indent=1))


def measure_steps(args: Args) -> None:
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**worker_env(), "ELF_BENCH_OUT": str(Path(tmp) / "run")}
        procs = [subprocess.Popen([sys.executable, __file__, "steps", "--process-id", str(i), "--coordinator", address,
                                   "--processes", str(args.processes), "--pairs", str(args.pairs),
                                   "--block", str(args.block)], env=env, stderr=subprocess.DEVNULL)
                 for i in range(args.processes)]
        codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed: {codes}")


def measure_lost(args: Args) -> None:
    address = f"127.0.0.1:{free_port()}"
    heartbeat = [] if args.heartbeat_timeout_s is None else ["--heartbeat-timeout-s", str(args.heartbeat_timeout_s)]
    with tempfile.TemporaryDirectory() as tmp:
        out, env = Path(tmp) / "run", {**worker_env()}
        env.pop("ELF_SUPERVISOR")
        logs = [open(Path(tmp) / f"{i}.err", "w+") for i in range(2)]
        procs = [subprocess.Popen([sys.executable, "-m", "elf_eqx.train", *TINY, *heartbeat, "--max-steps", "1000000",
                                   "--output-dir", str(out), "--cache-dir", str(Path(tmp) / f"cache{i}"),
                                   "--coordinator-address", address, "--num-processes", "2", "--process-id", str(i)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=logs[i])
                 for i in range(2)]
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 5):
            if any(p.poll() is not None for p in procs):
                raise SystemExit("the run ended before it was stepping")
            time.sleep(0.05)
        procs[args.victim].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        survivor = procs[1 - args.victim]
        code = survivor.wait(timeout=900)
        took = time.monotonic() - killed
        logs[1 - args.victim].seek(0)
        said = [line for line in logs[1 - args.victim].read().splitlines() if line.startswith("error: lost")]
        for p in procs:
            if p.poll() is None:
                p.kill()
    print(json.dumps({"victim": args.victim, "heartbeat_timeout_s": args.heartbeat_timeout_s or "default",
                      "survivor_exit_code": code, "seconds_to_exit": round(took, 1),
                      "said": said[-1] if said else None}, indent=1))


def main(args: Args) -> None:
    if args.process_id is not None:
        steps(args)
    elif args.what == "steps":
        measure_steps(args)
    else:
        measure_lost(args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from elf_eqx.cli.errors import run_parsed

    run_parsed(Args, main)
