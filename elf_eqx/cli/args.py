"""Dataclass configs for the CLIs: YAML presets shipped in ``configs/``, YAML files, tyro flags.

Precedence: field defaults < ``--preset NAME`` < ``--config FILE`` < command-line flags. A config
may group its fields in sections (tyro shows one ``--help`` group per section). YAML keys are the
flag names (``max_length: 64``; a prefixed section nests: ``sampling: {steps: 8}``). Unknown
YAML keys and bad values are errors that name the field and the file.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.resources
import inspect
import textwrap
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import tyro
import yaml

from elf_eqx.io.storage import local_path
from elf_eqx.errors import ConfigError, MissingInputError
from elf_eqx.fields import FLAG_TYPE
from elf_eqx.parallel.mesh import MeshConfig

ConfigT = TypeVar("ConfigT")
# Sampling presets are configs/sample_<name>.yaml, distillation presets configs/distill_<name>.yaml;
# training presets are the other files there.
SAMPLE_PRESET_PREFIX = "sample_"
DISTILL_PRESET_PREFIX = "distill_"
OTHER_PRESET_PREFIXES = (SAMPLE_PRESET_PREFIX, DISTILL_PRESET_PREFIX)


def preset_folder() -> Path:
    """The folder of the YAML presets shipped as package data (``elf_eqx/configs``)."""
    return Path(str(importlib.resources.files("elf_eqx.configs")))


def preset_names(prefix: str = "", exclude_prefix: str | tuple[str, ...] | None = None) -> list[str]:
    """Names of the shipped presets whose file names start with ``prefix`` (the prefix removed)."""
    names = []
    for path in sorted(preset_folder().glob(f"{prefix}*.yaml")):
        if exclude_prefix and path.name.startswith(exclude_prefix):
            continue
        names.append(path.name.removesuffix(".yaml").removeprefix(prefix))
    return names


def preset_file(name: str, prefix: str = "", exclude_prefix: str | tuple[str, ...] | None = None) -> Path:
    """The YAML file of the shipped preset ``name`` (``configs/<prefix><name>.yaml``)."""
    path = preset_folder() / f"{prefix}{name}.yaml"
    if not path.is_file() or (exclude_prefix and path.name.startswith(exclude_prefix)):
        raise ConfigError(f"--preset {name!r} is unknown; presets: {preset_names(prefix, exclude_prefix)}")
    return path


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file; a missing file or a non-mapping is an error naming it."""
    path = local_path(path, "--config", "a YAML file of flags")
    if not path.is_file():
        raise MissingInputError(f"--config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config must be a mapping of field: value")
    return values


# -- configs made of sections ----------------------------------------------------------------
# A config dataclass may hold section dataclasses. A section annotated ``tyro.conf.OmitArgPrefixes``
# contributes flat flags (``--max-length``); any other section prefixes its flags with its name
# (``--sampling.steps``). ``tyro.conf.arg(name=...)`` renames a field's flag.


