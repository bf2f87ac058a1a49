"""A loaded model ready to draw text: the weights, tokenizer, frozen encoder (conditional ELF
models), device mesh and compiled samplers, for ELF and the baselines alike. Used by ``python -m elf_eqx.sample`` and the steps sweep.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from elf_eqx.config import ComputeDtype
from elf_eqx.errors import ConfigError, IncompatibleModelError
from elf_eqx.sampling.conditions import condition_ids, encode_conditions
from elf_eqx.data import DataSpec
from elf_eqx.encoders.load import check_compatible, load_text_encoder, load_tokenizer
from elf_eqx.encoders.latent_encoder import LatentEncoder
from elf_eqx.parallel.mesh import MeshConfig, gather, make_mesh
from elf_eqx.families import ModelSampler
from elf_eqx.model import with_runtime_options
from elf_eqx.release.model_source import ModelBundle, load_model_source
from elf_eqx.sampling.records import ConditionInput, decode_outputs, sample_record
from elf_eqx.sampling.compiled import make_sample_fn
from elf_eqx.baselines.token_sampling import TokenCondition, TokenSampleOutput
from elf_eqx.sampler import Condition
from elf_eqx.sampling.settings_base import SamplerSettingsBase


@dataclasses.dataclass
class TextSampler:
    """A model source opened for sampling (see :meth:`open`); :meth:`draw` makes sample records."""

    bundle: ModelBundle
    model: eqx.Module
    tokenizer: Any
    spec: DataSpec
    latent_encoder: LatentEncoder | None
    mesh: Mesh
    _compiled: dict[SamplerSettingsBase, tuple[ModelSampler, Callable]] = dataclasses.field(default_factory=dict)

    @property
    def conditional(self) -> bool:
        return self.bundle.layout.conditional

    @staticmethod
    def open(
        source: str,
        *,
        weights: str = "ema",
        step: int | None = None,
        encoder: str | None = None,
        tokenizer: str | None = None,
        task: str | None = None,
        compute_dtype: ComputeDtype = "auto",
        length: int | None = None,
        mesh: MeshConfig = MeshConfig(),
        revision: str | None = None,
    ) -> "TextSampler":
        """Load ``source`` (see :func:`elf_eqx.release.model_source.load_model_source`), its tokenizer and,
        for conditional ELF models, its frozen encoder; check they fit the model. ``length`` overrides
        the sequence length of unconditional samples."""
        bundle = load_model_source(source, weights=weights, step=step, encoder=encoder, tokenizer=tokenizer, task=task,
                                   revision=revision)
        model = bundle.model
        if compute_dtype != model.config.compute_dtype:
            model = with_runtime_options(model, compute_dtype=compute_dtype)
        tok = load_tokenizer(bundle.tokenizer)
        if len(tok) != model.config.vocab_size:
            raise IncompatibleModelError(f"tokenizer {bundle.tokenizer} has {len(tok)} ids but the model's vocabulary head has "
                             f"{model.config.vocab_size}: pass the tokenizer the model was trained with (--tokenizer)")
        layout = bundle.layout
        seq_length = layout.max_length if layout.conditional or length is None else length
        spec = DataSpec.from_tokenizer(tok, seq_length, max_input_length=layout.max_input_length or None,
                                       pad_mode=layout.pad_mode)
        latent_encoder = None
        if layout.conditional and bundle.family.uses_encoder:
            text_encoder = load_text_encoder(bundle.encoder)
            check_compatible(tok, text_encoder, model_vocab_size=model.config.vocab_size,
                             model_encoder_dim=model.config.encoder_dim, max_length=seq_length)
            latent_encoder = LatentEncoder(text_encoder, bundle.latent_mean, bundle.latent_std, compute_dtype=compute_dtype)
        return TextSampler(bundle, model, tok, spec, latent_encoder, make_mesh(mesh))

    def sampler(self, settings: SamplerSettingsBase) -> ModelSampler:
        """The sampler of ``settings`` (this model's family's) for this model (ELF's with the flow
        constants the source was trained with; see :meth:`elf_eqx.families.Family.sampler`)."""
        return self.bundle.family.sampler(settings, self.bundle.flow, vocab_size=self.model.config.vocab_size,
                                          length=self.spec.max_length)

    def _sample_fn(self, settings: SamplerSettingsBase) -> tuple[ModelSampler, Callable]:
        """The sampler of ``settings`` and its compiled function, built once per distinct settings."""
        if settings not in self._compiled:
            sampler = self.sampler(settings)
            self._compiled[settings] = sampler, make_sample_fn(sampler, self.mesh, self.model,
                                                               eos_id=self.spec.eos_id, pad_id=self.spec.pad_id)
        return self._compiled[settings]

    def _condition(self, chunk: Sequence[ConditionInput] | None, batch: int) -> Condition | TokenCondition:
        if chunk is None:
            return self.bundle.family.no_condition(batch, self.spec.max_length, self.model.config)
        padded = list(chunk) + [chunk[-1]] * (batch - len(chunk))  # fixed shapes: one compilation
        rows = condition_ids(self.tokenizer, [c.text for c in padded], self.spec.max_input_length or 0)
        return encode_conditions(self.latent_encoder, rows, [len(r) for r in rows], self.spec)

    def draw(
        self,
        settings: SamplerSettingsBase,
        *,
        seed: int,
        batch_size: int,
        num_samples: int | None = None,
        inputs: Sequence[ConditionInput] | None = None,
        extra_settings: dict[str, Any] | None = None,
        progress: bool = True,
    ) -> list[dict[str, Any]]:
        """Sample records (see :mod:`elf_eqx.sampling.records`): ``num_samples`` unconditional samples, or
        one per condition in ``inputs``, in batches of ``batch_size``, drawn with ``settings`` (this
        model's family's). Batch ``b`` uses the key ``fold_in(key(seed), b)``, so the same seed and
        settings give the same samples. Records carry the family's own settings only."""
        if self.conditional and not inputs:
            raise ConfigError("this model is conditional: give conditions (--input FILE.jsonl or --prompt TEXT)")
        if not self.conditional and inputs:
            raise ConfigError("this model is unconditional (trained without condition tokens); give no conditions")
        sampler, sample_fn = self._sample_fn(settings)
        total = len(inputs) if inputs else int(num_samples or 0)
        if total <= 0:
            raise ConfigError("nothing to sample: num_samples must be positive")
        family = self.bundle.family
        record_settings = {
            "family": family.name, **family.sampler_record(settings, self.bundle.flow), "nfe": sampler.nfe(),
            "seed": seed, "batch_size": batch_size, "length": self.spec.max_length,
            "compute_dtype": self.model.config.dtype.name, "origin": self.bundle.origin, "step": self.bundle.step,
            "tokenizer": self.bundle.tokenizer,
            **({"encoder": self.bundle.encoder} if self.conditional and family.uses_encoder else {}),
            "mesh": dict(self.mesh.shape), **(extra_settings or {}),
        }
        records: list[dict[str, Any]] = []
        batches = range(-(-total // batch_size))
        for b in tqdm(batches, desc="sampling", disable=not progress or jax.process_index() != 0, dynamic_ncols=True):
            chunk = list(inputs[b * batch_size : (b + 1) * batch_size]) if inputs else None
            condition = self._condition(chunk, batch_size)
            out = sample_fn(self.model, jax.random.fold_in(jax.random.key(seed), b), condition)
            texts, rows = decode_outputs(self.tokenizer, gather(out.tokens), gather(condition.mask), self.spec)
            used = gather(out.nfe) if isinstance(out, TokenSampleOutput) else None  # MDLM's cache skips some
            for i in range(min(batch_size, total - b * batch_size)):
                record = sample_record(len(records), texts[i], rows[i], record_settings, chunk[i] if chunk else None)
                if used is not None:
                    record["nfe_used"] = int(used[i])
                records.append(record)
        return records
