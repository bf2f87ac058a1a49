"""The one error policy: an expected failure is an ``elf_eqx.errors.UserError`` (one line, exit 2);
anything else is a bug and keeps its traceback (README, "Errors")."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import elf_eqx
from elf_eqx import errors
from elf_eqx.cli.errors import EXIT_CODE, CLIError, one_line

REPO = Path(__file__).resolve().parents[2]
CLASSES = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if cls.__module__ == errors.__name__]
BUILT_IN = {
    errors.ConfigError: ValueError, errors.MeshError: ValueError, errors.DataError: ValueError,
    errors.MissingInputError: FileNotFoundError, errors.OutputExistsError: FileExistsError,
    errors.IncompatibleModelError: ValueError, errors.BadWeightsError: ValueError,
    errors.CheckpointMismatchError: ValueError, errors.UnsafePickleError: pickle.UnpicklingError,
    errors.NonFiniteLoss: RuntimeError,
}


def test_every_class_is_a_user_error_and_its_built_in():
    assert errors.UserError in CLASSES and len(CLASSES) >= 11
    for cls in CLASSES:
        assert issubclass(cls, errors.UserError), cls
        assert isinstance(cls.hint, str), cls
    for cls, base in BUILT_IN.items():
        assert issubclass(cls, base), (cls, base)
    assert not issubclass(errors.UnreadableCheckpointError, ValueError)  # an `except ValueError` must not hide it


def test_each_error_class_has_one_home_and_no_module_re_exports_a_name():
    """Errors are imported from :mod:`elf_eqx.errors` (the few specialised subclasses from the module
    that raises them), and a module's ``__all__`` names only what the module itself defines."""
    from elf_eqx.encoders.load import IncompatibleEncoderError

    assert issubclass(IncompatibleEncoderError, errors.IncompatibleModelError)
    assert issubclass(CLIError, errors.UserError)
    elsewhere = []
    for info in pkgutil.walk_packages(elf_eqx.__path__, "elf_eqx."):
        if info.ispkg:
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            home = getattr(value, "__module__", None) if inspect.isclass(value) or inspect.isfunction(value) else None
            if home is not None and home != module.__name__:
                elsewhere.append(f"{info.name}.{name} (defined in {home})")
    assert elsewhere == []
    assert not (REPO / "elf_eqx" / "data" / "errors.py").exists()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_hint_is_added_only_when_the_message_says_nothing_to_do(cls):
    bare = one_line(cls("runs/x: something is off"))
    assert bare.startswith("error: runs/x: something is off")
    assert bare == (f"error: runs/x: something is off; {cls.hint}" if cls.hint else "error: runs/x: something is off")
    said = one_line(cls("runs/x: something is off; do this"))
    assert said == "error: runs/x: something is off; do this"


def test_a_flag_parser_message_and_a_cli_error_are_one_line():
    assert one_line("error in a.yaml: bad\n  value") == "error: a.yaml: bad value"
    assert one_line(CLIError("bad flag", "--x", "see --help")) == "error: bad flag: --x; see --help"


def _eval_main(monkeypatch, raise_this: BaseException):
    """``python -m elf_eqx.eval``'s main, with the samples reader (which it calls) raising ``raise_this``."""
    import elf_eqx.eval as cli

    def read_samples(path):
        raise raise_this

    monkeypatch.setattr(cli, "read_samples", read_samples)
    return cli.main


@pytest.mark.parametrize("bug", [KeyError("oops"), ValueError("oops"), OSError("oops"), TypeError("oops")],
                         ids=lambda e: type(e).__name__)
def test_a_bug_in_a_command_keeps_its_type_and_traceback(bug, monkeypatch, tmp_path, capfd):
    main = _eval_main(monkeypatch, bug)
    with pytest.raises(type(bug), match="oops") as exc:
        main(["--samples", str(tmp_path / "s.jsonl")])
    assert exc.value is bug and not isinstance(exc.value, SystemExit)
    assert "read_samples" in [entry.name for entry in exc.traceback]  # raised where it happened
    assert "error:" not in capfd.readouterr().err


