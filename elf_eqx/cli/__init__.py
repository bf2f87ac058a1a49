"""Machinery shared by the command-line programs: YAML presets and tyro flags, and the error policy."""
