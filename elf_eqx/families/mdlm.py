"""Masked diffusion (MDLM) in ELF's harness (docs/method.md#baselines)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

from elf_eqx.baselines.mdlm import MaskedDiffusionObjective, MaskedDiffusionSampler
from elf_eqx.baselines.network import BidirectionalLM
from elf_eqx.families.tokens import TokenFamily
from elf_eqx.flow import FlowConstants
from elf_eqx.sampling.settings_base import StepsSetting


@dataclasses.dataclass(frozen=True)
class MDLMSettings(StepsSetting):
    """MDLM's ancestral sampler: its number of steps (``--steps``), nothing else."""


class MDLMFamily(TokenFamily):
    name: ClassVar[str] = "mdlm"
    network: ClassVar[type] = BidirectionalLM
    title: ClassVar[str] = "MDLM baseline"
    settings_class: ClassVar[type] = MDLMSettings

    def objective(self, section: Any, vocab_size: int) -> MaskedDiffusionObjective:
        """The log-linear NELBO; id ``vocab_size`` is ``[MASK]``."""
        return MaskedDiffusionObjective(mask_id=vocab_size)

    def sampler(self, settings: MDLMSettings, flow: FlowConstants, *, vocab_size: int,
                length: int) -> MaskedDiffusionSampler:
        """Ancestral sampling with ``settings.steps`` steps."""
        return MaskedDiffusionSampler(num_steps=settings.steps, mask_id=vocab_size)

    def sample_tag(self, settings: MDLMSettings) -> str:
        return f"mdlm{settings.steps}"

    def sweep_settings(self, axes: Any, cfg_weights: Sequence[float] = (1.0,)) -> list[MDLMSettings]:
        """The ancestral sampler at each step count (or NFE budget: one evaluation a step)."""
        return [MDLMSettings(steps=n) for n in dict.fromkeys(axes.steps if axes.nfe is None else axes.nfe)]

    def sweep_label(self, settings: MDLMSettings) -> str:
        return "MDLM ancestral"

    def sweep_file_stem(self, settings: MDLMSettings) -> str:
        return f"mdlm-steps{settings.steps}"

    def sweep_columns(self, settings: MDLMSettings, nfe: int) -> dict[str, Any]:
        """The ELF sampler columns blank, ``steps`` the ancestral steps."""
        return {**super().sweep_columns(settings, nfe), "steps": settings.steps}
