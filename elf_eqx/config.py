"""Architecture configuration of the ELF network and its named presets (ELF_SPEC.md §2)."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class ELFConfig:
    """Shape and behaviour of one ELF network (denoiser and decoder share these weights).

    ``encoder_dim`` (D) and ``vocab_size`` (V) come from the frozen encoder and its tokenizer;
    the rest is the preset. ``compute_dtype`` is the activation dtype of the matmuls
    (parameters stay float32; norms and softmax always run in float32).
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
    proj_dropout: float = 0.0
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    remat: bool = False

    def __post_init__(self) -> None:
        for name in ("depth", "hidden_size", "num_heads", "encoder_dim", "vocab_size", "bottleneck_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ELFConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ELFConfig.hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"ELFConfig head dimension {self.head_dim} (hidden_size {self.hidden_size} / num_heads "
                f"{self.num_heads}) must be even: RoPE rotates interleaved pairs"
            )
        for name in ("attn_dropout", "proj_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"ELFConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"ELFConfig.compute_dtype must be float32 or bfloat16, got {self.compute_dtype!r}")

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


def preset(name: str, **overrides) -> ELFConfig:
    """The :class:`ELFConfig` of a named preset (``ELF-B``, ``ELF-M``, ``ELF-L``, ``ELF-S``,
    ``ELF-XS``, ``ELF-T``), with any field overridden by keyword."""
    if name not in PRESETS:
        raise ValueError(f"unknown ELF preset {name!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ELFConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown ELFConfig field(s) {unknown}; known fields: {sorted(fields)}")
    return ELFConfig(**{**PRESETS[name], **overrides})
