"""The training run's configuration: sections model / data / objective / optimizer / sampling /
mesh / run, YAML presets in ``configs/``, tyro flags (one ``--help`` group per section).

Precedence: field defaults < ``--config FILE`` or ``--preset NAME`` < command-line flags. Flags
keep their flat names (``--max-length``) except the sampling section's (``--sampling.steps``);
YAML keys are the flag names. The flat names of earlier versions (``--sample-steps``,
``sample_steps:``) are read as their new ones (:data:`RENAMED`), so are the flat run configs stored
in older checkpoints (:meth:`TrainConfig.from_dict`). Unknown keys and bad values are errors that
name the field.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from elf_eqx.cli.args import OTHER_PRESET_PREFIXES, DryRunFlags, build_config, config_values, flag_values, parse_cli
from elf_eqx.config import ELFConfig
from elf_eqx.training.sections import (
    DataSection,
    Flat,
    InitSection,
    MeshSection,
    ModelSection,
    ObjectiveSection,
    OptimizerSection,
    RunSection,
    SamplingSection,
)

# Old flat names (flags and YAML/stored keys) → their new flag keys.
RENAMED: dict[str, str] = {
    "sample_steps": "sampling.steps", "sample_method": "sampling.method", "sample_gamma": "sampling.gamma",
    "sample_omega": "sampling.omega", "sample_cfg_weight": "sampling.cfg_weight",
    "sample_time_grid": "sampling.time_grid", "sample_every": "sampling.every", "num_samples": "sampling.num_samples",
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Train an ELF model (docs/method.md#objective). Every field is a --flag; YAML presets in configs/."""

    config: str | None = None
    """YAML file of flag values, applied before the other flags."""
    preset: str | None = None
    """Name of a YAML preset shipped in configs/ (quickstart, owt_elf_b, owt_elf_m, owt_elf_l, wmt14_de_en, xsum)."""
    model: Annotated[ModelSection, Flat] = ModelSection()
    data: Annotated[DataSection, Flat] = DataSection()
    objective: Annotated[ObjectiveSection, Flat] = ObjectiveSection()
    optimizer: Annotated[OptimizerSection, Flat] = OptimizerSection()
    sampling: SamplingSection = SamplingSection()
    mesh: Annotated[MeshSection, Flat] = MeshSection()
    run: Annotated[RunSection, Flat] = RunSection()
    init: Annotated[InitSection, Flat] = InitSection()
    plan: Annotated[DryRunFlags, Flat] = DryRunFlags()

    def elf_config(self, encoder_dim: int, vocab_size: int) -> ELFConfig:
        """The network's architecture for an encoder of width ``encoder_dim`` and a tokenizer of ``vocab_size``."""
        return self.model.elf_config(encoder_dim, vocab_size)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready nested sections (stored with checkpoints; :meth:`from_dict` reads it).
        The dry-run flags (``plan``) say what this command does, not what the run is: left out."""
        values = config_values(self)
        values.pop("plan", None)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "run config") -> "TrainConfig":
        """The config of ``values``: :meth:`to_dict`'s nested sections, or flag-named keys (YAML, the
        flat run configs of older checkpoints; old names are read as their new ones)."""
        return build_config(cls, flag_values(cls, values, where, RENAMED))


def parse_train_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Read ``--preset``/``--config`` first, then let tyro apply every other flag on top."""
    return parse_cli(TrainConfig, sys.argv[1:] if argv is None else argv, exclude_prefix=OTHER_PRESET_PREFIXES,
                     aliases=RENAMED)
