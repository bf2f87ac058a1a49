"""The three model families one harness trains, samples and scores: ``elf`` (the flow in embedding
space), ``mdlm`` (masked diffusion) and ``ar`` (autoregressive) (docs/method.md#baselines).

Each is a :class:`Family` object; :func:`family_named` is the one place a family's name (the
``--objective`` flag, a stored run config) becomes its object. The module-level helpers take a
name or a :class:`Family`.
"""

from __future__ import annotations

from typing import Any, Literal

import equinox as eqx
from jaxtyping import PRNGKeyArray

from elf_eqx.config import ELFConfig
from elf_eqx.errors import ConfigError
from elf_eqx.families.ar import ARFamily
from elf_eqx.families.base import Family, ModelSampler
from elf_eqx.families.elf import ELFFamily
from elf_eqx.families.mdlm import MDLMFamily
from elf_eqx.flow import FlowConstants
from elf_eqx.sampling.settings_base import SamplerSettingsBase

FAMILIES: dict[str, Family] = {f.name: f for f in (ELFFamily(), MDLMFamily(), ARFamily())}
"""Every family by its name."""
FamilyName = Literal[tuple(FAMILIES)]  # type: ignore[valid-type]
ELF_FAMILY = FAMILIES["elf"]
"""The family of runs that store none (written before the baselines) and of every release."""


def family_named(family: str | Family, what: str = "--objective") -> Family:
    """The :class:`Family` called ``family`` (a :class:`Family` is returned as it is); an unknown
    name is an error naming ``what``."""
    if isinstance(family, Family):
        return family
    if family not in FAMILIES:
        raise ConfigError(f"{what} {family!r} is not one of {list(FAMILIES)}")
    return FAMILIES[family]


def build_network(family: str | Family, config: ELFConfig, key: PRNGKeyArray) -> eqx.Module:
    """A freshly initialised network of ``family`` with architecture ``config``."""
    return family_named(family).build_network(config, key)


def network_template(family: str | Family, config: ELFConfig) -> eqx.Module:
    """The network's shapes and structure without its values (for restoring checkpoints)."""
    return family_named(family).network_template(config)


def make_sampler(family: str | Family, settings: SamplerSettingsBase, flow: FlowConstants, *, vocab_size: int,
                 length: int) -> ModelSampler:
    """The sampler of ``family``'s ``settings`` for a model of it (see :meth:`Family.sampler`)."""
    return family_named(family).sampler(settings, flow, vocab_size=vocab_size, length=length)


def train_step_flops(
    family: str | Family,
    config: ELFConfig,
    batch: int,
    length: int,
    *,
    objective: Any = None,
    encoder_config: Any = None,
) -> float:
    """FLOPs of one training step of ``family`` (a name or an :class:`elf_eqx.families.Family`) on
    ``batch`` sequences of ``length`` tokens; see each family's ``train_step_flops`` (ELF needs its
    ``objective`` for the denoise/decode split and counts the frozen encoder when ``encoder_config``
    is given; the baselines count a forward-backward of every sequence)."""
    return family_named(family, "unknown family").train_step_flops(config, batch, length, objective=objective,
                                                           encoder_config=encoder_config)


__all__ = ["ELF_FAMILY", "FAMILIES", "Family", "FamilyName", "ModelSampler", "build_network", "family_named",
           "make_sampler", "network_template", "train_step_flops"]
