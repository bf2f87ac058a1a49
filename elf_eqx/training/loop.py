"""The training loop (``python -m elf_eqx.train``): the :class:`~elf_eqx.training.trainer.Trainer`'s
steps driven through its hooks (metrics, checkpoints, sample files), stopping cleanly on a signal."""

from __future__ import annotations

from pathlib import Path

import jax

from elf_eqx.errors import NonFiniteLoss  # noqa: F401  (its home was here)
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.hooks import drive
from elf_eqx.training.stop_signal import StopRequest
from elf_eqx.training.trainer import Trainer


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) the training described by ``cfg``; returns the output directory."""
    trainer = Trainer.build(cfg)
    is_main = jax.process_index() == 0
    if is_main:
        print(f"resumed from {trainer.out} at step {trainer.start}" if trainer.start is not None else trainer.describe())
    try:
        with StopRequest() as stop:
            last = drive(trainer.steps(stop), trainer.hooks())
    finally:
        trainer.close()
    if is_main and last is not None and last.stopping is not None:
        print(f"{last.stopping}: saved step {last.step} to {trainer.out}; exiting")
    return trainer.out
