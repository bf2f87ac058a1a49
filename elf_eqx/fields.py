"""How an object's field says what flag a config makes of it (:func:`elf_eqx.cli.args.takes_fields`).

Settings are declared once, on the object that uses them (``FlowObjective``, ``ELFConfig``, …);
config sections take their flags from those declarations: the field's type, default and the
docstring written under it. Where the object annotates a looser run-time type than the flag
should parse to, the field's metadata says so under :data:`FLAG_TYPE`.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx

FLAG_TYPE = "flag_type"
"""Field metadata key: the type the field's flag parses to."""


def static_choice(kind: Any, default: str) -> Any:
    """A static ``eqx.Module`` field holding one of the ``Literal`` ``kind``'s strings: ``str`` at
    run time (the object's own check names a bad choice), ``kind`` for its flag."""
    return eqx.field(static=True, default=default, metadata={FLAG_TYPE: kind})
