"""Settings of ``python -m elf_eqx.sample``: sections of flat flags (one ``--help`` group each) and
the sampling presets shipped as ``configs/sample_<name>.yaml`` (keys: the sampler flags).

The sampler flags are every family's sampler settings, each optional
(:data:`elf_eqx.sampling.settings.SamplerOverrides`): those given that apply to the source's
family change its own settings (a training run's periodic-sample settings, or a release's
released ones; docs/method.md#sampling).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Annotated, Literal

import tyro

from elf_eqx.cli.args import SAMPLE_PRESET_PREFIX, DryRunFlags, MeshFlags, ProcessFlags, parse_cli
from elf_eqx.config import ComputeDtype
from elf_eqx.errors import ConfigError
from elf_eqx.observe.profiler import SampleProfileFlags
from elf_eqx.release.tasks import Task
from elf_eqx.sampling.settings import SamplerOverrides
from elf_eqx.sampling.settings_base import SamplerSettingsBase

Flat = tyro.conf.OmitArgPrefixes


@dataclasses.dataclass(frozen=True)
class LoadSection:
    """What to load with the weights."""

    weights: Literal["ema", "raw"] = "ema"
    """EMA weights (what the reference samples with) or the raw trained weights."""
    step: int | None = None
    """Checkpoint step of a training directory (default: the latest)."""
    revision: str | None = None
    """Revision of a hub source (an exported model or a release): branch, tag or commit (default: main)."""
    task: Task | None = None
    """Released task when the source's name does not say: owt, de-en or xsum."""
    encoder: str | None = None
    """Override the frozen encoder (conditional sampling only): hub id, folder, .pkl."""
    tokenizer: str | None = None
    """Override the tokenizer: hub id or folder."""
    compute_dtype: ComputeDtype = "auto"
    """Activation dtype of the network's matmuls (weights stay float32)."""


@dataclasses.dataclass(frozen=True)
class DrawSection:
    """How many samples, how long, which seed."""

    seed: int = 0
    """Seeds every random draw; the same seed and settings give the same samples."""
    batch_size: int = 8
    """Samples per compiled sampler call (over all devices)."""
    num_samples: int | None = None
    """How many samples (default 8 unconditional; conditional: one per input)."""
    length: int | None = None
    """Sequence length L of unconditional samples (default: the model's training length)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_samples", "length"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")


@dataclasses.dataclass(frozen=True)
class InputSection:
    """Conditions (conditional models)."""

    input: str | None = None
    """JSONL file whose records' "input" field is the condition ("output", when present, is kept
    as the reference for evaluation)."""
    prompt: tuple[str, ...] = ()
    """Condition text(s) given on the command line (conditional models)."""

    def __post_init__(self) -> None:
        if self.input and self.prompt:
            raise ConfigError("give conditions with --input or --prompt, not both")


@dataclasses.dataclass(frozen=True)
class OutputSection:
    """Where the samples go."""

    output: str | None = None
    """JSONL file to write (default: samples/<source>-<method><steps>-w<omega>-seed<seed>.jsonl)."""
    overwrite: bool = False
    """Replace an existing output file (otherwise it is an error)."""
    quiet: bool = False
    """Do not print the samples."""


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Sample text from a trained or released ELF. Unset sampler flags take the source's defaults."""

    source: tyro.conf.Positional[str] = ""
    """What to sample from: a training output directory, its checkpoints/ folder or one step folder,
    an exported model's folder (python -m elf_eqx.export), a released checkpoint file
    (checkpoint_<step>) or orbax folder, or a hub id org/repo[/subpath] of an exported model or a
    release (e.g. embedded-language-flows/ELF-B-owt)."""
    config: str | None = None
    """YAML file of flag values, applied before the other flags."""
    preset: str | None = None
    """Sampling preset shipped in configs/ as sample_<name>.yaml: owt_sde32, owt_sde64, conditional_ode64."""
    load: Annotated[LoadSection, Flat] = LoadSection()
    sampler: Annotated[SamplerOverrides, Flat] = SamplerOverrides()
    draw: Annotated[DrawSection, Flat] = DrawSection()
    inputs: Annotated[InputSection, Flat] = InputSection()
    out: Annotated[OutputSection, Flat] = OutputSection()
    mesh: Annotated[MeshFlags, Flat] = MeshFlags()
    processes: Annotated[ProcessFlags, Flat] = ProcessFlags()
    plan: Annotated[DryRunFlags, Flat] = DryRunFlags()
    profile: Annotated[SampleProfileFlags, Flat] = SampleProfileFlags()

    def settings(self, own: SamplerSettingsBase) -> SamplerSettingsBase:
        """The source's own settings ``own`` (its family's) with the sampler flags given that apply
        to that family on top (a bad value fails when the flags are parsed, naming the flag)."""
        return self.sampler.applied_to(own)


def parse_sample_config(argv: Sequence[str] | None = None) -> SampleConfig:
    """``--preset``/``--config`` YAML first, then every other flag (see :mod:`elf_eqx.cli.args`)."""
    return parse_cli(SampleConfig, sys.argv[1:] if argv is None else argv, prefix=SAMPLE_PRESET_PREFIX)
