"""``config.json`` of an exported model: :class:`ExportRecord`, the run record
(:class:`~elf_eqx.training.run_record.RunRecord`) of the model with what the folder holds.

The file is the run record's own JSON form (``family``, ``elf`` — the architecture —, ``encoder``,
``tokenizer``, ``data_spec``, ``run`` — the training config, whose sections hold the flow constants
(``objective``), the latent statistics (``data``) and the sampler defaults (``sampling``) —,
``distillation``, ``converted_from``, and the run record's ``version``), read by
:meth:`RunRecord.from_dict` exactly as a checkpoint's is, and beside it::

    "format": "elf_eqx", "format_version": 1,
    "export": {"weights": "ema", "step": 250, "origin": "runs/quickstart step 250 (ema weights, ELF-XS)",
               "encoder": {"source": "google-t5/t5-small", "bundled": "encoder" | null, "config": {...}},
               "tokenizer": {"source": "...", "files": ["tokenizer.json", ...]},
               "weights_files": ["model.safetensors"], "parameters": 1234, "dtype": "float32",
               "provenance": {"elf_eqx_version": ..., "exported_at": ..., "train_steps": ..., "tokens": ...,
                              "train_flops": ..., ...}}

One reader, :meth:`ExportRecord.from_dict`: a ``format_version`` newer than :data:`EXPORT_FORMAT_VERSION`
is refused in one line naming both versions (and a newer run record is, by the run record's reader).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from elf_eqx.encoders.sources import read_config
from elf_eqx.errors import IncompatibleModelError
from elf_eqx.io import storage
from elf_eqx.training.run_record import RunRecord

EXPORT_FORMAT = "elf_eqx"
"""``config.json``'s ``format``: what tells an exported elf_eqx model from any other ``config.json``."""
EXPORT_FORMAT_VERSION = 1
"""The version :meth:`ExportRecord.to_dict` writes."""
CONFIG_NAME = "config.json"
BUNDLED_ENCODER = "encoder"
"""The folder an export bundles the frozen encoder into (``--bundle-encoder``)."""
_RECORD_KEYS = ("version", "family", "elf", "encoder", "tokenizer", "data_spec", "run", "distillation",
                "converted_from")


@dataclasses.dataclass(frozen=True)
class EncoderEntry:
    """The frozen encoder of an exported model: the source it was trained with, where the folder
    holds a copy (``None``: a reference to ``source``, loaded from the hub), its configuration."""

    source: str | None
    bundled: str | None = None
    """The bundled copy's folder, relative to the export (``encoder``), or ``None``."""
    config: dict[str, Any] | None = None
    """The encoder's configuration (``model_type`` and its fields), when it could be read."""


@dataclasses.dataclass(frozen=True)
class ExportRecord:
    """What an exported folder is: the model's run record, which weights (EMA or raw) of which step
    of what, where its encoder and tokenizer are, its weight files, and how it was made."""

    run: RunRecord
    weights: Literal["ema", "raw"]
    step: int | None
    origin: str
    """What was exported (the loaded source's origin: its path, step, weights)."""
    encoder: EncoderEntry
    tokenizer_files: tuple[str, ...]
    weights_files: tuple[str, ...]
    parameters: int
    dtype: str
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Training steps, tokens and FLOPs, the elf_eqx version and time of the export, what it was read from."""
    version: ClassVar[int] = EXPORT_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.weights not in ("ema", "raw"):
            raise ValueError(f"weights must be 'ema' or 'raw', got {self.weights!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (:meth:`from_dict` reads it)."""
        return {
            "format": EXPORT_FORMAT,
            "format_version": self.version,
            **self.run.to_dict(),
            "export": {
                "weights": self.weights,
                "step": self.step,
                "origin": self.origin,
                "encoder": dataclasses.asdict(self.encoder),
                "tokenizer": {"source": self.run.tokenizer, "files": list(self.tokenizer_files)},
                "weights_files": list(self.weights_files),
                "parameters": self.parameters,
                "dtype": self.dtype,
                "provenance": self.provenance,
            },
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "config.json") -> "ExportRecord":
        """The record of ``values``; ``where`` names it in errors: not an elf_eqx export, a format
        version newer than this reader, an entry that does not read."""
        if not isinstance(values, Mapping) or values.get("format") != EXPORT_FORMAT:
            found = values.get("format") if isinstance(values, Mapping) else None
            raise IncompatibleModelError(f"{where} is not an elf_eqx export (its format is {found!r}, not "
                                         f"{EXPORT_FORMAT!r}); write one with python -m elf_eqx.export")
        version = values.get("format_version")
        if not isinstance(version, int):
            raise IncompatibleModelError(f"{where} has no integer format_version")
        if version > EXPORT_FORMAT_VERSION:
            raise IncompatibleModelError(f"{where} is an elf_eqx export of format version {version}, newer than this "
                                         f"elf_eqx reads (version {EXPORT_FORMAT_VERSION}); upgrade elf_eqx to read it")
        run = RunRecord.from_dict({k: values[k] for k in _RECORD_KEYS if k in values}, where=where)
        run.require("elf", "data_spec", where=where, purpose="build the exported network")
        export = values.get("export")
        if not isinstance(export, Mapping):
            raise IncompatibleModelError(f"{where} has no 'export' entry")
        try:
            encoder = EncoderEntry(**export["encoder"])
            return cls(run=run, weights=export["weights"], step=export.get("step"), origin=str(export["origin"]),
                       encoder=encoder, tokenizer_files=tuple(export["tokenizer"]["files"]),
                       weights_files=tuple(export["weights_files"]), parameters=int(export["parameters"]),
                       dtype=str(export["dtype"]), provenance=dict(export.get("provenance") or {}))
        except (KeyError, TypeError, ValueError) as err:
            reason = " ".join(str(err).split())
            raise IncompatibleModelError(f"{where}: its export entry cannot be read ({type(err).__name__}: "
                                         f"{reason})") from None


def read_config_json(folder: storage.AnyPath) -> dict[str, Any]:
    """``folder/config.json`` as a dict: missing, or not a JSON mapping, is a one-line error naming it."""
    return read_config(folder, ": not an exported elf_eqx model (write one with python -m elf_eqx.export)")


def is_export_config(path: storage.AnyPath) -> bool:
    """Whether the ``config.json`` at ``path`` is an elf_eqx export's (any version)."""
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(values, dict) and values.get("format") == EXPORT_FORMAT


def is_export_folder(path: storage.AnyPath) -> bool:
    """Whether ``path`` is a folder holding an elf_eqx export's ``config.json``."""
    return path.is_dir() and is_export_config(path / CONFIG_NAME)


def read_export_record(folder: storage.AnyPath) -> ExportRecord:
    """The :class:`ExportRecord` of the exported folder ``folder``."""
    return ExportRecord.from_dict(read_config_json(folder), where=str(folder / CONFIG_NAME))
