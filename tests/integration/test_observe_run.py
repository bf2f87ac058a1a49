"""Seeing inside a run, end to end on a tiny model: the measured fields of every record, a slow data
source named as the bottleneck, a profiler trace of chosen steps, TensorBoard files read back
without torch, one wandb run across a kill and a resume (offline), ``python -m elf_eqx.inspect``
(an incomplete checkpoint, a plot, a dry run's report beside the run) and the one-line errors.
No timing is asserted beyond being positive."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from elf_eqx.inspect import main as inspect_main
from elf_eqx.train import main as train_main
from elf_eqx.training.setup import TrainingRun

TINY = [
    "--preset", "quickstart", "--model", "ELF-T", "--global-batch", "4", "--max-length", "16",
    "--warmup-steps", "2", "--lr-schedule", "constant", "--log-every", "1", "--save-every", "1000",
    "--sampling.every", "1000", "--sampling.steps", "2", "--sampling.num-samples", "2",
]
PEAK = 1e12


def tiny_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [*TINY, "--data", str(corpus), "--cache-dir", str(out.parent / "cache"), "--output-dir", str(out), *extra]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def observed_run(corpus, tmp_path_factory) -> Path:
    """Four steps with a known peak, a trace of steps 2–3, TensorBoard, checkpoints at 2 and 4 and
    a sample file at 4."""
    out = tmp_path_factory.mktemp("observed") / "run"
    train_main(tiny_args(corpus, out, "--max-steps", "4", "--save-every", "2", "--sampling.every", "4",
                         "--peak-flops", str(PEAK), "--profile-steps", "2:3", "--tensorboard"))
    return out


@pytest.mark.slow
def test_records_carry_measured_step_time_mfu_and_data_wait(observed_run):
    rows = records(observed_run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert "compile_s" in rows[0] and rows[0]["compile_s"] > 0
    assert all("compile_s" not in r for r in rows[1:])  # logged once
    for r in rows:
        assert r["step_time_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["tokens"] / r["step"] / r["step_time_s"])
        flops_per_step = r["train_flops"] / r["step"]
        assert r["mfu"] == pytest.approx(flops_per_step / (r["step_time_s"] * PEAK * 1))
        assert 0 <= r["data_wait_share"] <= 1 and 0 <= r["host_share"] <= 1 and r["data_wait_s"] >= 0
        assert r["bound"] in ("data", "host", "device")
        assert "memory_peak_gib" not in r  # the CPU backend reports no memory
    info = json.loads((observed_run / "run_info.json").read_text())
    assert info["config"]["model"]["name"] == "ELF-T"
    assert info["starts"][0]["peak_flops_per_device"] == PEAK and info["starts"][0]["device_kind"] == "cpu"


@pytest.mark.slow
def test_a_slow_data_source_is_named_as_the_bottleneck(corpus, tmp_path, monkeypatch):
    original = TrainingRun.next_batch

    def slow(self, sharding=None):
        time.sleep(1.0)
        return original(self, sharding)

    monkeypatch.setattr(TrainingRun, "next_batch", slow)
    out = tmp_path / "slow"
    train_main(tiny_args(corpus, out, "--max-steps", "3"))
    for r in records(out)[1:]:  # the first step's record also holds its compile
        assert r["bound"] == "data" and r["data_wait_s"] >= 1.0
        assert r["data_wait_share"] > max(1 - r["host_share"], r["host_share"] - r["data_wait_share"])


@pytest.mark.slow
def test_profile_steps_write_a_trace_naming_the_train_step(observed_run):
    traces = list((observed_run / "profile" / "plugins" / "profile").iterdir())
    assert len(traces) == 1
    files = {p.name for p in traces[0].iterdir()}
    assert any(name.endswith(".xplane.pb") for name in files) and "perfetto_trace.json.gz" in files
    events = json.loads(gzip.decompress((traces[0] / "perfetto_trace.json.gz").read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    steps = {int(e["args"]["step_num"]) for e in events if e.get("name") == "train_step"}
    assert steps == {2, 3}


TENSORBOARD_READER = textwrap.dedent("""
    import json, sys
    from elf_eqx.training.metrics_log import MetricsLog
    out = sys.argv[1]
    log = MetricsLog(out + "/fresh", tensorboard=True)
    log.write(7, {"loss": 0.5, "bound": "data"})
    log.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    found = {}
    for folder in (out + "/tensorboard", out + "/fresh/tensorboard"):
        events = EventAccumulator(folder)
        events.Reload()
        found[folder] = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    print(json.dumps({"torch": "torch" in sys.modules, "found": found}))
