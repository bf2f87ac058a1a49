"""``python -m elf_eqx.train --init-from SOURCE``: a run that starts from a trained model's weights
(any model source: a run, a checkpoint, an exported folder or hub repo, a release) instead of fresh
ones, on this run's mesh (the weights are loaded on one device and laid out on the mesh by the
trainer, whatever mesh they were trained on). The optimizer state starts fresh."""

from __future__ import annotations

import dataclasses

import equinox as eqx

from elf_eqx.config import RUNTIME_FIELDS, ELFConfig
from elf_eqx.errors import IncompatibleModelError
from elf_eqx.families import Family
from elf_eqx.model import with_runtime_options
from elf_eqx.release.model_source import ModelBundle, load_model_source
from elf_eqx.release.tasks import preset_name
from elf_eqx.training.sections import InitSection


def architecture_differences(have: ELFConfig, want: ELFConfig) -> list[str]:
    """The fields of two architectures that differ (the run-time fields, which do not change the
    weights, left out): ``"depth 4 vs 2"``."""
    a, b = dataclasses.asdict(have), dataclasses.asdict(want)
    return [f"{k} {a[k]} vs {b[k]}" for k in a if k not in RUNTIME_FIELDS and a[k] != b[k]]


def load_initial(init: InitSection) -> ModelBundle:
    """The model ``--init-from`` names."""
    return load_model_source(init.init_from, weights=init.init_weights, step=init.init_step,
                             revision=init.init_revision)


def initial_weights(init: InitSection, family: Family, config: ELFConfig) -> eqx.Module:
    """The network of ``--init-from`` as this run's: the same family and architecture (else one
    line naming what differs), with the run's run-time settings (compute dtype, remat, dropout)."""
    bundle = load_initial(init)
    if bundle.family.name != family.name:
        raise IncompatibleModelError(f"--init-from {init.init_from} is a {bundle.family.name} model; this run trains "
                                     f"{family.name} (--objective)")
    differences = architecture_differences(bundle.model.config, config)
    if differences:
        raise IncompatibleModelError(
            f"--init-from {init.init_from} ({preset_name(bundle.model.config)}) does not fit this run's network "
            f"({preset_name(config)}): {', '.join(differences)}; choose the --model, encoder and tokenizer it was "
            "trained with")
    return with_runtime_options(bundle.model, **{name: getattr(config, name) for name in RUNTIME_FIELDS})
