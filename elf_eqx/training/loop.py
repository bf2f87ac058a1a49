"""The training loop (``python -m elf_eqx.train``): the :class:`~elf_eqx.training.trainer.Trainer`'s
steps driven through its hooks (metrics, checkpoints, sample files), stopping cleanly on a signal.
:func:`run_to_end` is the one loop: training runs it once, a distillation once per round."""

from __future__ import annotations

import sys
from typing import Any

import jax

from elf_eqx.io import storage
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.hooks import drive
from elf_eqx.training.stop_signal import StopRequest
from elf_eqx.training.trainer import Trainer


def run_to_end(trainer: Trainer, what: str = "") -> bool:
    """Drive ``trainer``'s steps through its hooks until its last step or a stop request
    (SIGTERM/SIGINT, on any process of the run: the step is finished and saved by all of them, see
    :mod:`~elf_eqx.training.stop_signal`), then close it. Returns whether a stop request ended it;
    process 0 then says so, naming the step saved (``what`` is added to the step, e.g. ``" of round
    2"``) and the output directory, and each other process says on stderr where it stopped."""
    try:
        with StopRequest() as stop:
            last = drive(trainer.steps(stop), trainer.hooks())
    finally:
        trainer.close()
    stopped = last is not None and last.stopping is not None
    if stopped and jax.process_index() == 0:
        print(f"{last.stopping}: saved step {last.step}{what} to {trainer.out}; exiting", flush=True)
    elif stopped:
        print(f"process {jax.process_index()}: stopped after step {last.step}{what}, saved with the others",
              file=sys.stderr, flush=True)
    return stopped


def check_storage(cfg: TrainConfig) -> None:
    """Every bucket the run reads or writes answers and exists (else one line naming the flag,
    before anything is written)."""
    for value, flag in ((cfg.run.output_dir, "--output-dir"), (cfg.data.cache_dir, "--cache-dir"),
                        (cfg.data.source, "--data")):
        if value is not None and storage.is_remote(value):
            storage.check_bucket(storage.user_path(value, flag), flag)


def train(cfg: TrainConfig) -> Any:
    """Run (or resume) the training described by ``cfg``; returns the output directory (a local
    path or a bucket path)."""
    check_storage(cfg)
    trainer = Trainer.build(cfg)
    if jax.process_index() == 0:
        print(f"resumed from {trainer.out} at step {trainer.start}" if trainer.start is not None else trainer.describe(),
              flush=True)
        if trainer.start is None and cfg.init.init_from is not None:
            print(f"initialised from {cfg.init.init_from} ({cfg.init.init_weights} weights)", flush=True)
    elif trainer.start is not None:
        print(f"process {jax.process_index()}: resumed at step {trainer.start}", file=sys.stderr, flush=True)
    run_to_end(trainer)
    return trainer.out