""")


@pytest.mark.slow
def test_tensorboard_files_read_back_without_torch(observed_run):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", TENSORBOARD_READER, str(observed_run)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    run = result["found"][f"{observed_run}/tensorboard"]
    assert [step for step, _ in run["loss"]] == [1, 2, 3, 4] and len(run["step_time_s"]) == 4 and "mfu" in run
    assert [s for s, _ in run["compile_s"]] == [1]
    assert result["found"][f"{observed_run}/fresh/tensorboard"] == {"loss": [[7, 0.5]]}


@pytest.mark.slow
def test_inspect_reports_an_incomplete_checkpoint_and_plots(observed_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(observed_run, run)
    biggest = max((p for p in (run / "checkpoints" / "4").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])  # a copy cut short
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')  # a record being written
    (run / "samples" / "s.jsonl.eval.json").write_text(json.dumps(
        {"metrics": ["gen_ppl", "entropy"], "gen_ppl": 87.25, "entropy": 4.5, "settings": {"step": 4}}))
    inspect_main([str(run), str(observed_run), "--plot", str(tmp_path / "runs.png")])
    text = capsys.readouterr().out
    screen = text.split(f"== {observed_run}")[0]
    assert "step 2: complete" in screen and "step 4: INCOMPLETE" in screen and "bytes, expected" in screen
    assert "ELF ELF-T" in screen and "--model 'ELF-T' (was 'ELF-XS')" in screen
    assert "step time" in screen and "median" in screen and "of 1e+12 FLOP/s per device" in screen
    assert "1 file(s) in samples/ at steps 4" in screen and "step 4: gen_ppl 87.25, entropy 4.5" in screen
    assert (tmp_path / "runs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_inspect_puts_a_dry_run_beside_the_run(observed_run, tmp_path, capsys):
    report = {"program": "step", "target": "v5p:1x1x1", "devices": 1, "device_kind": "TPU v5", "global_batch": 4,
              "memory_gib_per_device": 0.5, "estimate_s": 0.01, "tokens_per_s": 6400.0, "mfu": 0.3}
    plan = tmp_path / "plan.jsonl"
    plan.write_text(json.dumps(report) + "\n")
    inspect_main([str(observed_run), "--dry-run-json", str(plan)])
    text = capsys.readouterr().out
    part = text.split("against its dry run")[1]
    assert "0.01 s (compiler estimate)" in part and "(median)" in part and "30.0%" in part
    assert "0.50 GiB (compiled" in part and "the dry run's devices are not the run's" in part


def test_bad_input_is_one_line(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"--profile-steps '5:2'"):
        train_main(tiny_args(corpus, tmp_path / "a", "--profile-steps", "5:2"))
    with pytest.raises(SystemExit, match="run folder .*nowhere does not exist"):
        inspect_main([str(tmp_path / "nowhere")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` file (a LevelDB-style log: 32 KiB blocks of chunks with
    a 7-byte header: CRC, length, type 1 full / 2 first / 3 middle / 4 last), after its 7-byte header."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending, out = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


@pytest.mark.slow
def test_wandb_offline_stopped_and_resumed_is_one_run(corpus, tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "wb"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    flags = ["--wandb", "--wandb-project", "elf-test", "--wandb-tags", "a", "b", "--save-every", "2",
             "--sampling.every", "2"]
    cmd = [sys.executable, "-m", "elf_eqx.train", *tiny_args(corpus, out, "--max-steps", "100000", *flags)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoints" / "2").is_dir() and (out / "metrics.jsonl").is_file() and len(records(out)) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # a preemption's notice: finish the step, save, exit
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    stored = json.loads((out / "run_info.json").read_text())["wandb"]["id"]
    resumed_from = max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    done = subprocess.run([sys.executable, "-m", "elf_eqx.train", *tiny_args(corpus, out, "--max-steps",
                                                                           str(resumed_from + 2), *flags)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "run_info.json").read_text())["wandb"]["id"] == stored
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{stored}") for r in runs)
    histories = []
    for folder in runs:
        found = wandb_records(next(folder.glob("*.wandb")))
        run = next(r.run for r in found if r.WhichOneof("record_type") == "run")
        assert run.run_id == stored and run.project == "elf-test" and list(run.tags) == ["a", "b"]
        histories.append([r.history.step.num for r in found if r.WhichOneof("record_type") == "history"])
    assert histories[0] == list(range(1, resumed_from + 1))
    assert histories[1] == [resumed_from + 1, resumed_from + 2]
    assert list((runs[1] / "files" / "media" / "table").glob("samples_*.table.json"))  # the sample table


@pytest.mark.slow
def test_sample_profile_dir_traces_the_sampling_call(tmp_path, capsys):
    from run_fixtures import write_run

    from elf_eqx.sample import main as sample_main

    run = write_run(tmp_path / "run", conditional=False)
    sample_main([str(run), "--steps", "2", "--num-samples", "2", "--batch-size", "2", "--quiet",
                 "--output", str(tmp_path / "s.jsonl"), "--profile-dir", str(tmp_path / "trace")])
    assert "profile of the sampling call written to" in capsys.readouterr().out
    traces = list((tmp_path / "trace" / "plugins" / "profile").iterdir())
    assert len(traces) == 1 and any(p.name.endswith(".xplane.pb") for p in traces[0].iterdir())
