"""Compile for hardware this machine does not have, and read what the compiler says about it.

JAX compiles for a whole TPU slice or NVIDIA card on a CPU-only machine: libtpu (``jax[tpu]``)
and the CUDA plugin (``jax[cuda12]``) each describe *compile-only* devices for a topology, and a
program lowered with shardings on a mesh of them compiles as it would on the real chips. XLA then
reports the per-device memory of the program and, on TPU, its cost model's step-time estimate.

Pieces, one job each:

- :mod:`elf_eqx.aot.targets`: :class:`Target` and :func:`parse_target`, the one spelling of
  ``--target`` across the command lines (``v5p-64``, ``v5p:2x4x4``, ``h100x8``, ``local``...),
  with the hardware facts a report needs (chips, hosts, HBM, peak FLOP/s).
- :mod:`elf_eqx.aot.devices`: a target's compile-only devices (``Target.devices()``), with the
  missing-extra and libtpu-lock failures turned into one-line :class:`~elf_eqx.errors.ConfigError`.
- ``elf_eqx/aot/specs/*.txtpb``: the GPU target specs (XLA's published hardware facts per card).
- :mod:`elf_eqx.aot.compile`: lower and compile a function on a target's mesh, timed.
- :mod:`elf_eqx.aot.hlo`: collectives and loops read from the compiled program's HLO text.
- :mod:`elf_eqx.aot.analysis`: a plain-dict report of one compiled program.
- :mod:`elf_eqx.aot.render`: reports as a text table, every estimate labelled as the compiler's.

Nothing here downloads: a missing extra is an error naming the ``pip install`` command.
"""

from __future__ import annotations

from elf_eqx.aot.analysis import REQUIRED_KEYS, analyze
from elf_eqx.aot.compile import CompiledProgram, abstract, compile_for_target, per_device_bytes, target_mesh
from elf_eqx.aot.render import render_reports
from elf_eqx.aot.targets import TARGET_FORMS, Target, parse_target

__all__ = [
    "REQUIRED_KEYS",
    "TARGET_FORMS",
    "CompiledProgram",
    "Target",
    "abstract",
    "analyze",
    "compile_for_target",
    "parse_target",
    "per_device_bytes",
    "render_reports",
    "target_mesh",
]
