"""A pod run that survives (README, "Launching"), on ``jax.distributed`` CPU processes over
127.0.0.1 (tests/pod_fixtures.py).

First with a stand-in for the training loop (tests/pod_micro.py: seconds a run), on two and three
processes: a SIGTERM to one process, also during start-up, stops all of them after the same step;
a process lost makes the others exit 42 within the heartbeat timeout (at once when it is the
coordinator), naming it; bad input ends every process with its one line (exit 2), or, on one
process, ends that one so and the others as a lost peer. Then real two-process training runs of a tiny model, each interruption
followed by a rerun that must end bitwise where the uninterrupted two-process run ends (weights,
EMA, optimizer state, data position, key, every logged loss): SIGTERM to process 1 mid-save (an
asynchronous save where ``--async-save`` exists) and mid-step; a damaged newest checkpoint; SIGKILL of process 1 mid-save; ``--max-restarts 3`` through
two SIGKILLed workers mid-step, the coordinator's among them; an explicit ``--resume-step``, damaged
(both refuse alike) and older (both resume from it and save after it); ``sample`` on two processes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from pod_fixtures import HEARTBEAT_S, SAVE_EVERY, TOTAL, lost_line, start_micro, start_pod, wait_for
from run_compare import assert_same_run, logged_steps, saving

pytestmark = pytest.mark.slow
RUN_S = 600  # one run of the tiny model, its start (imports, data, compiling on process 1) included
MICRO_HEARTBEAT_S = 6
RESTART_S = HEARTBEAT_S + 2  # a supervisor's wait before it restarts its worker


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, corpus) -> Path:
    root = tmp_path_factory.mktemp("pod")
    shutil.copy(corpus, root / "chapters.jsonl")
    return root


@pytest.fixture(scope="module")
def reference(workspace) -> Path:
    """The uninterrupted two-process run (it also fills process 0's compilation cache)."""
    out = workspace / "reference"
    pod = start_pod(workspace, out)
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:] + pod.stderr(1)[-3000:]
    assert "process 1 of 2 joined the run" in pod.stderr(1)
    return out


def stopped_after(pod, i: int) -> int:
    """The step the stand-in process ``i`` stopped after."""
    (step,) = re.findall(r"stopped after step (\d+)", pod.stdout(i))
    return int(step)


@pytest.mark.parametrize("processes, victim, wait_s, sig", [(3, 2, 0.0, signal.SIGINT), (2, 1, 3.0, signal.SIGTERM)],
                         ids=["3-mid-step-ctrl-c", "2-start-up-sigterm"])
def test_a_stop_signal_to_one_process_stops_all_after_the_same_step(workspace, processes, victim, wait_s, sig):
    pod = start_micro(workspace, processes, heartbeat_s=MICRO_HEARTBEAT_S, wait_s=wait_s)
    wait_for(lambda: f"process {victim} of {processes} joined the run" in pod.stderr(victim), pod, every=0.01)
    if not wait_s:  # mid-step: after a seeded number of steps
        time.sleep(random.Random(28).uniform(0.5, 1.5))
    pod.signal(victim, sig)  # during start-up: before the first step asks
    assert pod.wait(120) == [0] * processes, pod.stderr(victim)[-2000:]
    steps = {stopped_after(pod, i) for i in range(processes)}
    assert len(steps) == 1, steps
    assert wait_s == 0 or steps == {1}  # a notice during start-up: the first step is the last


@pytest.mark.parametrize("victim", [1, 0], ids=["peer", "coordinator"])
def test_a_lost_process_ends_the_others_naming_it(workspace, victim):
    pod = start_micro(workspace, 3, heartbeat_s=MICRO_HEARTBEAT_S)
    wait_for(lambda: all(f"process {i} of 3 joined" in pod.stderr(i) for i in range(3)), pod, every=0.01)
    time.sleep(0.5)
    pod.signal(victim, signal.SIGKILL)  # the supervisor: its worker dies with it, as with a host lost
    killed = time.monotonic()
    others = [i for i in range(3) if i != victim]
    codes = [pod.procs[i].wait(timeout=MICRO_HEARTBEAT_S + 30) for i in others]
    took = time.monotonic() - killed
    assert codes == [42, 42], [pod.stderr(i)[-2000:] for i in others]
    for i in others:
        line = lost_line(pod.stderr(i))
        who = "process 0 of 3, the coordinator" if victim == 0 else "process 1 of 3 (no heartbeat"
        assert line.startswith(f"error: lost {who}") and "rerunning the same command" in line, line
    assert took < MICRO_HEARTBEAT_S + 20
    print(f"lost process {victim}: the others left {took:.1f} s later (heartbeat timeout {MICRO_HEARTBEAT_S} s)")


