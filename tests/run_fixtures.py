"""A training output directory written directly (no training): a random ELF-T on the offline
MiniLM encoder's latents and tokenizer, for the sampling and benchmark tests; and a saved step made
to look as an older elf_eqx left it (:func:`store_old_run_config`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.training.checkpoint_integrity import record_sizes
from elf_eqx.training.run_record import RunRecord
from elf_eqx.training.signature import model_signature
from elf_eqx.config import preset
from elf_eqx.data import DataSpec
from elf_eqx.encoders.load import load_tokenizer
from elf_eqx.model import ELF
from elf_eqx.training.optim import make_optimizer
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.step import TrainState

MINILM_DIM, MINILM_VOCAB = 384, 30522
# The flat run config (TrainConfig.to_dict()) stored by checkpoints written before the config had
# sections, with its default values: checkpoints on disk hold this form.
OLD_FLAT_RUN_CONFIG = {
    "config": None, "preset": None, "model": "ELF-B", "compute_dtype": "float32", "remat": False, "attn_dropout": 0.0,
    "proj_dropout": 0.0, "encoder": "google-t5/t5-small", "tokenizer": None, "latent_mean": 0.0, "latent_std": 0.2,
    "data": "embedded-language-flows/openwebtext-t5", "data_split": "train", "max_length": 1024,
    "max_input_length": 0, "pad_mode": "pad", "packing": False, "cache_dir": None, "time_schedule": "logit_normal",
    "p_mean": -1.5, "p_std": 0.8, "noise_scale": 2.0, "decoder_noise_scale": 5.0, "decoder_prob": 0.2, "t_eps": 0.05,
    "self_cond_prob": 0.5, "omega_min": 0.5, "omega_max": 5.0, "label_drop_prob": 0.0, "branch": "split",
    "optimizer": "muon", "blr": 0.001, "global_batch": 512, "grad_accum": 1, "b1": 0.9, "b2": 0.95,
    "weight_decay": 0.0, "clip_norm": 1.0, "warmup_steps": None, "warmup_epochs": 0.5, "lr_schedule": "constant",
    "epochs": 5.0, "max_steps": None, "ema_decay": 0.9999, "output_dir": "runs/elf", "seed": 0, "log_every": 10,
    "save_every": 1000, "keep_checkpoints": 3, "sample_every": 1000, "num_samples": 4, "sample_steps": 32,
    "sample_method": "sde", "sample_gamma": 1.5, "sample_omega": 3.0, "sample_cfg_weight": 1.0, "wandb": False,
    "tensorboard": False, "mesh_data": -1, "mesh_fsdp": 1, "mesh_tensor": 1, "shard_encoder": False,
    "coordinator_address": None, "num_processes": None, "process_id": None,
}


def write_run(out: Path, *, conditional: bool) -> Path:
    """A training output directory with one checkpoint of a random ELF-T on MiniLM latents."""
    tokenizer = load_tokenizer("offline-minilm")
    run = TrainConfig.from_dict({
        "model": "ELF-T", "encoder": "offline-minilm", "data": "embedded", "max_length": 16,
        "max_input_length": 8 if conditional else 0, "pad_mode": "eos" if conditional else "pad", "latent_std": 0.28,
        "sampling": {"steps": 4, "method": "ode" if conditional else "sde", "omega": 1.0 if conditional else 3.0,
                     "cfg_weight": 2.0 if conditional else 1.0},
    })
    d = run.data
    spec = DataSpec.from_tokenizer(tokenizer, d.max_length, max_input_length=d.max_input_length or None,
                                   pad_mode=d.pad_mode)
    elf = preset("ELF-T", encoder_dim=MINILM_DIM, vocab_size=MINILM_VOCAB)
    model = ELF(elf, key=jax.random.key(3))
    state = TrainState.create(model, make_optimizer(model, 1e-3, name="adamw"))
    record = RunRecord(elf=elf, encoder=d.encoder, tokenizer=d.encoder, data_spec=spec, run=run)
    with CheckpointManager(out, run_record=record) as manager:
        manager.save(7, state, {"data": {}}, key=jax.random.key(0))
    return out


def store_old_run_config(step_dir: Path, run_config: dict[str, Any] | None) -> None:
    """Make the saved step ``step_dir`` look as an older elf_eqx left it: ``run_config`` (a stored
    format of its time, as a dict) in its JSON record, with the signature computed from it then
    (the architecture still the saved weights'), and the file sizes recorded again."""
    meta = step_dir / "meta" / "metadata"
    record = json.loads(meta.read_text())
    signature = model_signature(run_config, None)
    signature["elf"] = record["signature"]["elf"]
    record.update(run_config=run_config, signature=signature)
    meta.write_text(json.dumps(record))
    record_sizes(step_dir)
