"""The names ``import elf_eqx`` offers (its module docstring): each is the object its module
defines, imported on first use."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import elf_eqx


def test_every_exported_name_is_the_object_its_module_defines():
    for name, module in elf_eqx._EXPORTS.items():
        value = getattr(elf_eqx, name)
        assert value is getattr(importlib.import_module(module), name), name
        assert getattr(value, "__module__", module) == module, (name, value.__module__)  # where it is defined
    assert sorted(elf_eqx._EXPORTS) == elf_eqx.__all__ and set(elf_eqx.__all__) <= set(dir(elf_eqx))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Samplr'"):
        elf_eqx.Samplr  # noqa: B018


def test_importing_the_package_imports_none_of_its_modules():
    loaded = subprocess.run([sys.executable, "-c", "import sys, elf_eqx; "
                             "print(sorted(m for m in sys.modules if m.startswith('elf_eqx.')))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
