"""The run record: what a run is, stored as the ``run_config`` of every checkpoint step
(:mod:`elf_eqx.training.checkpoint`) and read back by everything that reads a run — sampling,
converting, dry runs, sweeps, distillation's teacher (docs/method.md#distillation for its entry).

:class:`RunRecord` is written once (a training run: :meth:`elf_eqx.training.setup.TrainingRun.run_record`;
a converted release: :mod:`elf_eqx.convert`) and read by one reader, :meth:`RunRecord.from_dict`,
which reads every format stored so far:

- version 0, the records written before the version was stored: no ``family`` (runs written before
  the baselines: ELF), a flat run config (before the config had sections) or a partial one (a converted
  release keeps only the sections sampling needs) or none, no ``tokenizer`` (the encoder's), a
  ``data_spec`` without the fields added since, a distillation entry without ``decode_share``
  (the default of ``--decode-share``);
- version 1 (:data:`RUN_RECORD_VERSION`): every entry, ``version`` included.

A record newer than this reader is refused in one line naming both versions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from elf_eqx.config import ELFConfig
from elf_eqx.data.spec import DataSpec
from elf_eqx.distillation.config import RoundsSection
from elf_eqx.errors import IncompatibleModelError
from elf_eqx.families import ELF_FAMILY, Family, FamilyName, family_named
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.signature import UNSIGNED_ELF_FIELDS

RUN_RECORD_VERSION = 1
"""The version :meth:`RunRecord.to_dict` writes; records without one are version 0."""


def _build(cls: type, values: Mapping[str, Any], what: str, where: str) -> Any:
    """``cls(**values)``, a record entry that does not fit ``cls`` being one line naming it."""
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # a missing or unknown field, a value the class refuses
        reason = " ".join(str(err).split())
        raise IncompatibleModelError(f"{where}: its {what} entry cannot be read ({reason})") from None


@dataclasses.dataclass(frozen=True)
class DistillationRecord:
    """A distilled student's entry: what its distillation distils (the teacher, its first step count,
    the grid, ω, the CFG weight learnt), and this round (its number, the student's steps and the
    teacher's, the decode share of each batch)."""

    teacher: str
    """The teacher's origin (what was loaded: source, step, weights)."""
    from_steps: int
    time_grid: str
    omega: float
    cfg_weight: float
    round: int
    steps: int
    """The student's number of sampling steps."""
    teacher_steps: int
    decode_share: float = RoundsSection.decode_share
    """Records written before it was kept used the default."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON entry (:meth:`from_dict` reads it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "run record") -> "DistillationRecord":
        """The entry of ``values`` (older ones lack ``decode_share``)."""
        return _build(cls, values, "distillation", where)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a run is: its family, the network's architecture, the encoder and tokenizer, the data
    layout, the training config, and for a distilled student its distillation entry.

    ``elf``, ``encoder``, ``tokenizer`` and ``data_spec`` are ``None`` only in records that did not
    store them (checkpoints saved without a run config); :meth:`require` names what a reader needs.
    """

    family: FamilyName = ELF_FAMILY.name
    """``elf``, ``mdlm`` or ``ar`` (:mod:`elf_eqx.families`)."""
    elf: ELFConfig | None = None
    """The network's architecture (the baselines use its blocks' fields and ``vocab_size``) and
    the runtime fields it was trained with."""
    encoder: str | None = None
    """The frozen encoder's source (ELF's; a baseline's run records the configured one and loads none)."""
    tokenizer: str | None = None
    """The tokenizer's source (records that store none use the encoder's)."""
    data_spec: DataSpec | None = None
    run: TrainConfig = TrainConfig()
    """The resolved training config (a converted release: the sections sampling reads)."""
    distillation: DistillationRecord | None = None
    converted_from: str | None = None
    """What a converted checkpoint was converted from (``python -m elf_eqx.convert``)."""
    version: ClassVar[int] = RUN_RECORD_VERSION
    """The format this class writes; a record read from an older one is held in this one."""

    def __post_init__(self) -> None:
        family_named(self.family, "RunRecord.family")

    @property
    def model_family(self) -> Family:
        """The :class:`~elf_eqx.families.Family` of the run's network."""
        return family_named(self.family)

    @property
    def architecture(self) -> ELFConfig:
        """What the stored weights are: :attr:`elf` with the fields a resume may change (compute
        dtype, remat, dropout, platform, scan unrolling: :data:`~elf_eqx.training.signature.UNSIGNED_ELF_FIELDS`)
        at their defaults, as the checkpoint's signature holds it. The networks of a checkpoint are
        rebuilt with it."""
        stored = dataclasses.asdict(self.require("elf", purpose="build its network").elf)
        return ELFConfig(**{k: v for k, v in stored.items() if k not in UNSIGNED_ELF_FIELDS})

    def require(self, *entries: str, where: str = "the run record", purpose: str = "sample from it") -> "RunRecord":
        """This record, checked to hold ``entries`` (``elf``, ``encoder``, ``tokenizer``, ``data_spec``):
        one that lacks one is an :class:`~elf_eqx.errors.IncompatibleModelError` naming it, ``where``
        it was read and what it is needed for."""
        for entry in entries:
            if getattr(self, entry) is None:
                raise IncompatibleModelError(f"{where} has no {entry!r} entry; cannot {purpose}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored with checkpoints (:meth:`from_dict` reads it). Entries this record
        does not hold are left out, so a signature check compares only what both sides record."""
        values: dict[str, Any] = {
            "version": self.version,
            "family": self.family,
            "elf": None if self.elf is None else dataclasses.asdict(self.elf),
            "encoder": self.encoder,
            "tokenizer": self.tokenizer,
            "data_spec": None if self.data_spec is None else self.data_spec.to_dict(),
            "run": self.run.to_dict(),
            "distillation": None if self.distillation is None else self.distillation.to_dict(),
            "converted_from": self.converted_from,
        }
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "run record") -> "RunRecord":
        """The record of ``values``, in any format stored so far (the module docstring lists them);
        ``None`` (a checkpoint saved without a run config) is an empty record. ``where`` names the
        record in errors: a version newer than :data:`RUN_RECORD_VERSION`, an entry that does not read."""
        values = dict(values or {})
        version = int(values.get("version", 0))
        if version > RUN_RECORD_VERSION:
            raise IncompatibleModelError(f"{where} is a run record of version {version}, newer than this elf_eqx "
                                         f"reads (version {RUN_RECORD_VERSION}); upgrade elf_eqx to read it")
        elf, spec, distilled = values.get("elf"), values.get("data_spec"), values.get("distillation")
        encoder = values.get("encoder")
        # runs written before the baselines store no family: they are ELF runs
        family = family_named(values.get("family") or ELF_FAMILY.name, f"{where}: stored family")
        return cls(
            family=family.name,
            elf=None if elf is None else _build(ELFConfig, elf, "elf", where),
            encoder=encoder,
            tokenizer=values.get("tokenizer") or encoder,  # the encoder's own tokenizer by default
            data_spec=None if spec is None else _build(DataSpec, spec, "data_spec", where),
            # nested sections, the flat run config of checkpoints written before them, or none
            run=TrainConfig.from_dict(values.get("run") or {}, where=f"{where}: its run config"),
            distillation=None if not distilled else DistillationRecord.from_dict(distilled, where),
            converted_from=values.get("converted_from"),
        )
