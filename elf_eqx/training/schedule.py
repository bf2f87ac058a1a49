"""Learning-rate schedule of a run: linear warm-up from 0, then constant or cosine."""

from __future__ import annotations

import optax

from elf_eqx.errors import ConfigError


def make_lr_schedule(
    peak_lr: float, total_steps: int, warmup_steps: int, kind: str = "constant", final_ratio: float = 0.0
) -> optax.Schedule:
    """``lr(step)``: 0 → ``peak_lr`` linearly over ``warmup_steps``, then constant, or cosine
    down to ``final_ratio·peak_lr`` at ``total_steps``."""
    if warmup_steps < 0 or total_steps <= 0:
        raise ConfigError(f"bad schedule lengths: warmup_steps={warmup_steps}, total_steps={total_steps}")
    warmup = optax.linear_schedule(0.0, peak_lr, max(warmup_steps, 1))
    if kind == "constant":
        after = optax.constant_schedule(peak_lr)
    elif kind == "cosine":
        after = optax.cosine_decay_schedule(peak_lr, max(total_steps - warmup_steps, 1), alpha=final_ratio)
    else:
        raise ConfigError(f"unknown lr schedule {kind!r} (constant, cosine)")
    if warmup_steps == 0:
        return after
    return optax.join_schedules([warmup, after], [warmup_steps])
