"""This host's share of a run, supervised: the line that names a lost peer, and ``--max-restarts``.

When a command runs as one of several processes (``jax.distributed``: the process flags, or a
cluster environment, :func:`~elf_eqx.parallel.distributed.joins_a_cluster`), or with
``--max-restarts N`` (N > 0), it does not do its work in its own process: :func:`launch` starts the
same command again as a *worker* and supervises it. The supervisor imports JAX but never starts a
backend or ``jax.distributed``; it passes SIGTERM, SIGINT and SIGHUP on to the worker (once: the
worker runs in its own session, so a terminal's Ctrl-C reaches the supervisor only), copies the
worker's stderr through unchanged while keeping its start and end, and the worker dies with it
(Linux ``PR_SET_PDEATHSIG``: a supervisor killed is a host lost). When the worker ends:

==========================================================  ==============================================
the worker                                                  the supervisor
==========================================================  ==============================================
exits 0 (finished, or stopped after a requested step,       exits 0
saved by every process)
is ended by JAX because another process of the run was      one line: the lost process and the checkpoint
lost (JAX's coordination service: no heartbeat within       a rerun resumes from; restarts it (after
``--heartbeat-timeout-s``, or the coordinator gone), or     ``--heartbeat-timeout-s`` + 2 s, when every
cannot join the run (exit 42)                               other process has left too) while restarts are
                                                            left, else exits 42
is killed by a signal it was not asked to stop by           the same (retryable)
(SIGKILL: the OOM killer, a preemption without notice)
exits 2 (bad input) or 1 (a bug), or crashes (SIGSEGV,      exits with the same code (128 + the signal for
SIGABRT without JAX's message)                              a crash): not retried
==========================================================  ==============================================

A worker of several processes that fails by itself (bad input, a bug) ends with its own exit code:
together with the others when they fail alike (an agreed decision, such as a damaged checkpoint
asked for, fails on every process at once), else after a short grace, without them, which then see
it lost (:data:`OWN_FAILURE_GRACE_S`). A stop that was asked for (SIGTERM to the supervisor or the worker) is not
restarted: the platform or the user wants the job to stop. Exit code 42 (:data:`~elf_eqx.errors.RETRYABLE_EXIT`) is the one
XPK's and our JobSet's restart policies retry (launch/); 1 and 2 fail the job there too.
``ELF_SUPERVISOR=off`` in the environment turns supervision off (a launcher that supervises itself).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from elf_eqx.errors import RETRYABLE_EXIT
from elf_eqx.io import storage
from elf_eqx.training.checkpoint_integrity import damage

ENV = "ELF_SUPERVISOR"
"""``worker`` in the worker's environment (it does its work itself); ``off``: no supervision."""
KEEP_BYTES = 64 * 1024
"""How much of the start and of the end of the worker's stderr is kept to read after it ended."""
JAX_FATAL = "Terminating process because the JAX distributed service detected fatal errors"
_JOINED = re.compile(r"process (\d+) of (\d+) joined the run")
_HEARTBEAT = re.compile(r"Task (\d+) heartbeat timeout")
_LEFT_FIRST = re.compile(r"The first task at the barrier: (\d+)")
_UNHEALTHY = re.compile(r"tasks are unhealthy \(stopped sending heartbeats\):\s*((?:\d+[\s,]*)+)")
_COORDINATOR_GONE = ("Socket closed", "Connection reset", "Connection refused", "failed to connect",
                     "Failed to connect")
_GLOO_PEER = re.compile(r"Gloo [^\n]*failed[^\n]*Connection (?:closed|reset) by peer")
_RETRYABLE_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


# -- what a rerun resumes from -------------------------------------------------------------


