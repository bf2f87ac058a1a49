"""The three model families one harness trains, samples and scores: ``elf`` (the flow in embedding
space), ``mdlm`` (masked diffusion) and ``ar`` (autoregressive) (docs/method.md#baselines).

Everything that differs between them is chosen here, from the family's name: the network class,
the training loss, the sampler and what a sampler is conditioned on. Data, optimizer, step,
checkpoints, sharding and evaluation are shared.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
from jaxtyping import PRNGKeyArray

from elf_eqx.baselines.autoregressive import AutoregressiveSampler, NextTokenObjective
from elf_eqx.baselines.token_sampling import TokenCondition
from elf_eqx.baselines.mdlm import MaskedDiffusionObjective, MaskedDiffusionSampler
from elf_eqx.baselines.network import BidirectionalLM, CausalLM
from elf_eqx.config import ELFConfig
from elf_eqx.flow import FlowConstants
from elf_eqx.model import ELF
from elf_eqx.sampler import Condition
from elf_eqx.sampling.settings import SamplerSettings

Family = Literal["elf", "mdlm", "ar"]
FAMILIES: tuple[str, ...] = ("elf", "mdlm", "ar")
_NETWORK: dict[str, type[eqx.Module]] = {"elf": ELF, "mdlm": BidirectionalLM, "ar": CausalLM}


def check_family(family: str, what: str = "--objective") -> str:
    """``family`` if it is one of :data:`FAMILIES`; else an error naming ``what``."""
    if family not in FAMILIES:
        raise ValueError(f"{what} {family!r} is not one of {list(FAMILIES)}")
    return family


def uses_encoder(family: str) -> bool:
    """Whether the family trains on latents of the frozen text encoder (only ELF does)."""
    return check_family(family) == "elf"


def build_network(family: str, config: ELFConfig, key: PRNGKeyArray) -> eqx.Module:
    """A freshly initialised network of ``family`` with architecture ``config``."""
    return _NETWORK[check_family(family)](config, key=key)


def network_template(family: str, config: ELFConfig) -> eqx.Module:
    """The network's shapes and structure without its values (for restoring checkpoints)."""
    return eqx.filter_eval_shape(build_network, family, config, jax.random.key(0))


def token_objective(family: str, vocab_size: int) -> eqx.Module:
    """The training loss of a baseline family (ELF's is :class:`~elf_eqx.objective.FlowObjective`)."""
    if check_family(family) == "mdlm":
        return MaskedDiffusionObjective(mask_id=vocab_size)
    if family == "ar":
        return NextTokenObjective(bos_id=vocab_size)
    raise ValueError("ELF's objective is FlowObjective (training/sections.py builds it)")


def make_sampler(family: str, settings: SamplerSettings, flow: FlowConstants, *, vocab_size: int,
                 length: int) -> eqx.Module:
    """The sampler of ``settings`` for a model of ``family``: ELF's :class:`~elf_eqx.sampler.Sampler`
    (with the flow constants ``flow`` it was trained with), MDLM's ancestral sampler with
    ``settings.steps`` steps, or the AR sampler over ``length`` positions with nucleus
    ``settings.top_p``. Each is called as ``sampler(model, key, condition=…, eos_id=…, pad_id=…)``
    and has ``nfe()``."""
    if check_family(family) == "elf":
        return settings.sampler(flow)
    if family == "mdlm":
        return MaskedDiffusionSampler(num_steps=settings.steps, mask_id=vocab_size)
    return AutoregressiveSampler(bos_id=vocab_size, length=length, top_p=settings.top_p)


def no_condition(family: str, batch: int, length: int, config: ELFConfig) -> Condition | TokenCondition:
    """The condition of ``batch`` unconditional samples of ``length`` positions."""
    if check_family(family) == "elf":
        return Condition.none(batch, length, config.encoder_dim)
    return TokenCondition.none(batch, length)
