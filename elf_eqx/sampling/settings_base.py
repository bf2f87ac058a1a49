"""What every family's sampler settings are made of (docs/method.md#sampling): a frozen dataclass
of named values, each checked once on construction with errors that name its flag, read from and
written to plain dicts (presets, stored run configs, sample records).

ELF's settings (:class:`elf_eqx.sampler.SamplerSettings`), MDLM's and AR's (:mod:`elf_eqx.families`)
derive from :class:`SamplerSettingsBase`; the number of steps, which ELF and MDLM share, is
declared once in :class:`StepsSetting`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from elf_eqx.errors import ConfigError

SettingsT = TypeVar("SettingsT", bound="SamplerSettingsBase")
Flag = Callable[[str], str]
"""How errors spell a setting's flag: ``flag("grid_seed") == "--grid-seed"``."""


@dataclasses.dataclass(frozen=True)
class SamplerSettingsBase:
    """Sampler settings: named values checked by :meth:`check` on construction."""

    flag_prefix: ClassVar[str] = "--"
    """How errors name a setting: ``--steps`` here, ``--sampling.steps`` in the training config."""

    def flag(self, name: str) -> str:
        """The command-line flag of the setting ``name``."""
        return self.flag_prefix + name.replace("_", "-")

    def __post_init__(self) -> None:
        self.check(self.to_dict(), self.flag)

    @classmethod
    def check(cls, values: Mapping[str, Any], flag: Flag) -> None:
        """Raise :class:`~elf_eqx.errors.ConfigError` naming the first bad setting of ``values``
        (``flag(name)`` spells it); names missing from ``values`` are not checked."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The setting names, in field order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name."""
        return dataclasses.asdict(self)

    @classmethod
    def own(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``values`` that are settings of this class (a record or a set of flags
        may hold other families' settings and more)."""
        return {name: values[name] for name in cls.names() if name in values}

    @classmethod
    def from_dict(cls: type[SettingsT], values: Mapping[str, Any], where: str = "sampler settings") -> SettingsT:
        """Settings from ``values`` (missing names take the defaults); an unknown name is a
        one-line error naming it and ``where`` they came from."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ConfigError(f"{where}: unknown sampler setting(s) {unknown}; known: {list(cls.names())}")
        hints = typing.get_type_hints(cls)
        # JSON and YAML write 3.0 as 3: float settings take ints.
        coerced = {k: float(v) if hints[k] is float and isinstance(v, int) and not isinstance(v, bool) else v
                   for k, v in values.items()}
        return cls(**coerced)

    def replace(self: SettingsT, **changes: Any) -> SettingsT:
        """These settings with ``changes`` applied; ``None`` values leave a setting as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def check_steps(steps: Any, flag: str) -> None:
    """A :class:`~elf_eqx.errors.ConfigError` naming ``flag`` unless ``steps`` is a positive integer
    (the settings' check and the samplers' own)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"{flag} must be a positive integer, got {steps!r}")


@dataclasses.dataclass(frozen=True)
class StepsSetting(SamplerSettingsBase):
    """A sampler run for a number of steps (ELF's solvers, MDLM's ancestral sampler)."""

    steps: int = 32
    """Number of sampling steps (ELF: solver steps; MDLM: ancestral steps)."""

    @classmethod
    def check(cls, values: Mapping[str, Any], flag: Flag) -> None:
        super().check(values, flag)
        if "steps" in values:
            check_steps(values["steps"], flag("steps"))
