"""One training run over several ``jax.distributed`` CPU processes on 127.0.0.1, the way a pod runs
it: every process a real ``python -m elf_eqx.train`` (a supervisor, which starts the worker that
trains), given the three process flags; all share one JAX compilation cache and one data cache.
Used by integration/test_pod_faults.py.

The model is the autoregressive baseline on ELF-T's blocks: what is tested (stopping, saving,
resuming, restarting) is the same for every family, and its step, without the frozen encoder
inside, compiles in seconds. That matters: JAX writes its persistent compilation cache from process
0 only, so every other process compiles its step at every start."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import free_port, xla_flags

REPO = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 15
"""The runs' --heartbeat-timeout-s: seconds, not JAX's 100 s; not less, since a 2-core machine shared
with other jobs was seen to hold a busy process's heartbeats back for over 5 s."""
TOTAL, SAVE_EVERY = 24, 4
"""Steps of the run and between checkpoints. A step takes about 0.1 s on two CPU cores and JAX
passes a SIGTERM on within about a second: 24 steps leave room for a stop before the end."""
TINY = [
    "--preset", "quickstart", "--model", "ELF-T", "--objective", "ar", "--global-batch", "4", "--max-length", "16",
    "--warmup-steps", "2", "--lr-schedule", "constant", "--log-every", "1", "--save-every", str(SAVE_EVERY),
    "--sampling.every", "1000", "--sampling.steps", "2", "--sampling.num-samples", "2", "--max-steps", str(TOTAL),
    "--mesh-fsdp", "2", "--heartbeat-timeout-s", str(HEARTBEAT_S), "--init-timeout-s", "600",
]


def pod_env(**extra: str) -> dict[str, str]:
    """One CPU device per process, the suite's XLA flags and compilation cache (tests/conftest.py), this
    checkout (and tests/, for pod_micro) first on the path."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(1),
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]), **extra}


@dataclasses.dataclass
class Pod:
    """The supervisors of one run's processes (``procs[i]`` runs process ``i``), their output in files."""

    procs: list[subprocess.Popen]
    logs: Path

    def stdout(self, i: int) -> str:
        return (self.logs / f"{i}.out").read_text(errors="replace")

    def stderr(self, i: int) -> str:
        return (self.logs / f"{i}.err").read_text(errors="replace")

    def wait(self, timeout: float) -> list[int]:
        """Every process's exit code (each waited for until ``timeout`` seconds from now)."""
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.procs]
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the run did not end in time:\n" + "\n".join(
                f"--- process {i}\n{self.stderr(i)[-3000:]}" for i in range(len(self.procs))))

    def signal(self, i: int, sig: int) -> None:
        """Send ``sig`` to process ``i``'s supervisor (SIGKILL: a host lost; its worker dies with it)."""
        self.procs[i].send_signal(sig)

    def worker(self, i: int, timeout: float = 120) -> int:
        """The pid of the worker process ``i``'s supervisor is running now."""
        pid, deadline = self.procs[i].pid, time.monotonic() + timeout
        while time.monotonic() < deadline:
            children = Path(f"/proc/{pid}/task/{pid}/children")
            found = children.read_text().split() if children.exists() else []
            if found:
                return int(found[0])
            time.sleep(0.05)
        raise AssertionError(f"process {i}'s supervisor started no worker")

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()


def _start(root: Path, logs: Path, commands: list[list[str]]) -> Pod:
    logs.mkdir(parents=True)
    procs = []
    for i, command in enumerate(commands):
        with open(logs / f"{i}.out", "w") as stdout, open(logs / f"{i}.err", "w") as stderr:
            procs.append(subprocess.Popen([sys.executable, "-m", *command], env=pod_env(), stdout=stdout,
                                          stderr=stderr, cwd=root))
    return Pod(procs, logs)


def start_pod(root: Path, out: Path, *extra: str, processes: int = 2, module: str = "elf_eqx.train",
              args: list[str] | None = None) -> Pod:
    """Start the run ``python -m module ARGS`` as ``processes`` processes on 127.0.0.1 (ARGS: the
    tiny training's, on ``root/chapters.jsonl``, into ``out``, unless ``args`` are given)."""
    address = f"127.0.0.1:{free_port()}"
    if args is None:
        args = [*TINY, "--data", str(root / "chapters.jsonl"), "--cache-dir", str(root / "cache"), "--output-dir", str(out)]
    return _start(root, Path(str(out) + f".logs.{time.monotonic_ns()}"), [
        [module, *args, *extra, "--coordinator-address", address, "--num-processes", str(processes),
         "--process-id", str(i)] for i in range(processes)])


def start_micro(root: Path, processes: int, *, heartbeat_s: int, wait_s: float = 0.0,
                failing: int | str | None = None) -> Pod:
    """Start tests/pod_micro.py (a stand-in for a training loop: no devices, nothing compiled) as
    ``processes`` processes on 127.0.0.1, each waiting ``wait_s`` before its first step; process
    ``failing`` (``"all"``: every one) fails (bad input) at step 20."""
    address = f"127.0.0.1:{free_port()}"
    fail = [] if failing is None else [str(failing)]
    return _start(root, root / f"micro.logs.{time.monotonic_ns()}", [
        ["pod_micro", address, str(processes), str(i), str(heartbeat_s), str(wait_s), *fail] for i in range(processes)])


def wait_for(condition, pod: Pod, timeout: float = 600, every: float = 0.002) -> None:
    """Poll ``condition()`` until true; fails if the run ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if any(p.poll() is not None for p in pod.procs):
            codes = [p.poll() for p in pod.procs]
            pod.kill()
            raise AssertionError(f"the run ended early ({codes}):\n" + "\n".join(
                f"--- process {i}\n{pod.stderr(i)[-3000:]}" for i in range(len(pod.procs))))
        if time.monotonic() > deadline:
            pod.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(every)


def lost_line(text: str) -> str:
    """The supervisor's line naming the lost peer."""
    lines = [line for line in text.splitlines() if line.startswith("error: lost ")]
    assert lines, text[-3000:]
    return lines[-1]

