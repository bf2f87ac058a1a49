"""A pickle reader that admits only NumPy arrays and plain containers.

A pickle names the callables that rebuild its objects (``module.global``), and loading it calls
them, so an untrusted pickle can run any code. This reader resolves only the globals that
rebuild NumPy arrays, dtypes and scalars; containers, strings and numbers need no global at all.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# UnsafePickleError is imported from here too.
from elf_eqx.errors import BadWeightsError, MissingInputError, UnsafePickleError


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call as ``_codecs.encode`` to rebuild ``bytes``; only latin-1."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(f"_codecs.encode is only allowed as (str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_core(submodule: str, name: str) -> Any:
    """``numpy._core.<submodule>.<name>`` (numpy 2) or ``numpy.core...`` (numpy 1), whichever exists."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this NumPy has no {submodule}.{name}")


_FIXED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}
# numpy 2 moved numpy.core to numpy._core; a file names the one of the NumPy that wrote it.
_CORE: dict[tuple[str, str], tuple[str, str]] = {
    (f"{package}.{sub}", name): (sub, name)
    for package in ("numpy.core", "numpy._core")
    for sub, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _FIXED:
            return _FIXED[key]
        if key in _CORE:
            return _numpy_core(*_CORE[key])
        raise UnsafePickleError(
            f"{self._source}: refusing to load global {module}.{name}; only NumPy arrays and "
            "plain containers are allowed in this pickle"
        )


def safe_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only NumPy arrays/dtypes/scalars and plain containers.

    ``source`` names the data in error messages. Raises :class:`UnsafePickleError` naming the
    first disallowed ``module.global`` before anything it names is called.
    """
    return _RestrictedUnpickler(io.BytesIO(data), source).load()


def safe_load(path: str | Path) -> Any:
    """Unpickle the file at ``path`` with the restrictions of :func:`safe_loads`; a file that is
    not a whole pickle is a :class:`~elf_eqx.errors.BadWeightsError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"pickle file not found: {path}")
    try:
        return safe_loads(path.read_bytes(), source=str(path))
    except UnsafePickleError:
        raise
    except Exception as err:  # damaged or foreign bytes: unpickling raises many types (EOFError, ...)
        raise BadWeightsError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err
