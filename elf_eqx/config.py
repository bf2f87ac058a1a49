"""Architecture configuration of the ELF network and its named presets (docs/method.md#network)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp

from elf_eqx.errors import ConfigError
from elf_eqx.nn.attention import accelerator_platform, choose_attention
from elf_eqx.precision import PrecisionPolicy, policy_named

ComputeDtype = Literal["auto", "float32", "bfloat16"]
RematPolicy = Literal["none", "dots_saveable", "full"]
AttentionImpl = Literal["auto", "xla", "cudnn", "pallas"]
REMAT_POLICIES: tuple[str, ...] = ("none", "dots_saveable", "full")
RUNTIME_FIELDS: tuple[str, ...] = ("compute_dtype", "remat", "attention", "attn_dropout", "proj_dropout", "platform",
                                   "scan_unroll")
"""The :class:`ELFConfig` fields that change how the weights are run, not what they are."""


def backend_of(platform: str | None) -> str:
    """The JAX backend of a platform (``cuda``/``rocm`` → ``gpu``; ``tpu``, ``cpu`` as they are);
    ``None`` is this machine's default backend."""
    if platform is None:
        return jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


def resolve_compute_dtype(name: str, backend: str | None = None) -> jnp.dtype:
    """The activation dtype for ``name`` on ``backend`` (default: ``jax.default_backend()``).

    ``auto`` is bfloat16 on accelerators (GPU, TPU) and float32 on the CPU; the config keeps the
    word ``auto``, so a checkpoint made on one backend runs in the right dtype on another. The
    dtype names the precision policy (:func:`precision_policy`).
    """
    if name == "auto":
        backend = jax.default_backend() if backend is None else backend
        return jnp.dtype(jnp.float32 if backend == "cpu" else jnp.bfloat16)
    if name not in ("float32", "bfloat16"):
        raise ConfigError(f"compute_dtype must be auto, float32 or bfloat16, got {name!r}")
    return jnp.dtype(name)


def precision_policy(name: str, backend: str | None = None) -> PrecisionPolicy:
    """The :class:`~elf_eqx.precision.PrecisionPolicy` ``compute_dtype`` ``name`` names on
    ``backend``: ``float32``, or ``bfloat16`` (the accelerators' policy; ``auto`` on GPU/TPU)."""
    return policy_named(resolve_compute_dtype(name, backend).name)


