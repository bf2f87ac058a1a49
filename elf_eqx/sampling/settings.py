"""Every family's sampler settings as one set of flags (docs/method.md#sampling).

Each family declares its own settings — ELF's :class:`~elf_eqx.sampler.SamplerSettings` beside
the sampler it builds, MDLM's and AR's in :mod:`elf_eqx.families` — and builds its sampler from
them. A command line takes them all as one set of flags, generated here from those classes (a
setting added to one is a flag and a YAML key of the sample CLI and the training config with no
second edit): :data:`SamplerFlags` (every setting, with its default: the training config's
``--sampling.*``) and :data:`SamplerOverrides` (every setting optional: ``python -m elf_eqx.sample``,
where unset flags take the model source's own). Each family then takes its own settings from
them (:meth:`SamplerFlags.settings_for`, :meth:`elf_eqx.families.Family.sampler_settings`).

Sections that take one setting, or sweep over its values, take its type and help from the same
declaration (:func:`setting`, :func:`setting_axis`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Annotated, Any

import tyro

from elf_eqx.cli.args import attribute_docs
from elf_eqx.families import FAMILIES, Family
from elf_eqx.sampler import SamplerSettings
from elf_eqx.sampling.settings_base import Flag, SamplerSettingsBase

__all__ = ["FAMILY_SETTINGS", "SamplerFlags", "SamplerOverrides", "setting", "setting_axis"]

FAMILY_SETTINGS: tuple[type[SamplerSettingsBase], ...] = tuple(
    dict.fromkeys(family.settings_class for family in FAMILIES.values()))
"""Every family's settings class (ELF's first: its help describes a setting two families share)."""


def _help(cls: type, name: str, note: str = "") -> str:
    return " ".join(part for part in (note, attribute_docs(cls).get(name, "")) if part)


def setting(cls: type[SamplerSettingsBase], name: str, *, optional: bool = False, note: str = "") -> Any:
    """The annotation of a section's field that takes setting ``name`` of ``cls``: its type
    (``| None`` when ``optional``) and its help (``note``, then the setting's own)."""
    hint = typing.get_type_hints(cls)[name]
    return Annotated[hint | None if optional else hint, tyro.conf.arg(help=_help(cls, name, note))]


def setting_axis(cls: type[SamplerSettingsBase], name: str, *, note: str = "") -> Any:
    """The annotation of a sweep's axis over setting ``name`` of ``cls``: a tuple of its values,
    with its help (``note``, then the setting's own)."""
    return Annotated[tuple[typing.get_type_hints(cls)[name], ...], tyro.conf.arg(help=_help(cls, name, note))]


def _declared() -> dict[str, tuple[Any, Any, str]]:
    """``{name: (type, default, help)}`` of every family's settings, in order; a name two families
    share is one declaration (a common base class), so its type and default agree."""
    declared: dict[str, tuple[Any, Any, str]] = {}
    for cls in FAMILY_SETTINGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            entry = (hints[f.name], f.default, _help(cls, f.name))
            if f.name in declared and declared[f.name][:2] != entry[:2]:
                raise TypeError(f"sampler setting {f.name!r} is declared twice with different types or defaults")
            declared.setdefault(f.name, entry)
    return declared


@dataclasses.dataclass(frozen=True)
class _FlagsBase(SamplerSettingsBase):
    """Every family's settings; each family's check runs on its own."""

    @classmethod
    def check(cls, values: Mapping[str, Any], flag: Flag) -> None:
        for settings in FAMILY_SETTINGS:
            settings.check(settings.own(values), flag)

    def settings_for(self, family: Family) -> SamplerSettingsBase:
        """``family``'s own settings, as these flags give them."""
        return family.sampler_settings(self.to_dict())


@dataclasses.dataclass(frozen=True)
class _OverridesBase:
    """Every family's settings, each optional (``None``: not given); each family's check runs on the given ones."""

    flag_prefix = "--"

    def given(self) -> dict[str, Any]:
        """The settings given, by name."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def __post_init__(self) -> None:
        values = self.given()
        for settings in FAMILY_SETTINGS:
            settings.check(settings.own(values), lambda name: self.flag_prefix + name.replace("_", "-"))

    def applied_to(self, own: SamplerSettingsBase) -> SamplerSettingsBase:
        """The settings ``own`` (a family's) with the given ones of its family on top; settings of
        other families do not apply to it."""
        return own.replace(**type(own).own(self.given()))


_DECLARED = _declared()
SamplerFlags = dataclasses.make_dataclass(
    "SamplerFlags",
    [(name, Annotated[hint, tyro.conf.arg(help=doc)], dataclasses.field(default=default))
     for name, (hint, default, doc) in _DECLARED.items()],
    bases=(_FlagsBase,), frozen=True,
)
SamplerFlags.__module__ = __name__
SamplerFlags.__doc__ = "Every family's sampler settings, with their defaults (each family takes its own)."
SamplerOverrides = dataclasses.make_dataclass(
    "SamplerOverrides",
    [(name, Annotated[hint | None, tyro.conf.arg(help=doc)], dataclasses.field(default=None))
     for name, (hint, _, doc) in _DECLARED.items()],
    bases=(_OverridesBase,), frozen=True,
)
SamplerOverrides.__module__ = __name__
SamplerOverrides.__doc__ = "The sampler; unset flags take the source's own settings (a run's, or the released ones)."
