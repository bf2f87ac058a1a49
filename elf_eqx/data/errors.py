"""The one error type of the data pipeline: :class:`elf_eqx.errors.DataError`, re-exported here."""

from __future__ import annotations

from elf_eqx.errors import DataError

__all__ = ["DataError"]
