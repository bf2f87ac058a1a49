"""Settings of ``python -m elf_eqx.sample``: one flat dataclass (every field a ``--flag``) and the
sampling presets shipped as ``configs/sample_<name>.yaml``.

Sampler fields left unset (``None``) take the model source's own defaults: the ``sample_*``
settings of a training run, or the released settings of a released checkpoint (ELF_SPEC.md §4).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import tyro

from elf_eqx.cli.args import SAMPLE_PRESET_PREFIX, parse_cli


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Sample text from a trained or released ELF. Unset sampler flags take the source's defaults."""

    source: tyro.conf.Positional[str] = ""
    """What to sample from: a training output directory, its checkpoints/ folder or one step folder,
    a released checkpoint file (checkpoint_<step>) or orbax folder, or a hub id org/repo[/subpath]
    (e.g. embedded-language-flows/ELF-B-owt)."""
    config: str | None = None
    """YAML file of field values, applied before the other flags."""
    preset: str | None = None
    """Sampling preset shipped in configs/ as sample_<name>.yaml: owt_sde32, owt_sde64, conditional_ode64."""

    # -- what to load ----------------------------------------------------------------------
    weights: Literal["ema", "raw"] = "ema"
    """EMA weights (what the reference samples with) or the raw trained weights."""
    step: int | None = None
    """Checkpoint step of a training directory (default: the latest)."""
    task: str | None = None
    """Released task when the source's name does not say: owt, de-en or xsum."""
    encoder: str | None = None
    """Override the frozen encoder (conditional sampling only): hub id, folder, .pkl."""
    tokenizer: str | None = None
    """Override the tokenizer: hub id or folder."""

    # -- the sampler -----------------------------------------------------------------------
    method: Literal["ode", "sde"] | None = None
    """Euler ODE or churned SDE (the last interval is always ODE)."""
    steps: int | None = None
    """Number of sampling steps."""
    gamma: float | None = None
    """SDE churn γ."""
    omega: float | None = None
    """SC-CFG scale ω fed to the network."""
    cfg_weight: float | None = None
    """Classifier-free guidance weight for conditional tasks (1 = off)."""
    time_grid: Literal["uniform", "logit_normal"] | None = None
    """Time grid: uniform, or sorted logit-normal draws (a fresh grid per batch)."""
    self_condition: bool = True
    """Feed each step's x̂ to the next (as trained); --no-self-condition feeds zeros."""
    compute_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Activation dtype of the network's matmuls (weights stay float32); auto: bf16 on GPU/TPU, float32 on CPU."""

    # -- how many, how long ----------------------------------------------------------------
    seed: int = 0
    """Seeds every random draw; the same seed and settings give the same samples."""
    batch_size: int = 8
    """Samples per compiled sampler call (over all devices)."""
    num_samples: int | None = None
    """How many samples (default 8 unconditional; conditional: one per input)."""
    length: int | None = None
    """Sequence length L of unconditional samples (default: the model's training length)."""

    # -- conditional input -----------------------------------------------------------------
    input: str | None = None
    """JSONL file whose records' "input" field is the condition ("output", when present, is kept
    as the reference for evaluation)."""
    prompt: tuple[str, ...] = ()
    """Condition text(s) given on the command line (conditional models)."""

    # -- output ----------------------------------------------------------------------------
    output: str | None = None
    """JSONL file to write (default: samples/<source>-<method><steps>-w<omega>-seed<seed>.jsonl)."""
    overwrite: bool = False
    """Replace an existing output file (otherwise it is an error)."""
    quiet: bool = False
    """Do not print the samples."""

    # -- devices ---------------------------------------------------------------------------
    mesh_data: int = -1
    """Devices on the data axis of the mesh (-1: all remaining)."""
    mesh_fsdp: int = 1
    """Devices on the fsdp axis (parameters sharded over it)."""
    mesh_tensor: int = 1
    """Devices on the tensor axis."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_samples", "length", "steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.gamma is not None and self.gamma < 0:
            raise ValueError(f"--gamma must be non-negative, got {self.gamma}")
        if self.input and self.prompt:
            raise ValueError("give conditions with --input or --prompt, not both")


def parse_sample_config(argv: Sequence[str] | None = None) -> SampleConfig:
    """``--preset``/``--config`` YAML first, then every other flag (see :mod:`elf_eqx.cli.args`)."""
    import sys

    return parse_cli(SampleConfig, sys.argv[1:] if argv is None else argv, prefix=SAMPLE_PRESET_PREFIX)