def test_bad_input_on_every_process_ends_each_with_its_own_line(workspace):
    pod = start_micro(workspace, 2, heartbeat_s=MICRO_HEARTBEAT_S, failing="all")
    assert pod.wait(120) == [2, 2], [pod.stderr(i)[-2000:] for i in (0, 1)]
    for i in (0, 1):
        assert pod.stderr(i).rstrip().endswith("error: chapters.jsonl:3: not what it should be")


def test_bad_input_on_one_process_ends_it_and_the_others_as_a_lost_peer(workspace):
    pod = start_micro(workspace, 2, heartbeat_s=MICRO_HEARTBEAT_S, failing=1)
    # Its own line and code (not retried), after the grace in which the others could have failed alike.
    assert pod.procs[1].wait(timeout=120) == 2, pod.stderr(1)[-2000:]
    assert pod.stderr(1).rstrip().endswith("error: chapters.jsonl:3: not what it should be")
    assert pod.procs[0].wait(timeout=MICRO_HEARTBEAT_S + 30) == 42, pod.stderr(0)[-2000:]
    assert lost_line(pod.stderr(0)).startswith("error: lost process 1 of 2 (no heartbeat")


def stopped_step(pod) -> int:
    """The step both training processes said they stopped after (process 0 on stdout, process 1 on stderr)."""
    said = [line for line in pod.stdout(0).splitlines() if ": saved step " in line]
    assert len(said) == 1, pod.stdout(0)
    step = int(said[0].split(": saved step ")[1].split()[0])
    assert f"process 1: stopped after step {step}, saved with the others" in pod.stderr(1), pod.stderr(1)[-3000:]
    return step


