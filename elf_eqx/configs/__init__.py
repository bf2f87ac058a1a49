"""Run presets (YAML) for ``python -m elf_eqx.train --preset NAME``; also reachable as ``configs/``."""
