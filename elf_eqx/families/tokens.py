"""What the two discrete baselines (MDLM, AR) share: token conditions, their FLOP count and how
their sweep rows are described (docs/method.md#baselines)."""

from __future__ import annotations

from typing import Any

from elf_eqx.baselines.token_sampling import TokenCondition
from elf_eqx.config import ELFConfig
from elf_eqx.families.base import Family
from elf_eqx.flops import token_forward_flops
from elf_eqx.sampling.settings_base import SamplerSettingsBase


class TokenFamily(Family):
    """A baseline on ELF's blocks that reads token ids (no frozen encoder)."""

    def train_step_flops(self, config: ELFConfig, batch: int, length: int, *, objective: Any = None,
                         encoder_config: Any = None) -> float:
        """A forward-backward of every sequence: 3 passes of blocks and vocabulary head."""
        return batch * 3 * token_forward_flops(config, length)

    def sample_flops(self, config: ELFConfig, batch: int, length: int, nfe: int) -> float:
        """``nfe`` passes over the whole row per sample (no key-value cache)."""
        return batch * nfe * token_forward_flops(config, length)

    def no_condition(self, batch: int, length: int, config: ELFConfig) -> TokenCondition:
        return TokenCondition.none(batch, length)

    def sweep_file_stem(self, settings: SamplerSettingsBase) -> str:
        return self.sample_tag(settings)

    def sweep_columns(self, settings: SamplerSettingsBase, nfe: int) -> dict[str, Any]:
        """The ELF sampler columns blank, ``method`` the family's name; each family adds its ``steps``."""
        return {"method": self.name, "solver": "", "sde_noise": "", "gamma": "", "omega": "", "cfg_weight": ""}