def newest_complete_checkpoint(output_dir: str | os.PathLike) -> tuple[storage.AnyPath, int] | None:
    """``(checkpoints folder, step)`` of the newest step under ``output_dir`` (a local folder or a
    bucket) that passes the cheap checks (:func:`~elf_eqx.training.checkpoint_integrity.damage`:
    what a resume restores, short of reading it), looking in ``output_dir/checkpoints`` and, for a
    distillation's rounds, ``output_dir/*/checkpoints`` (the most recently written folder); ``None``
    when there is none. Reads only file names, sizes and times."""
    root = storage.as_path(output_dir)
    if not root.is_dir():
        return None
    rounds = sorted(p / "checkpoints" for p in root.iterdir() if p.name != "checkpoints")
    found = []
    for folder in [root / "checkpoints", *rounds]:
        if not folder.is_dir():
            continue
        steps = sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir()), reverse=True)
        for step in steps:
            if damage(folder / str(step), ("state", "meta"), ("state",)) is None:
                found.append((_written_at(folder / str(step)), str(folder), step, folder))
                break
    if not found:
        return None
    *_, step, folder = max(found, key=lambda f: f[:3])
    return folder, step


def _written_at(step_dir: storage.AnyPath) -> float:
    """When the step folder ``step_dir`` was written (in a bucket, where folders have no time: its
    state metadata file's), ``0.0`` when that cannot be read."""
    try:
        if not storage.is_remote(step_dir):
            return Path(step_dir).stat().st_mtime
        return float((step_dir / "state" / "_METADATA").stat().mtime)
    except (OSError, AttributeError, ValueError):
        return 0.0


@dataclasses.dataclass(frozen=True)
class ResumeHint:
    """Where a rerun of a training command resumes from, worded for the lost-peer line."""

    output_dir: str
    resume_step: int | None = None

    def line(self) -> str:
        found = newest_complete_checkpoint(self.output_dir)
        if found is None:
            return f"no complete checkpoint in {self.output_dir} yet: rerunning the same command starts it again"
        folder, step = found
        if self.resume_step is not None:
            return (f"the last complete checkpoint is step {step} in {folder}; the same command resumes from "
                    f"--resume-step {self.resume_step} again, without --resume-step from step {step}")
        return f"the last complete checkpoint is step {step} in {folder}, which rerunning the same command resumes from"


# -- reading how a worker ended ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a worker ended: ``retryable`` or not, the supervisor's exit code, and what to say (``""``: nothing)."""

    retryable: bool
    exit_code: int
    said: str = ""


def lost_peer(text: str) -> str | None:
    """Which peer process the worker's stderr ``text`` says was lost, and how (``"process 1 of 2 (no
    heartbeat within the heartbeat timeout)"``, ``"process 0 of 2, the coordinator (its service is
    gone)"``, ``"a peer process (...)"``), or ``None`` when it does not say a peer was lost (JAX's
    coordination service's fatal message, or a CPU collective's peer connection closing)."""
    fatal = JAX_FATAL in text
    if not fatal and not _GLOO_PEER.search(text):
        return None
    joined = _JOINED.search(text)
    me, count = (int(joined.group(1)), int(joined.group(2))) if joined else (None, None)
    of = f" of {count}" if count else ""
    ids = sorted({int(i) for i in _HEARTBEAT.findall(text)}
                 | {int(i) for m in _UNHEALTHY.findall(text) for i in re.findall(r"\d+", m)} - {me})
    if ids:
        who = ", ".join(f"process {i}" for i in ids)
        return f"{who}{of} (no heartbeat within --heartbeat-timeout-s)"
    if fatal and me != 0 and any(s in text for s in _COORDINATOR_GONE):
        return f"process 0{of}, the coordinator (its coordination service is gone)"
    left = {int(i) for i in _LEFT_FIRST.findall(text)} - {me}
    if fatal and left:
        who = ", ".join(f"process {i}" for i in sorted(left))
        return f"{who}{of} (it left the run while this one was still in it)"
    if fatal:
        last = next((line for line in reversed(text.splitlines()) if "absl::Status" in line), "")
        status = last.split("absl::Status:", 1)[-1].strip()[:200]
        return f"a peer process (JAX's coordination service: {status or 'fatal error'})"
    return "a peer process (its connection in a collective closed)"


