"""Everything a training run builds before its first step: tokenizer, frozen encoder, data,
and the sample writer. Kept apart from the loop in :mod:`elf_eqx.train` so each reads alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import equinox as eqx
import jax

from elf_eqx.config import ELFConfig
from elf_eqx.data import DataSpec, Loader, PreparedData, collate, prepare_data
from elf_eqx.encoders.load import check_compatible, load_text_encoder, load_tokenizer
from elf_eqx.latent_encoder import LatentEncoder, TokenBatch
from elf_eqx.mesh import shard_batch
from elf_eqx.model import ELF
from elf_eqx.run_config import TrainConfig
from elf_eqx.run_log import write_text_atomic
from elf_eqx.sampler import Condition, Sampler

@dataclasses.dataclass
class TrainingRun:
    """The built pieces of a run (see :func:`build_run`)."""

    tokenizer: Any
    spec: DataSpec
    data: PreparedData
    loader: Loader
    latent_encoder: LatentEncoder
    elf_config: ELFConfig
    sampler: Sampler
    num_samples: int
    sample_conditions: TokenBatch | None

    @property
    def steps_per_epoch(self) -> int:
        return self.loader.steps_per_epoch

    def next_batch(self, sharding: Any = None) -> TokenBatch:
        """The next batch as device arrays: this process's rows, split over ``sharding`` when given."""
        batch = TokenBatch.from_numpy(next(self.loader))
        return batch if sharding is None else shard_batch(batch, sharding)

    def signature_config(self, cfg: TrainConfig) -> dict[str, Any]:
        """What must match for a checkpoint directory to be resumed: the architecture, the
        encoder and tokenizer, and the sequence layout."""
        return {
            "elf": dataclasses.asdict(self.elf_config),
            "encoder": cfg.encoder,
            "tokenizer": cfg.tokenizer or cfg.encoder,
            "data_spec": self.spec.to_dict(),
            "run": cfg.to_dict(),
        }

    def sample_text(self, model: ELF, key: jax.Array, conditions: TokenBatch | None = None) -> list[str]:
        """Decode samples from ``model`` (usually the EMA); conditional runs condition on ``conditions``."""
        if conditions is not None:
            latents = self.latent_encoder.encode_conditions(conditions)
            cond = Condition(latents, conditions.cond_mask)
        else:
            cond = Condition.none(self.num_samples, self.spec.max_length, self.elf_config.encoder_dim)
        tokens = _sample_tokens(self.sampler, model, key, cond, self.spec.eos_id, self.spec.pad_id)
        tokens = jax.device_get(tokens)
        target = ~jax.device_get(cond.mask)
        return [self.tokenizer.decode(row[keep], skip_special_tokens=True) for row, keep in zip(tokens, target)]

    def write_samples(self, model: ELF, step: int, out: Path, cfg: TrainConfig) -> Path:
        """Write a few EMA samples to ``<out>/samples/step_<step>.txt`` (atomically); conditional
        runs condition on the first rows of the dataset."""
        texts = self.sample_text(model, jax.random.key(cfg.seed + step), self.sample_conditions)
        lines = [f"# step {step}, {cfg.sample_steps} {cfg.sample_method} steps, omega {cfg.sample_omega}"]
        lines += [f"[{i}] {text}" for i, text in enumerate(texts)]
        path = Path(out) / "samples" / f"step_{step:07d}.txt"
        write_text_atomic(path, "\n\n".join(lines) + "\n")
        return path


@eqx.filter_jit
def _sample_tokens(sampler: Sampler, model: ELF, key: jax.Array, cond: Condition, eos_id: int, pad_id: int):
    return sampler(model, key, condition=cond, eos_id=eos_id, pad_id=pad_id).tokens


def build_run(cfg: TrainConfig) -> TrainingRun:
    """Load the tokenizer and frozen encoder, check they fit each other and the run, prepare the
    (cached) data and its loader for this process."""
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.encoder)
    encoder = load_text_encoder(cfg.encoder)
    check_compatible(tokenizer, encoder, max_length=cfg.max_length)
    spec = DataSpec.from_tokenizer(
        tokenizer, cfg.max_length, max_input_length=cfg.max_input_length or None,
        pad_mode=cfg.pad_mode, packing=cfg.packing,
    )
    data = prepare_data(cfg.data, tokenizer, spec, split=cfg.data_split, cache_dir=cfg.cache_dir)
    loader = Loader(data.rows, spec, cfg.global_batch, seed=cfg.seed,
                    process_index=jax.process_index(), process_count=jax.process_count())
    latent_encoder = LatentEncoder(encoder, cfg.latent_mean, cfg.latent_std, cfg.label_drop_prob)
    elf_config = cfg.elf_config(encoder.dim, len(tokenizer))
    sampler = Sampler(num_steps=cfg.sample_steps, method=cfg.sample_method, gamma=cfg.sample_gamma,
                      omega=cfg.sample_omega, cfg_weight=cfg.sample_cfg_weight, noise_scale=cfg.noise_scale,
                      t_eps=cfg.t_eps, p_mean=cfg.p_mean, p_std=cfg.p_std)
    conditions = None
    if data.conditional:
        first = data.rows.select(range(min(cfg.num_samples, len(data.rows))))
        conditions = TokenBatch.from_numpy(collate(first["input_ids"], first["cond_length"], spec))
    return TrainingRun(tokenizer, spec, data, loader, latent_encoder, elf_config, sampler, cfg.num_samples, conditions)
