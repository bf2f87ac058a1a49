"""Everything a training run builds before its first step: tokenizer, frozen encoder (ELF),
data, and the sample writer. Kept apart from the loop in :mod:`elf_eqx.training.loop` so each reads alone."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from elf_eqx.config import ELFConfig
from elf_eqx.sampling.conditions import encode_conditions
from elf_eqx.data import DataSpec, Loader, PreparedData
from elf_eqx.data.pipeline import run_data
from elf_eqx.data.prefetch import Prefetcher, prefetch
from elf_eqx.encoders.load import check_compatible, load_text_encoder, load_tokenizer
from elf_eqx.encoders.latent_encoder import LatentEncoder, TokenBatch
from elf_eqx.families import Family, ModelSampler
from elf_eqx.parallel.mesh import gather
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.run_record import DistillationRecord, RunRecord
from elf_eqx.io import storage
from elf_eqx.io.atomic import write_text_atomic
from elf_eqx.sampling.compiled import make_sample_fn
from elf_eqx.sampling.records import decode_outputs
from elf_eqx.baselines.token_sampling import TokenCondition
from elf_eqx.sampler import Condition


@dataclasses.dataclass
class TrainingRun:
    """The built pieces of a run (see :func:`build_run`)."""

    tokenizer: Any
    spec: DataSpec
    data: PreparedData
    loader: Loader | Prefetcher
    family: Family
    """ELF, MDLM or AR (see :mod:`elf_eqx.families`)."""
    latent_encoder: LatentEncoder | None
    """The frozen encoder (ELF); ``None`` for the baselines, which read tokens."""
    elf_config: ELFConfig
    """The network's architecture (the baselines use its blocks' fields and ``vocab_size``)."""
    sampler: ModelSampler
    sample_condition: Condition | TokenCondition
    """What samples are conditioned on: the first rows' encoded conditions, or none (unconditional)."""
    _sample_fn: Callable | None = None

    def close(self) -> None:
        """Stop a prefetching loader's thread (a plain loader holds nothing); a process reading
        prepared data says how many of its rows it read (its share of the batches it ran)."""
        if isinstance(self.loader, Prefetcher):
            self.loader.close()
        read = getattr(self.data.rows, "rows_read", None)
        if read is not None:
            print(f"process {jax.process_index()}: read {read:,} of the {len(self.data.rows):,} rows of "
                  f"{self.data.rows.path}", file=sys.stderr, flush=True)

    @property
    def steps_per_epoch(self) -> int:
        return self.loader.steps_per_epoch

    def next_batch(self, sharding: Any = None) -> TokenBatch:
        """The next batch as device arrays: this process's rows, split over ``sharding`` when given."""
        return TokenBatch.from_numpy(next(self.loader), sharding)

    def run_record(self, cfg: TrainConfig, distillation: DistillationRecord | None = None) -> RunRecord:
        """What the run's checkpoints record of it (:class:`RunRecord`): the family, the architecture,
        the encoder and tokenizer, the sequence layout (together what must match to resume), the
        resolved config, and a distilled student's ``distillation`` entry."""
        return RunRecord(family=self.family.name, elf=self.elf_config, encoder=cfg.data.encoder,
                         tokenizer=cfg.data.tokenizer_source, data_spec=self.spec, run=cfg,
                         distillation=distillation)

    def sample_text(self, model: Any, key: jax.Array, mesh: Mesh | None = None) -> list[str]:
        """Decode samples from ``model`` (usually the EMA), conditioned on :attr:`sample_condition`.
        Every process must call it (the sampler runs on the whole mesh)."""
        if self._sample_fn is None:
            self._sample_fn = make_sample_fn(self.sampler, mesh, model, eos_id=self.spec.eos_id, pad_id=self.spec.pad_id)
        cond = self.sample_condition
        tokens = gather(self._sample_fn(model, key, cond).tokens)
        return decode_outputs(self.tokenizer, tokens, np.asarray(jax.device_get(cond.mask)), self.spec)[0]

    def write_samples(self, model: Any, step: int, out: Any, cfg: TrainConfig, mesh: Mesh | None = None) -> Any:
        """Write a few EMA samples to ``<out>/samples/step_<step>.txt`` (atomically, process 0);
        conditional runs condition on the first rows of the dataset. Every process must call it."""
        texts = self.sample_text(model, jax.random.key(cfg.run.seed + step), mesh)
        s = cfg.sampling.settings_for(self.family)
        lines = [f"# step {step}, {self.family.sample_tag(s)}, {self.sampler.nfe()} NFE"]
        lines += [f"[{i}] {text}" for i, text in enumerate(texts)]
        path = storage.as_path(out) / "samples" / f"step_{step:07d}.txt"
        if jax.process_index() == 0:
            write_text_atomic(path, "\n\n".join(lines) + "\n")
        return path


def build_run(cfg: TrainConfig) -> TrainingRun:
    """Load the tokenizer and (ELF) the frozen encoder, check they fit each other and the run,
    prepare the (cached) data and its loader for this process."""
    d, family = cfg.data, cfg.objective.model_family
    tokenizer = load_tokenizer(d.tokenizer_source)
    latent_encoder, encoder_dim = None, ELFConfig.encoder_dim
    if family.uses_encoder:
        encoder = load_text_encoder(d.encoder)
        check_compatible(tokenizer, encoder, max_length=d.max_length)
        latent_encoder = LatentEncoder(encoder, d.latent_mean, d.latent_std, cfg.objective.label_drop_prob,
                                       cfg.model.compute_dtype, unroll_layers=cfg.model.scan_unroll)
        encoder_dim = encoder.dim
    spec = DataSpec.from_tokenizer(
        tokenizer, d.max_length, max_input_length=d.max_input_length or None,
        pad_mode=d.pad_mode, packing=d.packing,
    )
    data = run_data(d.source, tokenizer, spec, split=d.data_split, cache_dir=d.cache_dir,
                    process_index=jax.process_index(), process_count=jax.process_count(), wait=d.data_wait)
    loader = prefetch(Loader(data.rows, spec, cfg.optimizer.global_batch, seed=cfg.run.seed,
                             process_index=jax.process_index(), process_count=jax.process_count()), d.prefetch)
    elf_config = cfg.elf_config(encoder_dim, len(tokenizer))
    sampler = family.sampler(cfg.sampling.settings_for(family), cfg.objective.flow, vocab_size=len(tokenizer),
                             length=spec.max_length)
    condition = _sample_condition(family, data, spec, latent_encoder, cfg.sampling.num_samples, elf_config)
    return TrainingRun(tokenizer, spec, data, loader, family, latent_encoder, elf_config, sampler, condition)


def _sample_condition(family: Family, data: PreparedData, spec: DataSpec, latent_encoder: LatentEncoder | None,
                      n: int, config: ELFConfig) -> Condition | TokenCondition:
    """The fixed condition of a run's sample files, encoded once: the first ``n`` rows' conditions
    (conditional data) or none."""
    if not data.conditional:
        return family.no_condition(n, spec.max_length, config)
    first = data.rows.select(range(min(n, len(data.rows))))
    return encode_conditions(latent_encoder, first["input_ids"], first["cond_length"], spec)
