"""Faults: a training run SIGKILLed at seeded random moments (one of them inside a checkpoint save)
and restarted each time ends exactly where an uninterrupted run ends; a damaged newest checkpoint
is reported, kept, and skipped by both resuming and sampling.

Every run is a real ``python -m elf_eqx.train`` process sharing one JAX compilation cache and
one data cache, so only the first process pays for compiling.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from run_compare import assert_same_run, logged_steps

TOTAL, SAVE_EVERY = 12, 3
TINY = [
    "--preset", "quickstart", "--model", "ELF-T", "--global-batch", "4", "--max-length", "16",
    "--warmup-steps", "2", "--lr-schedule", "constant", "--log-every", "1", "--save-every", str(SAVE_EVERY),
    "--sample-every", "1000", "--sample-steps", "2", "--num-samples", "2", "--max-steps", str(TOTAL),
]
# Runs `python -m elf_eqx.train ARGS`; with KILL_IN_SAVE=N it SIGKILLs itself as soon as orbax
# starts writing step N (its temporary folder appears), i.e. in the middle of that save.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from pathlib import Path

    step = os.environ.get("KILL_IN_SAVE")
    if step:
        folder = Path(sys.argv[sys.argv.index("--output-dir") + 1]) / "checkpoints"

        def watch():
            while True:
                if folder.is_dir() and any(p.name.startswith(f"{step}.orbax-checkpoint-tmp") for p in folder.iterdir()):
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(0.001)

        threading.Thread(target=watch, daemon=True).start()
    from elf_eqx.train import main
    main(sys.argv[1:])
    """
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, corpus) -> Path:
    """Twelve real chapters, and the data cache the runs share."""
    root = tmp_path_factory.mktemp("faults")
    shutil.copy(corpus, root / "chapters.jsonl")
    return root


def train_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", DRIVER, *TINY, "--data", str(root / "chapters.jsonl"),
            "--cache-dir", str(root / "cache"), "--output-dir", str(out), *extra]


def run_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
            **extra}


def train(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(train_cmd(root, out, *extra), env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(workspace) -> Path:
    """The uninterrupted run (it also fills the compilation cache)."""
    out = workspace / "reference"
    train(workspace, out)
    return out


@pytest.mark.slow
def test_killed_at_random_moments_and_restarted_matches_the_uninterrupted_run(workspace, reference):
    rng = random.Random(15)
    out = workspace / "killed"
    kills = 0
    # 1. In the middle of a checkpoint save.
    in_save = rng.choice([2 * SAVE_EVERY, 3 * SAVE_EVERY])
    proc = subprocess.run(train_cmd(workspace, out), env=run_env(KILL_IN_SAVE=str(in_save)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    kills += 1
    assert any(p.name.startswith(f"{in_save}.orbax-checkpoint-tmp") for p in (out / "checkpoints").iterdir())
    # 2. At random moments once the restarted run is stepping again.
    for _ in range(2):
        before = logged_steps(out)
        proc = subprocess.Popen(train_cmd(workspace, out), env=run_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline and logged_steps(out) <= min(before, TOTAL - 1):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    # 3. The same command again, to the end.
    finished = train(workspace, out)
    assert "resumed from" in finished.stdout
    assert kills >= 2
    assert_same_run(out, reference, TOTAL)


@pytest.mark.slow
def test_damaged_newest_checkpoint_is_kept_and_skipped(workspace, reference, capfd):
    import shutil

    from elf_eqx.release.model_source import load_model_source
    from elf_eqx.sample import main as sample_main
    from elf_eqx.training.run_directory import load_model_from_checkpoint

    out = workspace / "damaged"
    shutil.copytree(reference, out)
    newest = out / "checkpoints" / str(TOTAL)
    for path in (newest / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            os.truncate(path, path.stat().st_size // 2)  # a copy cut short
    previous = TOTAL - SAVE_EVERY

    # Sampling: the newest readable checkpoint, with one warning line naming the damaged step.
    bundle = load_model_source(str(out))
    assert bundle.step == previous
    err = capfd.readouterr().err
    assert f"checkpoint step {TOTAL} in" in err and "cannot be read" in err and "left in place" in err
    expected = load_model_from_checkpoint(reference, step=previous)
    for a, b in zip(_arrays(bundle.model), _arrays(expected)):
        np.testing.assert_array_equal(a, b)
    # Choosing the damaged step explicitly is an error (one line, exit 2).
    with pytest.raises(SystemExit) as exc:
        sample_main([str(out), "--step", str(TOTAL), "--output", str(workspace / "s.jsonl")])
    assert exc.value.code == 2 and f"checkpoint step {TOTAL}" in str(exc.value)
    assert newest.is_dir()

    # Training resumes from the previous step with a warning, keeps the damaged folder (set
    # aside, not deleted) and ends exactly where the undamaged run ended.
    resumed = train(workspace, out)
    assert f"checkpoint step {TOTAL} in" in resumed.stderr and "cannot be read" in resumed.stderr
    assert f"resumed from {out} at step {previous}" in resumed.stdout
    assert (out / "checkpoints.set_aside" / str(TOTAL) / "state").is_dir()
    assert_same_run(out, reference, TOTAL)


def _arrays(tree):
    import equinox as eqx
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))]
