"""What the ELF reference release's models were trained for and how it samples them
(docs/method.md#sampling), and which architecture a released parameter set is.

Released repos: ``embedded-language-flows/ELF-{B,M,L}-owt``, ``…/ELF-B-de-en``, ``…/ELF-B-xsum``.
Reading their files is :mod:`elf_eqx.release.checkpoint` and :mod:`elf_eqx.release.files`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Literal

import numpy as np

from elf_eqx.config import PRESETS, ELFConfig, preset
from elf_eqx.data.spec import DataSpec, SequenceLayout
from elf_eqx.errors import ConfigError
from elf_eqx.flow import FLOW, FlowConstants
from elf_eqx.release.names import config_from_reference
from elf_eqx.sampler import SamplerSettings

Task = Literal["owt", "de-en", "xsum"]

RELEASE_TOKENIZER = "google-t5/t5-small"
RELEASE_ENCODER_FALLBACK = "google-t5/t5-small"
# The T5 tokenizer's ids, which every released model was trained with.
RELEASE_PAD_ID, RELEASE_EOS_ID = 0, 1
# Shared by every release: the T5 latent normalisation and the reference flow constants.
RELEASE_LATENT_MEAN, RELEASE_LATENT_STD = 0.0, 0.2
RELEASE_FLOW: FlowConstants = FLOW
# The architecture fields a preset fixes (encoder_dim and vocab_size come from the encoder).
_PRESET_FIELDS = ("depth", "hidden_size", "num_heads", "bottleneck_dim", "mlp_ratio", "num_time_tokens",
                  "num_sc_cfg_tokens", "num_mode_tokens")


@dataclasses.dataclass(frozen=True)
class ReleasedTask:
    """The data layout a released model was trained on and its released sampling settings."""

    layout: SequenceLayout
    """Its rows (``max_input_length`` 0: unconditional)."""
    sampling: SamplerSettings
    """The released sampler settings."""


_UNCONDITIONAL_SAMPLING = SamplerSettings(method="sde", steps=32, gamma=1.5, omega=3.0, cfg_weight=1.0)
_CONDITIONAL_SAMPLING = SamplerSettings(method="ode", steps=64, gamma=0.0, omega=1.0, cfg_weight=2.0)
RELEASED_TASKS: dict[Task, ReleasedTask] = {
    "owt": ReleasedTask(SequenceLayout(max_length=1024, max_input_length=0, pad_mode="pad"), _UNCONDITIONAL_SAMPLING),
    "de-en": ReleasedTask(SequenceLayout(max_length=128, max_input_length=64, pad_mode="eos"), _CONDITIONAL_SAMPLING),
    "xsum": ReleasedTask(SequenceLayout(max_length=1088, max_input_length=1024, pad_mode="eos"), _CONDITIONAL_SAMPLING),
}


def task_of(name: str, task: str | None = None) -> Task:
    """The released task (``owt``, ``de-en``, ``xsum``) of a source named ``name``: ``task`` when
    given, else what the name says, else ``owt``."""
    if task is not None:
        if task not in RELEASED_TASKS:
            raise ConfigError(f"--task {task!r} is unknown; released tasks: {sorted(RELEASED_TASKS)}")
        return task
    lowered = name.lower()
    if "xsum" in lowered:
        return "xsum"
    if re.search(r"(^|[^a-z])(de[-_]?en|wmt\d*)([^a-z]|$)", lowered):
        return "de-en"
    return "owt"


def release_data_spec(task: Task, vocab_size: int) -> DataSpec:
    """The data layout of a released ``task`` with the T5 tokenizer's pad and EOS ids."""
    layout = RELEASED_TASKS[task].layout
    return DataSpec(vocab_size=vocab_size, pad_id=RELEASE_PAD_ID, eos_id=RELEASE_EOS_ID,
                    max_length=layout.max_length, max_input_length=layout.max_input_length or None,
                    pad_mode=layout.pad_mode)


def preset_name(config: ELFConfig) -> str:
    """``ELF-B``/``ELF-M``/``ELF-L`` (or a small test preset) when ``config`` is that preset's
    architecture for any encoder width and vocabulary, else ``custom``."""
    for name in PRESETS:
        reference = preset(name)
        if all(getattr(config, f) == getattr(reference, f) for f in _PRESET_FIELDS):
            return name
    return "custom"


def release_config(flat: Mapping[str, np.ndarray], architecture: str | None = None) -> ELFConfig:
    """The :class:`ELFConfig` of reference parameters ``flat``: inferred from their shapes, or the
    preset named ``architecture`` with the checkpoint's encoder width and vocabulary (which
    :func:`elf_eqx.release.names.model_from_reference_params` then checks, listing every
    name and shape that differs)."""
    if architecture is None:
        return config_from_reference(flat)
    sizes = {}
    if "proj_kernel" in flat and "unembed_kernel" in flat:
        sizes = {"encoder_dim": flat["proj_kernel"].shape[-1], "vocab_size": flat["unembed_kernel"].shape[-1]}
    return preset(architecture, **sizes)