def _annotation(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(type, metadata)`` of a possibly ``Annotated`` type."""
    if typing.get_origin(tp) is typing.Annotated:
        return tp.__origin__, tp.__metadata__
    return tp, ()


def _flag_of(name: str, metadata: tuple[Any, ...]) -> str:
    for m in metadata:
        renamed = getattr(m, "name", None)
        if isinstance(renamed, str) and type(m).__name__ == "_ArgConfig":
            return renamed
    return name


def flag_table(cls: type) -> dict[str, tuple[str | None, str]]:
    """``{flag key: (section or None, field)}`` for every field of config ``cls``; a flag key is
    the flag without its dashes, ``_`` for ``-`` (``max_length``, ``sampling.steps``)."""
    table: dict[str, tuple[str | None, str]] = {}
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        base, meta = _annotation(hints[f.name])
        if not (dataclasses.is_dataclass(base) and isinstance(base, type)):
            table[_flag_of(f.name, meta)] = (None, f.name)
            continue
        prefix = "" if tyro.conf.OmitArgPrefixes in meta else f"{f.name}."
        inner = typing.get_type_hints(base, include_extras=True)
        for g in dataclasses.fields(base):
            table[prefix + _flag_of(g.name, _annotation(inner[g.name])[1])] = (f.name, g.name)
    return table


def flag_values(
    cls: type, values: Mapping[str, Any], where: str, aliases: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``values`` keyed by flag key. They may name flags (``max_length: 64``, old names in
    ``aliases``) or nest a section's fields under its name (``sampling: {steps: 8}``, as
    :func:`config_values` writes); an unknown name is an error naming it and ``where``."""
    table = flag_table(cls)
    by_path = {path: flag for flag, path in table.items()}
    sections = {section for section, _ in table.values() if section is not None}
    aliases = aliases or {}
    out: dict[str, Any] = {}
    unknown = []
    for key, value in values.items():
        key = aliases.get(key, key)
        if key in sections and isinstance(value, Mapping):
            for name, v in value.items():
                if (key, name) in by_path:
                    out[by_path[key, name]] = v
                else:
                    unknown.append(f"{key}.{name}")
        elif key in table:
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    return out


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """YAML and JSON read ``5`` as an int: float fields take it as ``5.0``."""
    hints = typing.get_type_hints(cls)
    floats = (float, float | None)
    return {k: float(v) if hints[k] in floats and isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in values.items()}


def build_config(cls: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
    """``cls`` from flag-keyed ``values`` (see :func:`flag_values`); absent fields take their defaults."""
    table = flag_table(cls)
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for flag, value in values.items():
        section, name = table[flag]
        (top if section is None else nested.setdefault(section, {}))[name] = value
    hints = typing.get_type_hints(cls, include_extras=True)
    for section, fields in nested.items():
        kind = _annotation(hints[section])[0]
        top[section] = kind(**_coerce(kind, fields))
    return cls(**_coerce(cls, top))


def config_values(config: Any) -> dict[str, Any]:
    """A config as a JSON-ready dict, sections nested under their names (what
    :func:`flag_values` reads back); tuples become lists, as JSON and YAML store them."""
    return dataclasses.asdict(config, dict_factory=lambda items: {k: _json_ready(v) for k, v in items})


def _json_ready(value: Any) -> Any:
    return [_json_ready(v) for v in value] if isinstance(value, (tuple, list)) else value


def attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under the fields of dataclass ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for field, doc in zip(body, body[1:]):
            if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and isinstance(doc, ast.Expr)
                    and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
                docs[field.target.id] = " ".join(doc.value.value.split())
    return docs


def source_fields(
    source: type, *, only: Sequence[str] | None = None, exclude: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None, optional: bool = False,
) -> list[tuple[str, Any, Any]]:
    """``(name, annotation, field)`` of the fields of dataclass (or ``eqx.Module``) ``source`` for
    :func:`dataclasses.make_dataclass`: its type (or its :data:`FLAG_TYPE` metadata), its default
    (or ``defaults[name]``), and as help the docstring written under the field. ``only`` and
    ``exclude`` choose fields by name; ``optional`` makes each ``T | None = None``."""
    hints, docs, defaults = typing.get_type_hints(source), attribute_docs(source), defaults or {}
    out = []
    for f in dataclasses.fields(source):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        kind = f.metadata.get(FLAG_TYPE, hints[f.name])
        if optional:
            kind, default = kind | None, None
        elif f.name in defaults:
            default = defaults[f.name]
            kind = kind | None if default is None else kind
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            raise TypeError(f"{source.__name__}.{f.name} has no default to give its flag")
        out.append((f.name, typing.Annotated[kind, tyro.conf.arg(help=docs.get(f.name))],
                    dataclasses.field(default=default)))
    return out


def takes_fields(
    source: type, *, only: Sequence[str] | None = None, exclude: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[type], type]:
    """Decorate a frozen dataclass (a config section) so that it also has the fields of ``source``,
    the object it builds (see :func:`source_fields`): each setting is declared once, on the object,
    and a field added there becomes a flag and a YAML key with no second edit. The decorated
    class's own fields, methods and checks stay; ``source``'s follow them."""

    def decorate(cls: type) -> type:
        own = {f.name for f in dataclasses.fields(cls)}
        added = [f for f in source_fields(source, only=only, exclude=exclude, defaults=defaults) if f[0] not in own]
        made = dataclasses.make_dataclass(cls.__name__, added, bases=(cls,), frozen=True)
        made.__module__, made.__qualname__, made.__doc__ = cls.__module__, cls.__qualname__, cls.__doc__
        return made

    return decorate


def optional_fields(cls: type, name: str, doc: str) -> type:
    """A frozen dataclass ``name`` with every field of dataclass ``cls`` as ``T | None = None`` and
    the same help: flags that change only the settings given (``SamplerSettings.replace``)."""
    made = dataclasses.make_dataclass(name, source_fields(cls, optional=True), frozen=True)
    made.__doc__ = doc
    return made


@dataclasses.dataclass(frozen=True)
class DryRunFlags:
    """Planning on hardware you do not have (docs/method.md#dry-run)."""

    dry_run: bool = False
    """Compile the program this command would run for --target and report its memory per device
    against the HBM, FLOPs, the compiler's time estimate and collectives; read no data, write nothing."""
    target: str = "local"
    """What to compile for: a TPU slice by its cloud name (v4-32, v5e-256, v5p-64, v6e-8) or topology
    (v5p:2x4x4; v5p:1x1x1 is one chip), an NVIDIA card with a count (h100, h100x8, h200, a100,
    a100-40), or local (this machine's devices)."""
    json: bool = False
    """Print one JSON object per compiled program instead of the table."""
    max_batch: bool = False
    """Also find the largest batch that fits the target (compiles several programs)."""
    estimate: bool = True
    """On TPU targets, also compile twins of the step with their layer loops unrolled for the
    compiler's FLOPs and time estimate (XLA counts a loop body once): two shallow ones scaled to the
    depth; --no-estimate reports memory only, in about half the time."""
    full_twin: bool = False
    """Estimate from the step unrolled at its full depth instead of the scaled shallow twins (slower:
    minutes to hours for ELF-M and ELF-L on a laptop; the two agree within 3% on ELF-B and ELF-M)."""
    epoch_rows: int | None = None
    """Rows in one epoch of the training data, for the time per epoch (a dry run reads no data)."""

    def __post_init__(self) -> None:
        if not self.dry_run:
            given = [flag for flag, on in (("--target", self.target != "local"), ("--json", self.json),
                                           ("--max-batch", self.max_batch), ("--epoch-rows", self.epoch_rows),
                                           ("--no-estimate", not self.estimate), ("--full-twin", self.full_twin))
                     if on]
            if given:
                raise ConfigError(f"{', '.join(given)} only apply with --dry-run")
        if self.epoch_rows is not None and self.epoch_rows < 1:
            raise ConfigError(f"--epoch-rows must be positive, got {self.epoch_rows}")


@dataclasses.dataclass(frozen=True)
class MeshFlags:
    """Devices."""

    data: typing.Annotated[int, tyro.conf.arg(name="mesh_data")] = -1
    """Devices on the data axis of the mesh (-1: all left after fsdp × tensor)."""
    fsdp: typing.Annotated[int, tyro.conf.arg(name="mesh_fsdp")] = 1
    """Devices on the fsdp axis: parameters (and in training EMA and optimizer state) are sharded over it."""
    tensor: typing.Annotated[int, tyro.conf.arg(name="mesh_tensor")] = 1
    """Devices on the tensor axis (split of the block matrices and the unembedding)."""

    @property
    def config(self) -> MeshConfig:
        """The device mesh's shape."""
        return MeshConfig(self.data, self.fsdp, self.tensor)


@dataclasses.dataclass(frozen=True)
class ProcessFlags:
    """Processes: one per host (TPU VM, GPU node) of a multi-host run, joined by jax.distributed
    (README, "Launching")."""

    coordinator_address: str | None = None
    """Multi-process runs: host:port of process 0 (with --num-processes and --process-id); SLURM,
    Open MPI, Cloud TPU VMs and GKE TPU pods are detected without flags."""
    num_processes: int | None = None
    """Multi-process runs: number of processes."""
    process_id: int | None = None
    """Multi-process runs: this process's index."""
    heartbeat_timeout_s: int = 60
    """Multi-process runs: a process silent this long is lost; every other one then exits (code 42)
    within about this time, naming it and the checkpoint a rerun resumes from (JAX's default: 100)."""
    shutdown_timeout_s: int = 120
    """Multi-process runs: how long a process that has finished waits at exit for the others (JAX's default: 300)."""
    init_timeout_s: int = 300
    """Multi-process runs: how long a starting process waits for all the others to join."""

    def __post_init__(self) -> None:
        for name in ("heartbeat_timeout_s", "shutdown_timeout_s", "init_timeout_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1 second, got {getattr(self, name)}")
        if self.num_processes is not None and self.num_processes < 1:
            raise ConfigError(f"--num-processes must be positive, got {self.num_processes}")


def rename_flags(argv: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """``argv`` with renamed flags (``--sample-steps`` → ``--sampling.steps``) in their new spelling."""
    out = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        if arg.startswith("--") and key in aliases:
            arg = "--" + aliases[key].replace("_", "-") + eq + value
        out.append(arg)
    return out


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value given to ``flag`` in ``argv`` (``--flag v`` or ``--flag=v``), or ``None``."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse_cli(
    cls: type[ConfigT], argv: Sequence[str], *, prefix: str = "", exclude_prefix: str | tuple[str, ...] | None = None,
    description: str | None = None, aliases: Mapping[str, str] | None = None,
) -> ConfigT:
    """Parse ``argv`` into ``cls``: ``--preset``/``--config`` YAML first, then tyro applies every
    other flag on top. ``aliases`` maps old flag keys to their new ones (in YAML and on the command
    line). An unknown preset, a missing file or an unknown YAML key raise
    :class:`~elf_eqx.errors.ConfigError`/:class:`~elf_eqx.errors.MissingInputError` naming it; bad
    values end as ``SystemExit`` with a one-line message."""
    argv = rename_flags(argv, aliases or {})
    values: dict[str, Any] = {}
    preset, config_file = flag_value(argv, "--preset"), flag_value(argv, "--config")
    if preset:
        path = preset_file(preset, prefix, exclude_prefix)
        values.update(flag_values(cls, read_yaml(path), str(path), aliases))
    if config_file:
        values.update(flag_values(cls, read_yaml(config_file), config_file, aliases))
    try:
        default = build_config(cls, values)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"error in {config_file or preset}: {err}") from None
    try:
        return tyro.cli(cls, args=argv, default=default, description=description)
    except ValueError as err:  # __post_init__ checks on the final values
        raise SystemExit(f"error: {err}") from None