def classify(returncode: int, text: str, *, asked_to_stop: bool, resume: Callable[[], str]) -> Outcome:
    """What the supervisor does about a worker that ended with ``returncode`` (negative: killed by
    that signal), its stderr's kept ``text``; ``asked_to_stop``: the supervisor passed it a stop
    signal. See the module's table."""
    if returncode == 0:
        return Outcome(False, 0)
    if JAX_FATAL in text and not _JOINED.search(text):  # JAX ends a process whose coordinator never answered
        return Outcome(True, RETRYABLE_EXIT, "error: could not join the run: its coordinator (process 0) did not "
                                             f"answer within --init-timeout-s; {resume()}")
    peer = lost_peer(text)
    if peer is not None:
        return Outcome(True, RETRYABLE_EXIT, f"error: lost {peer}; {resume()}")
    if returncode == RETRYABLE_EXIT:  # the worker's own one-line error said what (e.g. could not join)
        return Outcome(True, RETRYABLE_EXIT, resume())
    if returncode < 0:
        sig = signal.Signals(-returncode)
        if sig in _RETRYABLE_SIGNALS and not asked_to_stop:
            return Outcome(True, RETRYABLE_EXIT, f"error: the worker process was killed by {sig.name}; {resume()}")
        return Outcome(False, 128 - returncode, f"error: the worker process ended by {sig.name}")
    return Outcome(False, returncode)


# -- running it ------------------------------------------------------------------------------

