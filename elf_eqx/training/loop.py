"""The training loop (``python -m elf_eqx.train``): the :class:`~elf_eqx.training.trainer.Trainer`'s
steps driven through its hooks (metrics, checkpoints, sample files), stopping cleanly on a signal.
:func:`run_to_end` is the one loop: training runs it once, a distillation once per round."""

from __future__ import annotations

from pathlib import Path

import jax

from elf_eqx.errors import NonFiniteLoss  # noqa: F401  (its home was here)
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.hooks import drive
from elf_eqx.training.stop_signal import StopRequest
from elf_eqx.training.trainer import Trainer


def run_to_end(trainer: Trainer, what: str = "") -> bool:
    """Drive ``trainer``'s steps through its hooks until its last step or a stop signal
    (SIGTERM/SIGINT: the step is finished and saved), then close it. Returns whether a signal
    stopped it; process 0 then says so, naming the step saved (``what`` is added to the step, e.g.
    ``" of round 2"``) and the output directory."""
    try:
        with StopRequest() as stop:
            last = drive(trainer.steps(stop), trainer.hooks())
    finally:
        trainer.close()
    stopped = last is not None and last.stopping is not None
    if stopped and jax.process_index() == 0:
        print(f"{last.stopping}: saved step {last.step}{what} to {trainer.out}; exiting")
    return stopped


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) the training described by ``cfg``; returns the output directory."""
    trainer = Trainer.build(cfg)
    if jax.process_index() == 0:
        print(f"resumed from {trainer.out} at step {trainer.start}" if trainer.start is not None else trainer.describe())
        if trainer.start is None and cfg.init.init_from is not None:
            print(f"initialised from {cfg.init.init_from} ({cfg.init.init_weights} weights)")
    run_to_end(trainer)
    return trainer.out
