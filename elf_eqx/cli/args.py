"""Flat dataclass configs for the CLIs: YAML presets shipped in ``configs/``, YAML files, tyro flags.

Precedence: field defaults < ``--preset NAME`` < ``--config FILE`` < command-line flags. Unknown
YAML keys and bad values are errors that name the field and the file.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import tyro
import yaml

ConfigT = TypeVar("ConfigT")
# Sampling presets are configs/sample_<name>.yaml; training presets are the other files there.
SAMPLE_PRESET_PREFIX = "sample_"


def preset_folder() -> Path:
    """The folder of the YAML presets shipped as package data (``elf_eqx/configs``)."""
    return Path(str(importlib.resources.files("elf_eqx.configs")))


def preset_names(prefix: str = "", exclude_prefix: str | None = None) -> list[str]:
    """Names of the shipped presets whose file names start with ``prefix`` (the prefix removed)."""
    names = []
    for path in sorted(preset_folder().glob(f"{prefix}*.yaml")):
        if exclude_prefix and path.name.startswith(exclude_prefix):
            continue
        names.append(path.name.removesuffix(".yaml").removeprefix(prefix))
    return names


def preset_file(name: str, prefix: str = "", exclude_prefix: str | None = None) -> Path:
    """The YAML file of the shipped preset ``name`` (``configs/<prefix><name>.yaml``)."""
    path = preset_folder() / f"{prefix}{name}.yaml"
    if not path.is_file() or (exclude_prefix and path.name.startswith(exclude_prefix)):
        raise ValueError(f"--preset {name!r} is unknown; presets: {preset_names(prefix, exclude_prefix)}")
    return path


def yaml_fields(path: str | Path, cls: type) -> dict[str, Any]:
    """Field values of dataclass ``cls`` from a YAML file; unknown keys are an error naming them
    and the file. YAML reads ``5`` as an int: float fields take it as ``5.0``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config must be a mapping of field: value")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}")
    hints = typing.get_type_hints(cls)
    floats = (float, float | None)
    return {k: float(v) if hints[k] in floats and isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in values.items()}


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value given to ``flag`` in ``argv`` (``--flag v`` or ``--flag=v``), or ``None``."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse_cli(
    cls: type[ConfigT], argv: Sequence[str], *, prefix: str = "", exclude_prefix: str | None = None,
    description: str | None = None,
) -> ConfigT:
    """Parse ``argv`` into ``cls``: ``--preset``/``--config`` YAML first, then tyro applies every
    other flag on top. An unknown preset, a missing file or an unknown YAML key raise
    ``ValueError``/``FileNotFoundError`` naming it; bad values end as ``SystemExit`` with a
    one-line message."""
    argv = list(argv)
    values: dict[str, Any] = {}
    preset, config_file = flag_value(argv, "--preset"), flag_value(argv, "--config")
    if preset:
        values.update(yaml_fields(preset_file(preset, prefix, exclude_prefix), cls))
    if config_file:
        values.update(yaml_fields(config_file, cls))
    try:
        default = cls(**values)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"error in {config_file or preset}: {err}") from None
    try:
        return tyro.cli(cls, args=argv, default=default, description=description)
    except ValueError as err:  # __post_init__ checks on the final values
        raise SystemExit(f"error: {err}") from None