# The worker is started through this (no Python code may run in a forked child of a threaded
# process): it asks Linux to SIGKILL it when the supervisor dies, then becomes the worker.
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the supervisor died before the line above
    os._exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _dying_with_this_process(command: list[str]) -> list[str]:
    """``command``, started so that it dies with this process (Linux; elsewhere as it is)."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]


class _Tee(threading.Thread):
    """Copies a pipe to this process's stderr (fd 2) unchanged, keeping its first and last
    :data:`KEEP_BYTES`."""

    def __init__(self, pipe) -> None:
        super().__init__(daemon=True)
        self.pipe, self.head, self.tail = pipe, bytearray(), bytearray(b"\n")

    def run(self) -> None:
        fd = self.pipe.fileno()
        while chunk := os.read(fd, 65536):
            with contextlib.suppress(OSError):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(2, view):]
            if len(self.head) < KEEP_BYTES:
                self.head += chunk[: KEEP_BYTES - len(self.head)]
            self.tail += chunk
            del self.tail[:-KEEP_BYTES]

    def text(self) -> str:
        return (bytes(self.head) + b"\n" + bytes(self.tail)).decode("utf-8", "replace")

    def line_open(self) -> bool:
        """Whether the worker's last output line is unfinished (a progress bar): a line the
        supervisor prints then starts on a new one."""
        return not self.tail.endswith(b"\n")


class Supervisor:
    """Runs ``command`` as the worker, again after each retryable failure while ``max_restarts``
    last; ``restart_delay_s`` between a failure and the next start."""

    def __init__(self, command: Sequence[str], *, max_restarts: int, restart_delay_s: float,
                 resume: Callable[[], str], env: dict[str, str] | None = None):
        self.command, self.max_restarts, self.restart_delay_s = list(command), max_restarts, restart_delay_s
        self.resume, self.env = resume, env
        self.stop_asked: str | None = None
        self.worker: subprocess.Popen | None = None

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_asked = signal.Signals(signum).name
        worker = self.worker
        if worker is not None and worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM if signum == signal.SIGHUP else signum)

    def _start(self) -> tuple[subprocess.Popen, _Tee]:
        env = {**(self.env if self.env is not None else os.environ), ENV: "worker"}
        if sys.stderr.isatty() and "COLUMNS" not in env:  # the worker's stderr is a pipe: keep progress bars wide
            with contextlib.suppress(OSError):
                env["COLUMNS"] = str(os.get_terminal_size(sys.stderr.fileno()).columns)
        worker = subprocess.Popen(_dying_with_this_process(self.command), env=env, stderr=subprocess.PIPE,
                                  start_new_session=True)
        tee = _Tee(worker.stderr)
        tee.start()
        return worker, tee

    def run(self) -> int:
        """Supervise until the work is done, a failure is not retried, or a stop is asked for;
        returns the exit code."""
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._signal) for sig in handled}
        try:
            restarts = 0
            while True:
                self.worker, tee = self._start()
                returncode = self.worker.wait()
                tee.join(timeout=10)
                self.worker.stderr.close()
                outcome = classify(returncode, tee.text(), asked_to_stop=self.stop_asked is not None,
                                   resume=self.resume)
                if outcome.said:
                    print(("\n" if tee.line_open() else "") + outcome.said, file=sys.stderr, flush=True)
                if not outcome.retryable or self.stop_asked is not None or restarts >= self.max_restarts:
                    return outcome.exit_code
                restarts += 1
                print(f"restarting in {self.restart_delay_s:g} s (restart {restarts} of {self.max_restarts})",
                      file=sys.stderr, flush=True)
                deadline = time.monotonic() + self.restart_delay_s
                while time.monotonic() < deadline and self.stop_asked is None:
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                if self.stop_asked is not None:
                    return outcome.exit_code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_failing: list[int | None] = [None]
"""The exit code this worker of a multi-process run is failing with by itself (``None``: it is not)."""
_PEER_ERROR = re.compile(r"Connection (?:closed|reset) by peer|UNAVAILABLE|DEADLINE_EXCEEDED|[Cc]oordination service|"
                         r"Barrier timed out|heartbeat")


OWN_FAILURE_GRACE_S = 10.0
"""How long a worker failing by itself waits at exit for the others to fail alike (they then all end
together, each with its own line and code) before it leaves without them."""


def _end_own_failure() -> None:
    """At exit (before JAX's own clean-up, which was registered first): a worker failing by itself
    (bad input, a bug, a second Ctrl-C) goes into JAX's shutdown, where the others meet it if they
    fail alike; after :data:`OWN_FAILURE_GRACE_S` it leaves with its own exit code without them. (JAX
    would hold it at that barrier for --shutdown-timeout-s, while the others wait for it in the
    step, then end it as if a peer were lost.) The others then see it lost, within the heartbeat
    timeout."""
    code = _failing[0]
    if code is None:
        return

    def leave() -> None:
        time.sleep(OWN_FAILURE_GRACE_S)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    threading.Thread(target=leave, daemon=True).start()


def _work_as_one_of_several(work: Callable[[], object], flags, preemption: bool) -> None:
    from elf_eqx.errors import UserError
    from elf_eqx.parallel.agreement import raised_everywhere
    from elf_eqx.parallel.distributed import initialize_distributed

    atexit.register(_end_own_failure)
    try:
        initialize_distributed(flags, preemption=preemption)
        work()
    except UserError as err:
        if not raised_everywhere(err):  # else every process ends with it, through JAX's shutdown, at once
            _failing[0] = err.exit_code
        raise
    except SystemExit as err:
        if err.code not in (0, None):
            _failing[0] = err.code if isinstance(err.code, int) else 1
        raise
    except KeyboardInterrupt:
        _failing[0] = 128 + signal.SIGINT
        raise
    except BaseException as err:
        if not _PEER_ERROR.search(str(err)):  # else a peer was lost: JAX ends this process naming it
            _failing[0] = 1
        raise


def launch(module: str, argv: Sequence[str], work: Callable[[], object], *, flags, max_restarts: int = 0,
           resume: ResumeHint | None = None, preemption: bool = True) -> None:
    """Run ``work()`` for the command ``python -m module argv``: in this process (after starting
    ``jax.distributed`` when ``flags`` ask for it, see
    :func:`~elf_eqx.parallel.distributed.initialize_distributed`; ``preemption``: with JAX's
    preemption service), or, for several processes or ``max_restarts`` > 0, in a supervised worker
    running the same command (then this raises ``SystemExit`` with the supervisor's exit code).
    ``resume`` says where a rerun resumes from (training; else "rerun the same command"). A worker
    of several processes that fails by itself ends with its own code (1, 2, 42; see
    :func:`_end_own_failure`)."""
    from elf_eqx.cli.errors import debug_active
    from elf_eqx.parallel.distributed import initialize_distributed, joins_a_cluster

    several = joins_a_cluster(flags)
    if os.environ.get(ENV, "").lower() not in ("worker", "off") and (several or max_restarts > 0):
        command = [sys.executable, "-m", module, *argv, *(["--debug"] if debug_active() else [])]
        delay = flags.heartbeat_timeout_s + 2.0 if several else 1.0
        hint = resume.line if resume is not None else (lambda: "rerunning the same command starts it again")
        raise SystemExit(Supervisor(command, max_restarts=max_restarts, restart_delay_s=delay, resume=hint).run())
    if several:
        _work_as_one_of_several(work, flags, preemption)
    else:
        initialize_distributed(flags, preemption=preemption)
        work()
