"""Analytic training FLOPs of the three families, for matching compute across them and for MFU
(docs/method.md#baselines). Matmul FLOPs only (2 per multiply-add); elementwise work, embedding
lookups and rematerialisation's recompute are not counted; attention's ``QKᵀ`` and ``PV`` are
counted in full, causal or not (what the XLA path computes). A backward pass costs twice its
forward pass. A family's whole training step: :func:`elf_eqx.families.train_step_flops`.
"""

from __future__ import annotations

from typing import Any

from elf_eqx.config import ELFConfig
from elf_eqx.objective import decode_rows


def block_stack_flops(config: ELFConfig, tokens: int) -> float:
    """Forward FLOPs of the transformer blocks on one sequence of ``tokens`` positions:
    ``depth · N · (2·(4H² + 3HF) + 4·N·H)`` (qkv and proj; SwiGLU's three matrices; QKᵀ and PV)."""
    n, h, f = tokens, config.hidden_size, config.mlp_hidden
    return float(config.depth * n * (2 * (4 * h * h + 3 * h * f) + 4 * n * h))


def elf_forward_flops(config: ELFConfig, length: int) -> dict[str, float]:
    """Forward FLOPs of ELF on one sample of ``length`` text positions (plus the prefix tokens):
    ``body`` (self-conditioning projection, bottleneck, blocks) and each head."""
    h, d, r = config.hidden_size, config.encoder_dim, config.bottleneck_dim
    inputs = length * (2 * 2 * d * d + 2 * d * r + 2 * r * h)
    return {"body": block_stack_flops(config, length + config.num_prefix_tokens) + inputs,
            "denoise_head": float(length * 2 * h * d),
            "decode_head": float(length * (2 * h * d + 2 * d * config.vocab_size))}


def token_forward_flops(config: ELFConfig, length: int) -> float:
    """Forward FLOPs of a baseline network on one sequence: blocks and the vocabulary head."""
    return block_stack_flops(config, length) + float(length * 2 * config.hidden_size * config.vocab_size)


def encoder_forward_flops(encoder_config: Any, length: int) -> float:
    """Forward FLOPs of the frozen text encoder on one sequence: a T5 encoder stack
    (``layers · L · (8·d·inner + (2 or 3)·2·d·d_ff + 4·L·inner)``) or a BERT one
    (``layers · L · (8·d² + 4·d·d_ff + 4·L·d)``), by the fields its config has."""
    c = encoder_config
    if hasattr(c, "d_kv"):
        inner = c.num_heads * c.d_kv
        ffn = (3 if c.is_gated_act else 2) * 2 * c.d_model * c.d_ff
        return float(c.num_layers * length * (8 * c.d_model * inner + ffn + 4 * length * inner))
    if hasattr(c, "intermediate_size"):
        d = c.hidden_size
        return float(c.num_hidden_layers * length * (8 * d * d + 4 * d * c.intermediate_size + 4 * length * d))
    raise TypeError(f"no FLOP count for an encoder configured by {type(c).__name__}")


def distill_step_flops(config: ELFConfig, batch: int, length: int, decode_share: float, cfg_weight: float = 1.0,
                       encoder_config: Any = None) -> float:
    """Analytic FLOPs of one distillation step: per distillation row, three teacher passes (its
    self-conditioning pass and two steps; twice with CFG) and the student's self-conditioning pass
    and forward-backward (4 passes); per decode row the teacher's decode pass and the student's
    forward-backward (4 passes with the vocabulary head); the frozen encoder's pass for every row."""
    fwd = elf_forward_flops(config, length)
    n_dec = decode_rows(decode_share, batch)
    denoise = fwd["body"] + fwd["denoise_head"]
    teacher_passes = 3 * (2 if cfg_weight != 1.0 else 1)
    flops = (batch - n_dec) * (teacher_passes + 4) * denoise + n_dec * 4 * (fwd["body"] + fwd["decode_head"])
    if encoder_config is not None:
        flops += batch * encoder_forward_flops(encoder_config, length)
    return flops
