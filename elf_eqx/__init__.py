"""elf_eqx: ELF (Embedded Language Flows) in JAX/Equinox — a continuous flow-matching language
model over the latents of a frozen text encoder (docs/method.md).

The method: :class:`ELF` (the network, configured by :class:`ELFConfig` or :func:`preset`),
:class:`FlowObjective` (the training loss on a :class:`LatentBatch`), :class:`Sampler` (ODE/SDE
sampling, built from :class:`SamplerSettings` and :class:`FlowConstants`, optionally given a
:class:`Condition`). Around it: :func:`load_model_source` (our runs, models exported from them —
a folder or a hub repo, ``python -m elf_eqx.export`` — and the released checkpoints),
:class:`TrainConfig` (``python -m elf_eqx.train``). The MDLM and AR baselines share all of it:
:func:`build_network` and :func:`make_sampler` pick a family's network and sampler by name
(``elf``, ``mdlm``, ``ar``); :func:`train_step_flops` counts any family's training compute.

    import elf_eqx
    bundle = elf_eqx.load_model_source("runs/quickstart")
    sampler = bundle.sampling.replace(steps=16).sampler(bundle.flow)

Names are imported on first use, so ``import elf_eqx`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ELFConfig": "elf_eqx.config",
    "preset": "elf_eqx.config",
    "ELF": "elf_eqx.model",
    "FlowConstants": "elf_eqx.flow",
    "FlowObjective": "elf_eqx.objective",
    "LatentBatch": "elf_eqx.objective",
    "Sampler": "elf_eqx.sampler",
    "Condition": "elf_eqx.sampler",
    "SampleOutput": "elf_eqx.sampler",
    "SamplerSettings": "elf_eqx.sampler",
    "load_model_source": "elf_eqx.release.model_source",
    "ModelBundle": "elf_eqx.release.model_source",
    "TrainConfig": "elf_eqx.training.config",
    "build_network": "elf_eqx.families",
    "make_sampler": "elf_eqx.families",
    "train_step_flops": "elf_eqx.families",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from elf_eqx.config import ELFConfig, preset
    from elf_eqx.families import build_network, make_sampler, train_step_flops
    from elf_eqx.flow import FlowConstants
    from elf_eqx.model import ELF
    from elf_eqx.objective import FlowObjective, LatentBatch
    from elf_eqx.release.model_source import ModelBundle, load_model_source
    from elf_eqx.sampler import Condition, SampleOutput, Sampler, SamplerSettings
    from elf_eqx.training.config import TrainConfig


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'elf_eqx' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
