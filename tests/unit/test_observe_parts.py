"""The pieces that see inside a run, one at a time: the chip table (shared with the dry run), the
step clock's arithmetic on made-up timings, memory figures, step ranges, sample files, and the run
section's new flags (old stored configs still read)."""

from __future__ import annotations

import dataclasses

import pytest
from run_fixtures import OLD_FLAT_RUN_CONFIG

from elf_eqx.aot.targets import parse_target
from elf_eqx.errors import ConfigError
from elf_eqx.observe.chips import CHIPS, chip_for_kind, peak_flops_for
from elf_eqx.observe.device_memory import GIB, memory_figures
from elf_eqx.observe.profiler import StepRange
from elf_eqx.observe.sample_files import read_sample_file
from elf_eqx.observe.step_clock import StepClock, StepTiming, Throughput
from elf_eqx.training.config import TrainConfig


@pytest.mark.parametrize("kind, chip", [
    ("TPU v4", "TPU v4"), ("TPU v5 lite", "TPU v5e"), ("TPU v5", "TPU v5p"), ("TPU v5p", "TPU v5p"),
    ("TPU v6 lite", "TPU v6e"), ("NVIDIA A100-SXM4-80GB", "NVIDIA A100"), ("NVIDIA H100 80GB HBM3", "NVIDIA H100"),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"), ("NVIDIA H200", "NVIDIA H200"), ("NVIDIA B200", "NVIDIA B200"),
])
def test_chip_table_by_device_kind(kind, chip):
    assert chip_for_kind(kind).name == chip


def test_one_table_for_the_dry_run_and_the_run():
    for spelling in ("v4-32", "v5e-256", "v5p-64", "v6e-8", "h100", "h200", "a100", "a100-40"):
        target = parse_target(spelling)
        assert target.peak_flops == chip_for_kind(target.device_kind).peak_flops
    assert chip_for_kind("cpu") is None and len({c.name for c in CHIPS}) == len(CHIPS)
    assert peak_flops_for("cpu", "cpu") == (None, "unknown")
    assert peak_flops_for("cpu", "cpu", 2e12) == (2e12, "--peak-flops")
    assert peak_flops_for("TPU v5", "tpu") == (459e12, "TPU v5p")


def timing(started: float, wait: float = 0.0, call: float = 0.01, compiled: bool = False) -> StepTiming:
    return StepTiming(started, wait, call, compiled)


def test_step_clock_leaves_out_the_compile_and_splits_the_step(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("elf_eqx.observe.step_clock.time.perf_counter", lambda: now[0])
    throughput = Throughput(100.0, 1e9, 2, "fake", "gpu", 1e9, "--peak-flops")
    clock = StepClock()
    clock.add(timing(0.0, wait=0.5, call=10.0, compiled=True))  # a 10 s compile
    clock.add(timing(11.0, wait=0.5))
    now[0] = 14.0
    clock.synced(wait_s=1.0)
    figures = clock.figures(throughput)
    assert figures["step_time_s"] == pytest.approx((14.0 - 10.0) / 2)
    assert figures["compile_s"] == 10.0 and figures["tokens_per_s"] == pytest.approx(100.0 / 2.0)
    assert figures["mfu"] == pytest.approx(1e9 / (2.0 * 1e9 * 2))
    assert figures["data_wait_s"] == pytest.approx(0.5) and figures["data_wait_share"] == pytest.approx(0.25)
    assert figures["host_share"] == pytest.approx(0.75) and figures["bound"] == "host"
    # the next stretch: a sync without a record (a sample file) and one with; no compile any more
    clock.add(timing(20.0, wait=2.0))
    now[0] = 23.0
    clock.synced(wait_s=0.0)
    clock.add(timing(30.0, wait=2.0))
    now[0] = 33.0
    clock.synced(wait_s=0.0)
    figures = clock.figures(throughput)
    assert figures["step_time_s"] == pytest.approx(3.0) and "compile_s" not in figures
    assert figures["bound"] == "data" and figures["data_wait_share"] == pytest.approx(4.0 / 6.0)
    assert clock.figures(throughput) == {}  # nothing new


def test_step_clock_without_a_peak_gives_no_mfu():
    clock = StepClock()
    clock.add(timing(0.0))
    clock.synced(wait_s=0.0)
    figures = clock.figures(Throughput(1.0, 1.0, 1, "cpu", "cpu", None, "unknown"))
    assert figures["step_time_s"] > 0 and "mfu" not in figures


def test_memory_figures_where_reported():
    class Device:
        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

    devices = [Device({"bytes_in_use": GIB, "peak_bytes_in_use": 3 * GIB, "bytes_limit": 8 * GIB}),
               Device({"bytes_in_use": 2 * GIB, "peak_bytes_in_use": 2 * GIB, "bytes_limit": 8 * GIB}), Device(None)]
    assert memory_figures(devices) == {"memory_in_use_gib": 2.0, "memory_peak_gib": 3.0, "memory_limit_gib": 8.0}
    assert memory_figures([Device(None)]) == {}


def test_step_ranges():
    assert StepRange.parse("2:3") == StepRange(2, 3) and str(StepRange(4, 4)) == "4"
    for bad in ("5:2", "0:3", "3", "a:b"):
        with pytest.raises(ConfigError, match="--profile-steps"):
            StepRange.parse(bad)


def test_sample_files_read_back(tmp_path):
    path = tmp_path / "step_0000004.txt"
    path.write_text("# step 4, sde2, 2 NFE\n\n[0] in the beginning\n\n[1] and the earth\nwas without form\n")
    assert read_sample_file(path) == ["in the beginning", "and the earth\nwas without form"]
    assert read_sample_file(tmp_path / "missing.txt") == []


def test_run_section_flags_and_old_configs():
    old = TrainConfig.from_dict(OLD_FLAT_RUN_CONFIG)
    assert old.run.peak_flops is None and old.run.profile_steps is None and old.run.wandb_tags == ()
    cfg = TrainConfig.from_dict({"wandb_tags": ["a", "b"], "wandb_project": "p", "profile_steps": "2:3",
                                 "output_dir": "runs/x"})
    assert cfg.run.wandb_settings.tags == ("a", "b") and cfg.run.wandb_settings.project == "p"
    assert cfg.run.profile_range == StepRange(2, 3) and cfg.run.profile_directory == "runs/x/profile"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="--profile-steps '5:2'"):
        dataclasses.replace(cfg.run, profile_steps="5:2")
    with pytest.raises(ConfigError, match="--peak-flops"):
        dataclasses.replace(cfg.run, peak_flops=0.0)
