"""``jax.profiler`` traces on demand: of chosen training steps (``--profile-steps A:B``) or of a
sampling call (``python -m elf_eqx.sample ... --profile-dir DIR``).

A trace goes to ``<dir>/plugins/profile/<time>/``: ``<host>.xplane.pb`` (TensorBoard's profile
plugin: ``tensorboard --logdir <dir>``; pip install tensorboard-plugin-profile) and
``perfetto_trace.json.gz`` (open it at ui.perfetto.dev). Each training step is marked by a
``train_step`` step annotation carrying its number. ``<dir>`` may be a bucket (``gs://...``) where
JAX's file system reaches it. Process 0 traces unless every process is asked to; one line says
where the trace went.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import jax

from elf_eqx.errors import ConfigError

_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclasses.dataclass(frozen=True)
class StepRange:
    """Steps ``first`` to ``last`` (1-based, both included)."""

    first: int
    last: int

    @staticmethod
    def parse(text: str, flag: str = "--profile-steps") -> "StepRange":
        """``A:B`` with ``1 ≤ A ≤ B``; anything else is a one-line :class:`ConfigError` naming ``flag``."""
        match = _RANGE.match(text)
        if match is None:
            raise ConfigError(f"{flag} {text!r} is not A:B (the first and last step to trace, e.g. 2:3)")
        first, last = int(match.group(1)), int(match.group(2))
        if first < 1 or last < first:
            raise ConfigError(f"{flag} {text!r}: give 1 ≤ A ≤ B (the first and last step to trace, e.g. 2:3)")
        return StepRange(first, last)

    def __str__(self) -> str:
        return f"{self.first}–{self.last}" if self.last != self.first else str(self.first)


def traces_here(all_processes: bool) -> bool:
    """Whether this process writes a trace: process 0, or every one with ``all_processes``."""
    return all_processes or jax.process_index() == 0


def _newest_trace(directory: str) -> str:
    """The folder of the newest trace under ``directory`` (a local one), else ``directory``."""
    root = Path(directory) / "plugins" / "profile"
    if "://" in directory or not root.is_dir():
        return directory
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return str(runs[-1]) if runs else directory


def _where(directory: str, what: str) -> str:
    folder = _newest_trace(directory)
    return (f"profile of {what} written to {folder} (TensorBoard: tensorboard --logdir {directory}, profile tab; "
            f"Perfetto: {folder}/perfetto_trace.json.gz at ui.perfetto.dev)")


class Trace:
    """One ``jax.profiler`` trace into ``directory``, started and stopped once."""

    def __init__(self, directory: str, what: str):
        self.directory, self.what, self.running = directory, what, False

    def start(self) -> None:
        if not self.running:
            if "://" not in self.directory:
                Path(self.directory).mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
            self.running = True

    def stop(self) -> None:
        """Stop the trace (if running) and say where it went."""
        if self.running:
            self.running = False
            jax.profiler.stop_trace()
            print(_where(self.directory, self.what), flush=True)


@contextlib.contextmanager
def traced(directory: str | None, what: str, *, all_processes: bool = False) -> Iterator[None]:
    """Trace what runs inside into ``directory`` (nothing when ``None``, or on a process that does
    not trace); the outputs are waited for by the caller before leaving."""
    if directory is None or not traces_here(all_processes):
        yield
        return
    trace = Trace(directory, what)
    trace.start()
    try:
        yield
    finally:
        trace.stop()


@dataclasses.dataclass(frozen=True)
class SampleProfileFlags:
    """Profiling (README.md, "Seeing inside a run")."""

    profile_dir: str | None = None
    """Write a jax.profiler trace of the sampling call here (TensorBoard's profile plugin, Perfetto);
    the first batch of a process compiles the sampler."""
    profile_all_processes: bool = False
    """Trace on every process (default: process 0 only)."""
