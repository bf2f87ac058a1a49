"""A pod run that survives (README, "Launching"), on two ``jax.distributed`` CPU processes over
127.0.0.1 (tests/pod_fixtures.py): a SIGTERM to one process stops every process after the same
step, which they save together before exiting 0; a process killed makes the other exit 42 within
the heartbeat timeout, naming it and the checkpoint a rerun resumes from; a damaged newest
checkpoint or an older ``--resume-step`` is agreed by both; ``--max-restarts`` finishes a run
whose workers are killed twice; ``sample`` on two processes writes each sample once. Every rerun
ends bitwise where the uninterrupted two-process run ends."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pod_fixtures import (HEARTBEAT_S, SAVE_EVERY, TOTAL, assert_same_run, logged_steps, lost_line, pod_env,
                          saving, start_pod, wait_for)

pytestmark = pytest.mark.slow
RUN_S = 900  # one run of the tiny model, its start (imports, data, cached compiles) included, on a loaded machine
LOST_S = HEARTBEAT_S + 60  # a lost peer noticed (the heartbeat timeout) and the survivor out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, shared_dir) -> Path:
    root = tmp_path_factory.mktemp("pod")
    lines = (shared_dir / "data" / "kjv" / "valid.jsonl").read_text().splitlines()[:12]
    (root / "chapters.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def reference(workspace) -> Path:
    """The uninterrupted two-process run (it also fills the compilation cache)."""
    out = workspace / "reference"
    pod = start_pod(workspace, out)
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:] + pod.stderr(1)[-3000:]
    assert "process 1 of 2 joined the run" in pod.stderr(1)
    return out


def stopped_step(pod) -> int:
    """The step both processes said they stopped after (process 0 on stdout, process 1 on stderr)."""
    said = [line for line in pod.stdout(0).splitlines() if ": saved step " in line]
    assert len(said) == 1, pod.stdout(0)
    step = int(said[0].split(": saved step ")[1].split()[0])
    assert f"process 1: stopped after step {step}, saved with the others" in pod.stderr(1), pod.stderr(1)[-3000:]
    return step


def test_sigterm_to_one_process_stops_both_at_the_same_step_and_resumes_bitwise(workspace, reference):
    rng = random.Random(28)
    out = workspace / "sigterm"
    # 1. Mid-save: the SIGTERM lands while orbax writes a scheduled checkpoint (of a seeded step).
    in_save = rng.choice([SAVE_EVERY, 2 * SAVE_EVERY])
    pod = start_pod(workspace, out)
    wait_for(lambda: saving(out, in_save), pod)
    pod.signal(1, signal.SIGTERM)
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
    first = stopped_step(pod)
    assert in_save <= first < TOTAL and (out / "checkpoints" / str(first)).is_dir()
    # 2. Mid-step, after the rerun resumed: after a seeded number of steps and a seeded delay. JAX
    # notices a SIGTERM within a second; should the run reach its end first, it just ends.
    pod = start_pod(workspace, out)
    wait_for(lambda: logged_steps(out) >= first + 1, pod)
    time.sleep(rng.uniform(0.0, 0.5))
    pod.signal(1, signal.SIGTERM)
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
    assert f"resumed from {out} at step {first}" in pod.stdout(0)
    assert f"process 1: resumed at step {first}" in pod.stderr(1)
    second = stopped_step(pod) if ": saved step " in pod.stdout(0) else TOTAL
    assert first < second <= TOTAL and (out / "checkpoints" / str(second)).is_dir()
    # 3. During start-up (the notice of a preemption that came early): once process 1 has joined,
    # before any step; both stop after their first step.
    if second < TOTAL:
        pod = start_pod(workspace, out)
        wait_for(lambda: "process 1 of 2 joined the run" in pod.stderr(1), pod)
        pod.signal(1, signal.SIGTERM)
        assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
        assert stopped_step(pod) == second + 1
        second += 1
    # 4. The same command again, to the end.
    if second < TOTAL:
        pod = start_pod(workspace, out)
        assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
        assert f"resumed from {out} at step {second}" in pod.stdout(0)
    assert_same_run(out, reference)


def test_a_killed_process_ends_the_other_naming_it_and_a_rerun_resumes_bitwise(workspace, reference):
    rng = random.Random(2828)
    out = workspace / "sigkill"
    # 1. Mid-step: process 1 (its host: the supervisor and its worker) is gone.
    pod = start_pod(workspace, out)
    wait_for(lambda: logged_steps(out) >= SAVE_EVERY + 1, pod)
    time.sleep(rng.uniform(0.0, 0.5))
    pod.signal(1, signal.SIGKILL)
    killed = time.monotonic()
    assert pod.procs[0].wait(timeout=LOST_S) == 42, pod.stderr(0)[-3000:]
    took = time.monotonic() - killed
    line = lost_line(pod.stderr(0))
    assert "lost process 1 of 2" in line and "the last complete checkpoint is step" in line, line
    last = int(line.split("the last complete checkpoint is step ")[1].split()[0])
    assert last >= SAVE_EVERY and (out / "checkpoints" / str(last)).is_dir()
    print(f"process 0 left {took:.1f} s after process 1 was killed (heartbeat timeout {HEARTBEAT_S} s)")
    pod.kill()
    # 2. Mid-save, after a rerun resumed from that checkpoint.
    in_save = rng.choice([s for s in range(SAVE_EVERY, TOTAL, SAVE_EVERY) if s > last])
    pod = start_pod(workspace, out)
    wait_for(lambda: saving(out, in_save), pod)
    pod.signal(1, signal.SIGKILL)
    assert pod.procs[0].wait(timeout=LOST_S) == 42, pod.stderr(0)[-3000:]
    assert f"resumed from {out} at step {last}" in pod.stdout(0)
    line = lost_line(pod.stderr(0))
    assert "lost process 1 of 2" in line, line
    newest = int(line.split("the last complete checkpoint is step ")[1].split()[0])
    assert newest == in_save - SAVE_EVERY or newest == in_save  # the save cut short is never the one resumed
    pod.kill()
    # 3. The same command again: it resumes from the last complete checkpoint and ends bitwise.
    pod = start_pod(workspace, out)
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
    assert f"resumed from {out} at step {newest}" in pod.stdout(0)
    assert_same_run(out, reference)


def test_a_damaged_newest_checkpoint_and_an_older_resume_step_are_agreed(workspace, reference):
    out = workspace / "damaged"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("*.logs.*"))
    for path in (out / "checkpoints" / str(TOTAL) / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            os.truncate(path, path.stat().st_size // 2)  # a copy cut short
    previous = TOTAL - SAVE_EVERY
    pod = start_pod(workspace, out)
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
    assert f"resumed from {out} at step {previous}" in pod.stdout(0)
    assert f"process 1: resumed at step {previous}" in pod.stderr(1)
    assert f"checkpoint step {TOTAL} in" in pod.stderr(1) and "cannot be read" in pod.stderr(1)  # both checked it
    assert (out / "checkpoints.set_aside" / str(TOTAL) / "state").is_dir()
    assert_same_run(out, reference)  # its first save (step 12 again) succeeded on both

    older = TOTAL - 2 * SAVE_EVERY
    pod = start_pod(workspace, out, "--resume-step", str(older))
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:]
    assert f"resumed from {out} at step {older}" in pod.stdout(0)
    assert f"process 1: resumed at step {older}" in pod.stderr(1)
    assert sorted(p.name for p in (out / "checkpoints.set_aside").iterdir()) == ["12", "12-1", "9"]
    assert_same_run(out, reference)


def test_max_restarts_finishes_a_run_whose_workers_are_killed_twice(workspace, reference):
    out = workspace / "restarts"
    pod = start_pod(workspace, out, "--max-restarts", "3")
    for victim, steps in ((1, 4), (0, 8)):  # a worker, then the coordinator's worker
        wait_for(lambda: logged_steps(out) >= steps, pod, every=0.05)
        os.kill(pod.worker(victim), signal.SIGKILL)
        wait_for(lambda: pod.stderr(victim).count("restarting in") >= (1 if victim == 1 else 2), pod, every=0.2)
    assert pod.wait(RUN_S * 2) == [0, 0], pod.stderr(0)[-3000:]
    for i in (0, 1):
        assert "restart 2 of 3" in pod.stderr(i) and "restart 3 of 3" not in pod.stderr(i), pod.stderr(i)[-3000:]
    assert "the worker process was killed by SIGKILL" in pod.stderr(1) and "lost process 1 of 2" in pod.stderr(0)
    assert "the worker process was killed by SIGKILL" in pod.stderr(0)
    assert "lost process 0 of 2, the coordinator" in pod.stderr(1)
    assert_same_run(out, reference)


def test_sample_on_two_processes_writes_each_sample_once(workspace, reference):
    args = [str(reference), "--num-samples", "3", "--batch-size", "2", "--seed", "5", "--quiet"]
    pod = start_pod(workspace, workspace / "two", module="elf_eqx.sample",
                    args=[*args, "--output", str(workspace / "two.jsonl")])
    assert pod.wait(RUN_S) == [0, 0], pod.stderr(0)[-3000:] + pod.stderr(1)[-3000:]
    two = [json.loads(line) for line in (workspace / "two.jsonl").read_text().splitlines()]
    assert [r["index"] for r in two] == [0, 1, 2]
    assert "wrote 3 samples" in pod.stdout(0) and "wrote" not in pod.stdout(1)
    one = subprocess.run([sys.executable, "-m", "elf_eqx.sample", *args, "--output", str(workspace / "one.jsonl")],
                         env={**pod_env(workspace), "XLA_FLAGS": pod_env(workspace)["XLA_FLAGS"].replace(
                             "device_count=1", "device_count=2")},
                         capture_output=True, text=True, timeout=RUN_S, cwd=workspace)
    assert one.returncode == 0, one.stderr[-3000:]
    one = [json.loads(line) for line in (workspace / "one.jsonl").read_text().splitlines()]
    assert [r["text"] for r in two] == [r["text"] for r in one]  # the same mesh (2 devices) on one process
