"""Settings of ``python -m elf_eqx.distill``: the teacher, the rounds, and the training sections a
round shares with ``python -m elf_eqx.train`` (optimizer, mesh, run); YAML presets in
``configs/distill_<name>.yaml`` (docs/method.md#distillation)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Annotated, Literal

import tyro

from elf_eqx.cli.args import DISTILL_PRESET_PREFIX, parse_cli
from elf_eqx.distillation.objective import check_decode_share
from elf_eqx.errors import ConfigError
from elf_eqx.sampler import SamplerSettings
from elf_eqx.sampling.settings import setting
from elf_eqx.solvers import FixedTimeGridName
from elf_eqx.training.sections import MeshSection, OptimizerSection, RunSection

Flat = tyro.conf.OmitArgPrefixes
# The students' sampler settings, declared by ELF's SamplerSettings (each default: the teacher run's).
StudentOmega = setting(SamplerSettings, "omega", optional=True, note="The students are distilled at and sampled "
                       "with this (default: the teacher run's sampling ω):")
TeacherCfgWeight = setting(SamplerSettings, "cfg_weight", optional=True, note="Conditional teachers: the students "
                           "learn to apply this in one pass and sample with weight 1 (default: the teacher run's):")


@dataclasses.dataclass(frozen=True)
class TeacherSection:
    """The trained ELF to distil."""

    teacher: tyro.conf.Positional[str] = ""
    """A training run of ours (its output directory, checkpoints/ folder or a step folder), a model
    exported from one (its folder, or a hub id org/name: python -m elf_eqx.export) or a converted
    release (python -m elf_eqx.convert)."""
    teacher_weights: Literal["ema", "raw"] = "ema"
    """The teacher's EMA weights (what it samples with) or its raw weights."""
    teacher_step: int | None = None
    """The teacher's checkpoint step (default: the newest readable one)."""
    teacher_revision: str | None = None
    """A hub teacher's revision: branch, tag or commit (default: the main branch)."""


@dataclasses.dataclass(frozen=True)
class RoundsSection:
    """The rounds: each halves the student's steps, the last round's student teaching the next."""

    from_steps: int = 32
    """The teacher's number of sampling steps in the first round."""
    to_steps: int = 4
    """The last student's number of steps (from_steps / 2^rounds)."""
    steps_per_round: int = 1000
    """Optimizer steps of each round."""
    time_grid: FixedTimeGridName = "logit_normal_quantile"
    """The fixed time grid the teacher steps on and the students are sampled with (a random grid
    cannot be distilled: each student step is fitted to one fixed pair of teacher steps)."""
    omega: StudentOmega = None
    cfg_weight: TeacherCfgWeight = None
    decode_share: float = 0.2
    """Share of every batch that keeps training the decode branch (the network decodes too)."""
    samples_every: int = 500
    """Optimizer steps between sample files of the student (at its own step count)."""
    num_samples: int = 4
    """Samples per sample file."""

    def __post_init__(self) -> None:
        for name in ("from_steps", "to_steps", "steps_per_round", "samples_every", "num_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        ratio = self.from_steps // self.to_steps
        if self.from_steps % self.to_steps or ratio < 2 or ratio & (ratio - 1):
            raise ConfigError(f"--to-steps {self.to_steps} must be --from-steps {self.from_steps} divided by a power "
                              "of two (each round halves the steps)")
        check_decode_share(self.decode_share, "--decode-share")

    @property
    def student_steps(self) -> list[int]:
        """The students' step counts, round by round: ``from/2, from/4, …, to``."""
        steps, n = [], self.from_steps
        while n > self.to_steps:
            n //= 2
            steps.append(n)
        return steps


@dataclasses.dataclass(frozen=True)
class DistillDataSection:
    """The data (default: the teacher run's own)."""

    data: str | None = None
    """Hub dataset id, save_to_disk folder, .jsonl, .txt, or 'embedded' (default: the teacher's)."""
    data_split: str | None = None
    """Split of a hub dataset or DatasetDict folder (default: the teacher's)."""
    cache_dir: str | None = None
    """Where tokenized datasets are cached (default: the teacher's, else <output_dir>/../.elf_cache)."""
    prefetch: int = 0
    """Batches read ahead in a background thread (0: none)."""


_OPTIMIZER = OptimizerSection(name="adamw", blr=2e-4, global_batch=64, warmup_steps=50, ema_decay=0.999,
                              max_steps=None)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Distil a trained ELF into few-step students (progressive distillation; docs/method.md#distillation).
    Each round's student is an ordinary run (OUTPUT_DIR/steps_<n>): python -m elf_eqx.sample samples it."""

    config: str | None = None
    """YAML file of flag values, applied before the other flags."""
    preset: str | None = None
    """Name of a YAML preset shipped in configs/ as distill_<name>.yaml (quickstart, kjv)."""
    teacher: Annotated[TeacherSection, Flat] = TeacherSection()
    rounds: Annotated[RoundsSection, Flat] = RoundsSection()
    data: Annotated[DistillDataSection, Flat] = DistillDataSection()
    optimizer: Annotated[OptimizerSection, Flat] = _OPTIMIZER
    mesh: Annotated[MeshSection, Flat] = MeshSection()
    run: Annotated[RunSection, Flat] = RunSection(output_dir="runs/distill", save_every=250)

    def __post_init__(self) -> None:
        if self.optimizer.max_steps is not None:
            raise ConfigError("--max-steps does not apply to distillation; each round runs --steps-per-round steps")
        if self.run.resume_step is not None:
            raise ConfigError("--resume-step does not apply to distillation; rerunning the command resumes its round")


def parse_distill_config(argv: Sequence[str] | None = None) -> DistillConfig:
    """``--preset``/``--config`` YAML first (``configs/distill_<name>.yaml``), then every other flag."""
    return parse_cli(DistillConfig, sys.argv[1:] if argv is None else argv, prefix=DISTILL_PRESET_PREFIX)
