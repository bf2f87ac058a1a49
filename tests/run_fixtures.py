"""A training output directory written directly (no training): a random ELF-T on the offline
MiniLM encoder's latents and tokenizer, for the sampling and benchmark tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.config import preset
from elf_eqx.data import DataSpec
from elf_eqx.encoders.load import load_tokenizer
from elf_eqx.model import ELF
from elf_eqx.training.optim import make_optimizer
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.step import TrainState

MINILM_DIM, MINILM_VOCAB = 384, 30522


def write_run(out: Path, *, conditional: bool) -> Path:
    """A training output directory with one checkpoint of a random ELF-T on MiniLM latents."""
    tokenizer = load_tokenizer("offline-minilm")
    run = TrainConfig(model="ELF-T", encoder="offline-minilm", data="embedded", max_length=16,
                      max_input_length=8 if conditional else 0, pad_mode="eos" if conditional else "pad",
                      latent_std=0.28, sample_steps=4, sample_method="ode" if conditional else "sde",
                      sample_omega=1.0 if conditional else 3.0, sample_cfg_weight=2.0 if conditional else 1.0)
    spec = DataSpec.from_tokenizer(tokenizer, run.max_length, max_input_length=run.max_input_length or None,
                                   pad_mode=run.pad_mode)
    elf = preset("ELF-T", encoder_dim=MINILM_DIM, vocab_size=MINILM_VOCAB)
    model = ELF(elf, key=jax.random.key(3))
    state = TrainState.create(model, make_optimizer(model, 1e-3, name="adamw"))
    run_config = {"elf": dataclasses.asdict(elf), "encoder": run.encoder, "tokenizer": run.encoder,
                  "data_spec": spec.to_dict(), "run": run.to_dict()}
    with CheckpointManager(out, run_config=run_config) as manager:
        manager.save(7, state, {"data": {}}, key=jax.random.key(0))
    return out
