"""Masked diffusion (MDLM) in ELF's harness (docs/method.md#baselines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from elf_eqx.baselines.mdlm import MaskedDiffusionObjective, MaskedDiffusionSampler
from elf_eqx.baselines.network import BidirectionalLM
from elf_eqx.families.tokens import TokenFamily
from elf_eqx.flow import FlowConstants
from elf_eqx.sampling.settings import SamplerSettings


class MDLMFamily(TokenFamily):
    name: ClassVar[str] = "mdlm"
    network: ClassVar[type] = BidirectionalLM
    title: ClassVar[str] = "MDLM baseline"

    def objective(self, section: Any, vocab_size: int) -> MaskedDiffusionObjective:
        """The log-linear NELBO; id ``vocab_size`` is ``[MASK]``."""
        return MaskedDiffusionObjective(mask_id=vocab_size)

    def sampler(self, settings: SamplerSettings, flow: FlowConstants, *, vocab_size: int,
                length: int) -> MaskedDiffusionSampler:
        """Ancestral sampling with ``settings.steps`` steps."""
        return MaskedDiffusionSampler(num_steps=settings.steps, mask_id=vocab_size)

    def sample_tag(self, settings: SamplerSettings) -> str:
        return f"mdlm{settings.steps}"

    def sweep_settings(self, axes: Any, cfg_weights: Sequence[float] = (1.0,)) -> list[SamplerSettings]:
        """The ancestral sampler at each step count (or NFE budget: one evaluation a step)."""
        return [SamplerSettings(steps=n) for n in dict.fromkeys(axes.steps if axes.nfe is None else axes.nfe)]

    def sweep_label(self, settings: SamplerSettings) -> str:
        return "MDLM ancestral"

    def sweep_file_stem(self, settings: SamplerSettings) -> str:
        return f"mdlm-steps{settings.steps}"
