"""The autoregressive baseline in ELF's harness (docs/method.md#baselines)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from elf_eqx.baselines.autoregressive import AutoregressiveSampler, NextTokenObjective, check_top_p
from elf_eqx.baselines.network import CausalLM
from elf_eqx.families.tokens import TokenFamily
from elf_eqx.flow import FlowConstants
from elf_eqx.sampling.settings_base import Flag, SamplerSettingsBase


@dataclasses.dataclass(frozen=True)
class ARSettings(SamplerSettingsBase):
    """The AR sampler: left to right at temperature 1, from the nucleus ``top_p``."""

    top_p: float = 1.0
    """AR baseline: nucleus sampling keeps the most likely tokens up to this probability (1 = off)."""

    @classmethod
    def check(cls, values: Mapping[str, Any], flag: Flag) -> None:
        super().check(values, flag)
        if "top_p" in values:
            check_top_p(values["top_p"], flag("top_p"))


class ARFamily(TokenFamily):
    name: ClassVar[str] = "ar"
    network: ClassVar[type] = CausalLM
    title: ClassVar[str] = "AR baseline"
    settings_class: ClassVar[type] = ARSettings

    def objective(self, section: Any, vocab_size: int) -> NextTokenObjective:
        """Next-token cross-entropy; id ``vocab_size`` is ``[BOS]``."""
        return NextTokenObjective(bos_id=vocab_size)

    def sampler(self, settings: ARSettings, flow: FlowConstants, *, vocab_size: int,
                length: int) -> AutoregressiveSampler:
        """Left to right over ``length`` positions with nucleus ``settings.top_p``."""
        return AutoregressiveSampler(bos_id=vocab_size, length=length, top_p=settings.top_p)

    def sample_tag(self, settings: ARSettings) -> str:
        return "ar" + (f"-p{settings.top_p:g}" if settings.top_p < 1 else "")

    def sweep_settings(self, axes: Any, cfg_weights: Sequence[float] = (1.0,)) -> list[ARSettings]:
        """One setting: the sweep's nucleus."""
        return [ARSettings(top_p=axes.top_p)]

    def sweep_label(self, settings: ARSettings) -> str:
        return "AR" + (f" top-p={settings.top_p:g}" if settings.top_p < 1 else "")

    def sweep_columns(self, settings: ARSettings, nfe: int) -> dict[str, Any]:
        """As the other baseline, with ``steps`` its one evaluation per position."""
        return {**super().sweep_columns(settings, nfe), "steps": nfe}