def normalize_remat(value: str | bool | None) -> str:
    """A remat policy name from a name or the old boolean (``True`` → ``full``, ``False`` → ``none``)."""
    if value is True or value is False:
        return "full" if value else "none"
    if value not in REMAT_POLICIES:
        raise ConfigError(f"remat must be one of {list(REMAT_POLICIES)} (or a bool), got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class ELFConfig:
    """Shape and behaviour of one ELF network (denoiser and decoder share these weights).

    ``encoder_dim`` (D) and ``vocab_size`` (V) come from the frozen encoder and its tokenizer; the
    rest is the preset. The fields of :data:`RUNTIME_FIELDS` change how the weights are run, not
    what they are: a checkpoint may be resumed or sampled with other values of them, and the
    training config's model section takes its flags from their declarations here
    (:class:`elf_eqx.training.sections.ModelSection`).
    """

    depth: int
    hidden_size: int
    num_heads: int
    encoder_dim: int = 512
    vocab_size: int = 32100
    bottleneck_dim: int = 128
    mlp_ratio: float = 4.0
    num_time_tokens: int = 4
    num_sc_cfg_tokens: int = 4
    num_mode_tokens: int = 4
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    attn_dropout: float = 0.0
    """Dropout on attention probabilities, in blocks depth//4 ≤ i < 3·depth//4 only."""
    proj_dropout: float = 0.0
    """Dropout on attention and MLP outputs, same blocks as attn_dropout."""
    compute_dtype: ComputeDtype = "auto"
    """The precision policy (docs/method.md#precision): bfloat16 runs the matmuls of the network,
    the frozen encoder and Muon's Newton-Schulz in bf16 over float32 weights, with float32 norms,
    softmax, bias adds, reductions, heads' outputs, loss, optimizer state, EMA and sampler state;
    float32 runs everything in float32; auto: bfloat16 on GPU/TPU, float32 on CPU."""
    remat: RematPolicy | bool = "none"  # a bool (old configs) is normalised to a policy name
    """Per-block rematerialisation policy (jax.checkpoint_policies names): none keeps every
    activation, dots_saveable keeps matmul outputs, full keeps only each block's input (true =
    full, false = none). A training config's default is the preset's (PRESET_REMAT)."""
    attention: AttentionImpl = "auto"
    """Attention core: auto = Pallas flash attention on TPUs, cuDNN flash attention on NVIDIA GPUs
    with bf16, XLA elsewhere; pallas/cudnn insist on their kernel, xla is the explicit einsum math.
    Live attention-probability dropout always runs the explicit math."""
    platform: str | None = None
    """The platform the network is compiled for (cpu, cuda, rocm, tpu; None: this machine's):
    auto settings resolve for it, so a dry run (--dry-run --target) compiles for its target."""
    scan_unroll: bool = False
    """Run the blocks as an unrolled loop instead of lax.scan: XLA can then reuse buffers across
    layers (less memory on TPUs, see benchmarks/RESULTS.md) and count every layer's cost, at the
    price of a longer first compile."""

    def __post_init__(self) -> None:
        for name in ("depth", "hidden_size", "num_heads", "encoder_dim", "vocab_size", "bottleneck_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ELFConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"ELFConfig.hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.head_dim % 2:
            raise ConfigError(
                f"ELFConfig head dimension {self.head_dim} (hidden_size {self.hidden_size} / num_heads "
                f"{self.num_heads}) must be even: RoPE rotates interleaved pairs"
            )
        self.check(self.__dict__, lambda name: f"ELFConfig.{name}")
        object.__setattr__(self, "remat", normalize_remat(self.remat))  # old configs stored a bool

    @staticmethod
    def check(values: Mapping[str, Any], flag: Callable[[str], str]) -> None:
        """Raise :class:`~elf_eqx.errors.ConfigError` naming (``flag(name)``) the first bad run-time
        setting of ``values`` (dropout rates, compute dtype, remat, attention); missing names and a
        remat of ``None`` (a training config's "the preset's") are not checked."""
        for name in ("attn_dropout", "proj_dropout"):
            if name in values and not 0.0 <= values[name] < 1.0:
                raise ConfigError(f"{flag(name)} must be in [0, 1), got {values[name]}")
        for name, kind in (("compute_dtype", ComputeDtype), ("attention", AttentionImpl)):
            if name in values and values[name] not in typing.get_args(kind):
                raise ConfigError(f"{flag(name)} must be one of {list(typing.get_args(kind))}, got {values[name]!r}")
        remat = values.get("remat")
        if remat is not None and not isinstance(remat, bool) and remat not in REMAT_POLICIES:
            raise ConfigError(f"{flag('remat')} must be one of {list(REMAT_POLICIES)} (or a bool), got {remat!r}")

    @property
    def dtype(self) -> jnp.dtype:
        """The resolved activation dtype on the current backend (see :func:`resolve_compute_dtype`)."""
        return resolve_compute_dtype(self.compute_dtype, backend_of(self.platform))

    @property
    def precision(self) -> PrecisionPolicy:
        """The resolved precision policy on the network's platform (see :func:`precision_policy`)."""
        return precision_policy(self.compute_dtype, backend_of(self.platform))

    def attention_kernel(self, *, training: bool) -> str:
        """The attention core the blocks run (``xla``, ``cudnn``, ``pallas``) on the network's
        platform: ``attention`` resolved by :func:`elf_eqx.nn.attention.choose_attention`, the rule
        every attention layer applies when it is called. Attention dropout, which no fused kernel
        applies, acts in training only, so a training step and a sampler can run different cores."""
        return choose_attention(self.attention, self.platform or accelerator_platform(), self.dtype, self.head_dim,
                                training and self.attn_dropout > 0)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU width: ``int(int(mlp_ratio·H)·2/3)`` (2048 for H=768)."""
        return int(int(self.hidden_size * self.mlp_ratio) * 2 / 3)

    @property
    def num_prefix_tokens(self) -> int:
        """Unrotated tokens in front of the text: time, SC-CFG and mode tokens."""
        return self.num_time_tokens + self.num_sc_cfg_tokens + self.num_mode_tokens

    def dropout_layers(self) -> tuple[bool, ...]:
        """Which blocks apply dropout: ``depth//4 <= i < 3·depth//4``."""
        lo, hi = self.depth // 4, 3 * self.depth // 4
        return tuple(lo <= i < hi for i in range(self.depth))


# depth, hidden size, heads. The three published sizes plus small ones for CPU work and tests.
PRESETS: dict[str, dict[str, int]] = {
    "ELF-B": dict(depth=12, hidden_size=768, num_heads=12),
    "ELF-M": dict(depth=24, hidden_size=1056, num_heads=16),
    "ELF-L": dict(depth=32, hidden_size=1280, num_heads=16),
    "ELF-S": dict(depth=6, hidden_size=384, num_heads=6),
    "ELF-XS": dict(depth=4, hidden_size=256, num_heads=4),
    "ELF-T": dict(depth=2, hidden_size=64, num_heads=4),
}

# Default remat policy of each network preset (any preset not listed: "none"), for one 80 GB
# GPU at L = 1024 in bf16 with cuDNN attention, under JAX's default 75% share of its memory. From
# deviceless H100 compiles (benchmarks/RESULTS.md): ELF-B keeps every activation (batch 32:
# 21.1 GiB); ELF-M keeps matmul outputs (batch 96: 56.0 GiB); ELF-L keeps each block's input
# (batch 8: 14.5 GiB). The OWT run presets (configs/) set their own for TPU v5p-64.
PRESET_REMAT: dict[str, str] = {"ELF-M": "dots_saveable", "ELF-L": "full"}


def preset(name: str, **overrides) -> ELFConfig:
    """The :class:`ELFConfig` of a named preset (``ELF-B``, ``ELF-M``, ``ELF-L``, ``ELF-S``,
    ``ELF-XS``, ``ELF-T``), with any field overridden by keyword."""
    if name not in PRESETS:
        raise ConfigError(f"unknown ELF preset {name!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ELFConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown ELFConfig field(s) {unknown}; known fields: {sorted(fields)}")
    defaults = {**PRESETS[name], "remat": PRESET_REMAT.get(name, "none")}
    return ELFConfig(**{**defaults, **overrides})
