"""A released checkpoint as one of our runs: the run record (:class:`~elf_eqx.training.run_record.RunRecord`)
a converted (``python -m elf_eqx.convert``) or exported (``python -m elf_eqx.export``) release is
stored with, from what the release's :class:`~elf_eqx.release.model_source.ModelBundle` knows."""

from __future__ import annotations

import dataclasses

from elf_eqx.data.spec import DataSpec
from elf_eqx.encoders.load import load_tokenizer
from elf_eqx.release.model_source import ModelBundle
from elf_eqx.release.tasks import RELEASE_TOKENIZER, release_data_spec
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.run_record import RunRecord


def release_data_spec_for(bundle: ModelBundle, task: str, tokenizer_override: str | None) -> DataSpec:
    """The released ``task``'s data layout (T5 pad/EOS ids); a tokenizer other than the release's
    is loaded for its ids."""
    spec = release_data_spec(task, bundle.model.config.vocab_size)
    if tokenizer_override is None or tokenizer_override == RELEASE_TOKENIZER:
        return spec
    tok = load_tokenizer(tokenizer_override)
    return DataSpec.from_tokenizer(tok, spec.max_length, max_input_length=spec.max_input_length,
                                   pad_mode=spec.pad_mode)


def release_run_record(bundle: ModelBundle, data_spec: DataSpec) -> RunRecord:
    """The run record a converted release is stored with: the architecture, encoder, tokenizer and
    data layout, and a training config holding what sampling reads: the latent normalisation and
    data layout, the flow constants and the release's sampler settings."""
    run = TrainConfig.from_dict({
        "data": {"latent_mean": bundle.latent_mean, "latent_std": bundle.latent_std, **dataclasses.asdict(bundle.layout)},
        "objective": bundle.flow.to_dict(),
        "sampling": bundle.sampling.to_dict(),
    }, where=f"{bundle.origin}: its settings")
    return RunRecord(family=bundle.family.name, elf=bundle.model.config, encoder=bundle.encoder,
                     tokenizer=bundle.tokenizer, data_spec=data_spec, run=run, converted_from=bundle.origin)
