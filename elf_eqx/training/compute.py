"""The training compute of a run: optimizer steps, tokens seen and analytic FLOPs
(:mod:`elf_eqx.flops`), so runs of different families can be compared at equal compute."""

from __future__ import annotations

from typing import Any

from elf_eqx.config import ELFConfig
from elf_eqx.training.config import TrainConfig


def training_compute(
    cfg: TrainConfig, config: ELFConfig, steps: int, encoder_config: Any = None
) -> dict[str, int | float]:
    """``{"train_steps", "tokens", "train_flops"}`` after ``steps`` optimizer steps of the run ``cfg``
    with network ``config``; ``encoder_config`` (ELF's frozen encoder) adds the encoder's passes."""
    batch, length = cfg.optimizer.global_batch, cfg.data.max_length
    family = cfg.objective.model_family
    per_step = family.train_step_flops(config, batch, length, objective=cfg.objective.loss(config.vocab_size),
                                       encoder_config=encoder_config)
    return {"train_steps": steps, "tokens": float(steps * batch * length), "train_flops": steps * per_step}