def damage(out: Path, step: int) -> None:
    """Cut every array file of a checkpoint's state short (a copy cut short)."""
    for path in (out / "checkpoints" / str(step) / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            os.truncate(path, path.stat().st_size // 2)


def async_save_flags() -> list[str]:
    """``--async-save`` where the trainer has it (asynchronous checkpoints, issue 27), else none."""
    import contextlib
    import io

    from elf_eqx.training.config import parse_train_config

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parse_train_config(["--async-save"])
    except (SystemExit, Exception):
        return []
    return ["--async-save"]


def test_sigterm_mid_save_and_mid_step_then_a_damaged_newest_checkpoint(workspace, reference):
    rng = random.Random(28)
    out = workspace / "sigterm"
    # 1. Mid-save: the SIGTERM lands while orbax writes a scheduled checkpoint (of a seeded step),
    # in the background where saves are asynchronous.
    in_save = rng.choice([SAVE_EVERY, 2 * SAVE_EVERY])
    pod = start_pod(workspace, out, *async_save_flags())
    wait_for(lambda: saving(out, in_save), pod, every=0.001)
    pod.signal(1, signal.SIGTERM)
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
    first = stopped_step(pod)
    assert in_save <= first < TOTAL and (out / "checkpoints" / str(first)).is_dir()
    # 2. Mid-step, after the rerun resumed, a seeded delay after its first logged step. JAX passes
    # a SIGTERM on within about a second; should the run reach its end first, it just ends.
    pod = start_pod(workspace, out)
    wait_for(lambda: logged_steps(out) >= first + 1, pod)
    time.sleep(rng.uniform(0.0, 0.3))
    pod.signal(1, signal.SIGTERM)
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
    assert f"resumed from {out} at step {first}" in pod.stdout(0)
    assert f"process 1: resumed at step {first}" in pod.stderr(1)
    second = stopped_step(pod) if ": saved step " in pod.stdout(0) else TOTAL
    assert first < second <= TOTAL and (out / "checkpoints" / str(second)).is_dir()
    # 3. The newest checkpoint damaged: both processes check it, skip it alike (one warning line
    # each), resume from the one before, set it aside, save its step again and end bitwise.
    damage(out, second)
    before = max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit() and int(p.name) < second)
    pod = start_pod(workspace, out)
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
    assert f"resumed from {out} at step {before}" in pod.stdout(0)
    for i in (0, 1):
        assert f"checkpoint step {second} in" in pod.stderr(i) and "cannot be read" in pod.stderr(i)
    assert f"process 1: resumed at step {before}" in pod.stderr(1)
    assert (out / "checkpoints.set_aside" / str(second) / "state").is_dir()
    assert_same_run(out, reference, TOTAL)


def committed(out: Path, step: int) -> bool:
    """Whether the checkpoint of ``step`` is complete (orbax has renamed its folder into place)."""
    return (out / "checkpoints" / str(step)).is_dir()


def test_sigkill_mid_save_then_max_restarts_through_two_killed_workers(workspace, reference):
    out = workspace / "sigkill"
    # 1. Mid-save: process 1 (its host: the supervisor and its worker) is gone while orbax writes
    # the second checkpoint, which can then never be completed.
    in_save = 2 * SAVE_EVERY
    pod = start_pod(workspace, out)
    wait_for(lambda: saving(out, in_save), pod)
    pod.signal(1, signal.SIGKILL)
    killed = time.monotonic()
    assert pod.procs[0].wait(timeout=HEARTBEAT_S + 60) == 42, pod.stderr(0)[-3000:]
    took = time.monotonic() - killed
    line = lost_line(pod.stderr(0))
    last = in_save - SAVE_EVERY
    assert line == (f"error: lost process 1 of 2 (no heartbeat within --heartbeat-timeout-s); the last complete "
                    f"checkpoint is step {last} in {out / 'checkpoints'}, which rerunning the same command resumes from")
    pod.kill()
    print(f"process 0 left {took:.1f} s after process 1 was killed mid-save (heartbeat timeout {HEARTBEAT_S} s)")
    # 2. The rerun, with --max-restarts 3: it resumes from that checkpoint; a worker is killed
    # mid-step (each supervisor restarts its worker, the survivor's after naming the lost peer),
    # later the coordinator's; every start resumes from the last complete checkpoint; the run ends bitwise.
    pod = start_pod(workspace, out, "--max-restarts", "3")
    for n, (victim, after) in enumerate(((1, last + SAVE_EVERY), (0, last + 2 * SAVE_EVERY))):
        wait_for(lambda: committed(out, after), pod, every=0.005)  # then the next steps run
        os.kill(pod.worker(victim), signal.SIGKILL)
        wait_for(lambda: all(pod.stderr(i).count("restarting in") > n for i in (0, 1)), pod, every=0.2,
                 timeout=HEARTBEAT_S + 60)
    assert pod.wait(RUN_S + 2 * RESTART_S) == [0, 0], pod.stderr(0)[-3000:]
    for i in (0, 1):
        assert "restart 2 of 3" in pod.stderr(i) and "restart 3 of 3" not in pod.stderr(i), pod.stderr(i)[-3000:]
    assert "error: the worker process was killed by SIGKILL" in pod.stderr(1)
    assert "error: lost process 1 of 2" in pod.stderr(0)
    assert "error: the worker process was killed by SIGKILL" in pod.stderr(0)
    assert "error: lost process 0 of 2, the coordinator" in pod.stderr(1)
    for step in (last, last + SAVE_EVERY, last + 2 * SAVE_EVERY):
        assert f"resumed from {out} at step {step}" in pod.stdout(0)
    assert_same_run(out, reference, TOTAL)


def test_an_explicit_resume_step_is_agreed_refused_or_resumed(workspace, reference):
    out = workspace / "resume_step"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("*.logs.*"))
    damage(out, TOTAL)
    # A damaged step asked for: both processes refuse, with the same line (no step is compiled).
    pod = start_pod(workspace, out, "--resume-step", str(TOTAL))
    assert pod.wait(RUN_S) == [2, 2]
    refusal = [[line for line in pod.stderr(i).splitlines() if line.startswith("error: ")][-1] for i in (0, 1)]
    assert refusal[0] == refusal[1] and f"checkpoint step {TOTAL}" in refusal[0] and "cannot be read" in refusal[0]
    # An older step: both resume from it, the newer ones (the damaged one too) set aside by process 0
    # while process 1 waits, the first save after it succeeds on both, and the run ends bitwise.
    older = TOTAL - 2 * SAVE_EVERY
    pod = start_pod(workspace, out, "--resume-step", str(older))
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
    assert f"resumed from {out} at step {older}" in pod.stdout(0)
    assert f"process 1: resumed at step {older}" in pod.stderr(1)
    assert sorted(p.name for p in (out / "checkpoints.set_aside").iterdir()) == sorted([str(TOTAL - SAVE_EVERY),
                                                                                         str(TOTAL)])
    assert_same_run(out, reference, TOTAL)


def test_sample_on_two_processes_writes_each_sample_once(workspace, reference):
    output = workspace / "two.jsonl"
    pod = start_pod(workspace, workspace / "sample", module="elf_eqx.sample", args=[
        str(reference), "--num-samples", "3", "--batch-size", "2", "--seed", "5", "--quiet", "--output", str(output)])
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:] + pod.stderr(1)[-3000:]
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2] and all(r["text"] for r in records)
    assert records[0]["settings"]["mesh"] == {"data": 2, "fsdp": 1, "tensor": 1}  # one device of each process
    assert f"wrote 3 samples to {output}" in pod.stdout(0) and "wrote" not in pod.stdout(1)