@pytest.mark.parametrize("module, name, argv", [
    ("elf_eqx.train", "train", ["--preset", "quickstart"]),
    ("elf_eqx.sample", "sample", ["runs/x"]),
    ("elf_eqx.convert", "convert", ["runs/x", "out"]),
])
def test_a_key_error_inside_each_command_propagates(module, name, argv, monkeypatch):
    import importlib

    cli = importlib.import_module(module)

    def body(cfg):
        return {}["oops"]

    monkeypatch.setattr(cli, name, body)
    with pytest.raises(KeyError, match="oops"):
        cli.main(argv)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_user_error_is_one_line_and_exit_2(cls, monkeypatch, tmp_path, capfd):
    main = _eval_main(monkeypatch, cls(f"{tmp_path / 's.jsonl'}:3: not\nwhat it should be"))
    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--samples", str(tmp_path / "s.jsonl")])
    err = capfd.readouterr().err
    assert exc.value.code == cls.exit_code == (errors.RETRYABLE_EXIT if cls is errors.PeerLostError else EXIT_CODE)
    assert err.splitlines() == [str(exc.value)], err
    assert err.startswith(f"error: {tmp_path / 's.jsonl'}:3: not what it should be") and "Traceback" not in err


def test_debug_lets_a_user_error_through(monkeypatch, tmp_path):
    main = _eval_main(monkeypatch, errors.DataError("s.jsonl:3: bad"))
    with pytest.raises(errors.DataError, match="s.jsonl:3: bad"):
        main(["--samples", str(tmp_path / "s.jsonl"), "--debug"])
    monkeypatch.setenv("ELF_DEBUG", "1")
    with pytest.raises(errors.DataError):
        main(["--samples", str(tmp_path / "s.jsonl")])


def test_a_bug_ends_the_real_command_with_exit_1_and_a_traceback(tmp_path):
    script = ("import elf_eqx.eval as cli\n"
              "def read_samples(path):\n"
              "    return {}['oops']\n"
              "cli.read_samples = read_samples\n"
              f"cli.main(['--samples', {str(tmp_path / 's.jsonl')!r}])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "KeyError: 'oops'" in proc.stderr
    assert "error:" not in proc.stderr.splitlines()[-1]


def test_translated_third_party_failures_name_the_input(tmp_path):
    from elf_eqx.cli.args import read_yaml
    from elf_eqx.encoders.load import load_encoder_config, load_tokenizer
    from elf_eqx.encoders.sources import read_config
    from elf_eqx.io.jsonl import json_lines
    from elf_eqx.io.safe_pickle import safe_load
    from elf_eqx.io.safetensors_io import read_safetensors

    (tmp_path / "latin1.yaml").write_bytes("model: caf\xe9\n".encode("latin1"))
    with pytest.raises(errors.ConfigError, match="latin1.yaml: not valid YAML"):
        read_yaml(tmp_path / "latin1.yaml")
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin1"))
    with pytest.raises(errors.DataError, match="latin1.jsonl: not UTF-8"):
        list(json_lines(tmp_path / "latin1.jsonl", "--samples"))
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(errors.BadWeightsError, match="config.json: not valid JSON"):
        read_config(folder)
    (folder / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(errors.IncompatibleModelError, match="enc: .*vocab_size"):
        load_encoder_config(folder)
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(errors.IncompatibleModelError, match="unsupported encoder model_type 'gpt2'"):
        load_encoder_config(folder)
    empty = tmp_path / "no_tokenizer"
    empty.mkdir()
    with pytest.raises(errors.UserError, match="could not load a tokenizer from .*no_tokenizer"):
        load_tokenizer(empty)
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    cut_short = len(header).to_bytes(8, "little") + header + b"\0" * 8
    for name, data in [("empty.safetensors", b""), ("cut_short.safetensors", cut_short)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(errors.BadWeightsError, match=name):
            read_safetensors(tmp_path / name)
    with pytest.raises(errors.MissingInputError, match="none.safetensors"):
        read_safetensors(tmp_path / "none.safetensors")
    (tmp_path / "cut_short.pkl").write_bytes(pickle.dumps({"params": {"w": [1.0, 2.0]}})[:-5])
    with pytest.raises(errors.BadWeightsError, match="cut_short.pkl: not a readable pickle"):
        safe_load(tmp_path / "cut_short.pkl")
