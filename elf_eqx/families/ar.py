"""The autoregressive baseline in ELF's harness (docs/method.md#baselines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from elf_eqx.baselines.autoregressive import AutoregressiveSampler, NextTokenObjective
from elf_eqx.baselines.network import CausalLM
from elf_eqx.families.tokens import TokenFamily
from elf_eqx.flow import FlowConstants
from elf_eqx.sampling.settings import SamplerSettings


class ARFamily(TokenFamily):
    name: ClassVar[str] = "ar"
    network: ClassVar[type] = CausalLM
    title: ClassVar[str] = "AR baseline"

    def objective(self, section: Any, vocab_size: int) -> NextTokenObjective:
        """Next-token cross-entropy; id ``vocab_size`` is ``[BOS]``."""
        return NextTokenObjective(bos_id=vocab_size)

    def sampler(self, settings: SamplerSettings, flow: FlowConstants, *, vocab_size: int,
                length: int) -> AutoregressiveSampler:
        """Left to right over ``length`` positions with nucleus ``settings.top_p``."""
        return AutoregressiveSampler(bos_id=vocab_size, length=length, top_p=settings.top_p)

    def sample_tag(self, settings: SamplerSettings) -> str:
        return "ar" + (f"-p{settings.top_p:g}" if settings.top_p < 1 else "")

    def sweep_settings(self, axes: Any, cfg_weights: Sequence[float] = (1.0,)) -> list[SamplerSettings]:
        """One setting: the sweep's nucleus."""
        return [SamplerSettings(top_p=axes.top_p)]

    def sweep_label(self, settings: SamplerSettings) -> str:
        return "AR" + (f" top-p={settings.top_p:g}" if settings.top_p < 1 else "")

    def sweep_columns(self, settings: SamplerSettings, nfe: int) -> dict[str, Any]:
        """As the other baseline, with ``steps`` its one evaluation per position."""
        return {**super().sweep_columns(settings, nfe), "steps": nfe}
