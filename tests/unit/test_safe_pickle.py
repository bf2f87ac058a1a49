"""The restricted unpickler: NumPy arrays and plain containers in, anything else refused unrun."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from elf_eqx.encoders.load import load_text_encoder
from elf_eqx.errors import UnsafePickleError
from elf_eqx.io.safe_pickle import safe_load, safe_loads


class _RunsShell:
    """Unpickling this would call ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_arrays_and_containers_round_trip(protocol):
    data = {
        "params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "f": np.asfortranarray(np.ones((2, 3)))},
        "strided": np.ones((4, 4))[:, ::2],
        "scalars": [np.float64(1.5), np.int32(3), 2, 0.5, True, None, "s", b"b"],
        "tuple": (1, (2, 3)),
    }
    out = safe_loads(pickle.dumps(data, protocol=protocol))
    assert out["scalars"] == data["scalars"] and out["tuple"] == data["tuple"]
    for key in ("w", "f"):
        np.testing.assert_array_equal(out["params"][key], data["params"][key])
        assert out["params"][key].dtype == data["params"][key].dtype
    np.testing.assert_array_equal(out["strided"], data["strided"])


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"params": _RunsShell(f"touch {marker}")}))
    with pytest.raises(UnsafePickleError) as info:
        safe_load(path)
    message = str(info.value)
    assert "system" in message and str(path) in message  # names the global and the file
    assert not marker.exists()
    with pytest.raises(UnsafePickleError):
        load_text_encoder(path)  # the encoder loader goes through the same gate
    assert not marker.exists()


def test_other_globals_are_refused():
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_loads(pickle.dumps(eval))
    with pytest.raises(UnsafePickleError, match="collections.OrderedDict"):
        safe_loads(pickle.dumps(__import__("collections").OrderedDict(a=1)))


def test_reference_encoder_pickle_loads(reference_dir):
    tree = safe_load(reference_dir / "t5_encoder.pkl")
    assert tree["params"]["shared"]["embedding"].shape == (60, 32)
