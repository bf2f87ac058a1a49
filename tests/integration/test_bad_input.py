"""Every known bad input to every command line ends with exit code 2 and exactly one line on stderr
naming the culprit (``--debug`` brings the traceback back). Most cases call ``main(argv)`` in
process; a few run the real command."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from run_fixtures import write_run

REPO = Path(__file__).resolve().parents[2]
TINY_TRAIN = ["--preset", "quickstart", "--model", "ELF-T", "--global-batch", "4", "--max-length", "16",
              "--max-steps", "1"]


PROGRESS = re.compile(r"\d+%\|")  # data preparation's progress bars, not part of the error


class _RunsShell:
    def __reduce__(self):
        return os.system, ("echo pwned",)


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_dir) -> dict[str, Path]:
    """The bad inputs, written once."""
    root = tmp_path_factory.mktemp("bad_input")
    made = {
        "bogus.yaml": "bogus_key: 1\n",
        "broken.yaml": "model: [ELF-T\n",
        "empty.jsonl": "",
        "garbled.jsonl": '{"text": "fine"}\nnot json at all\n',
    }
    paths = {name: root / name for name in made}
    for name, text in made.items():
        paths[name].write_text(text)
    paths["evil.pkl"] = root / "evil.pkl"
    paths["evil.pkl"].write_bytes(pickle.dumps({"params": _RunsShell()}))
    corpus = root / "chapters.jsonl"
    corpus.write_text("\n".join((shared_dir / "data" / "kjv" / "valid.jsonl").read_text().splitlines()[:4]) + "\n")
    paths["corpus"] = corpus
    paths["root"] = root
    return paths


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("bad_input_run") / "run", conditional=True)


def fails_in_one_line(main, argv: list[str], culprit: str, capfd) -> str:
    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert exc.value.code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and culprit in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


TRAIN_CASES = {
    "unknown YAML key": (lambda f: ["--config", str(f["bogus.yaml"])], "['bogus_key']"),
    "invalid YAML": (lambda f: ["--config", str(f["broken.yaml"])], "broken.yaml"),
    "missing config file": (lambda f: ["--config", str(f["root"] / "none.yaml")], "none.yaml"),
    "unknown preset": (lambda f: ["--preset", "nope"], "'nope'"),
    "bad flag value": (lambda f: ["--max-steps", "abc"], "--max-steps"),
    "unknown flag": (lambda f: ["--bogus"], "--bogus"),
    "non-positive value": (lambda f: ["--save-every", "0"], "--save-every"),
    "unknown model": (lambda f: ["--model", "ELF-Q"], "ELF-Q"),
    "missing data file": (lambda f: [*TINY_TRAIN, "--data", str(f["root"] / "nowhere.jsonl")], "nowhere.jsonl"),
    "empty data file": (lambda f: [*TINY_TRAIN, "--data", str(f["empty.jsonl"])], "empty.jsonl"),
    "unsafe encoder pickle": (lambda f: [*TINY_TRAIN, "--data", str(f["corpus"]), "--encoder", str(f["evil.pkl"]),
                                          "--tokenizer", "offline-minilm"],
                              "posix.system"),
    "mesh larger than the host": (lambda f: [*TINY_TRAIN, "--data", str(f["corpus"]), "--mesh-data", "4096"], "4096"),
    "resume step not saved": (lambda f: [*TINY_TRAIN, "--data", str(f["corpus"]), "--resume-step", "5"], "step 5"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train(case, files, tmp_path, capfd):
    from elf_eqx.train import main

    argv, culprit = TRAIN_CASES[case]
    fails_in_one_line(main, [*argv(files), "--output-dir", str(tmp_path / "out"),
                             "--cache-dir", str(files["root"] / "cache")], culprit, capfd)


SAMPLE_CASES = {
    "missing source": (lambda f, r: [str(f["root"] / "no_such_run")], "no_such_run"),
    "unknown preset": (lambda f, r: [str(r), "--preset", "nope"], "'nope'"),
    "unknown YAML key": (lambda f, r: [str(r), "--config", str(f["bogus.yaml"])], "['bogus_key']"),
    "non-positive steps": (lambda f, r: [str(r), "--steps", "0"], "--steps"),
    "missing step": (lambda f, r: [str(r), "--step", "99"], "step 99"),
    "missing input file": (lambda f, r: [str(r), "--input", str(f["root"] / "in.jsonl")], "in.jsonl"),
    "unsafe encoder pickle": (lambda f, r: [str(r), "--prompt", "Hi.", "--encoder", str(f["evil.pkl"])], "posix.system"),
}


@pytest.mark.parametrize("case", list(SAMPLE_CASES))
def test_sample(case, files, run_dir, tmp_path, capfd):
    from elf_eqx.sample import main

    argv, culprit = SAMPLE_CASES[case]
    fails_in_one_line(main, [*argv(files, run_dir), "--output", str(tmp_path / "s.jsonl")], culprit, capfd)


EVAL_CASES = {
    "missing samples file": (lambda f: ["--samples", str(f["root"] / "none.jsonl")], "none.jsonl"),
    "empty samples file": (lambda f: ["--samples", str(f["empty.jsonl"])], "empty.jsonl"),
    "garbled samples file": (lambda f: ["--samples", str(f["garbled.jsonl"])], "garbled.jsonl"),
    "unknown flag": (lambda f: ["--samples", str(f["empty.jsonl"]), "--bogus"], "--bogus"),
}


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_eval(case, files, tmp_path, capfd):
    from elf_eqx.eval import main

    argv, culprit = EVAL_CASES[case]
    fails_in_one_line(main, argv(files), culprit, capfd)


CONVERT_CASES = {
    "missing source": (lambda f, r, out: [str(f["root"] / "no_such_ckpt"), str(out)], "no_such_ckpt"),
    "bad weights choice": (lambda f, r, out: [str(r), str(out), "--weights", "zzz"], "--weights"),
    "output holds checkpoints": (lambda f, r, out: [str(r), str(r)], "already holds checkpoints"),
    "missing step": (lambda f, r, out: [str(r), str(out), "--step", "99"], "step 99"),
}


@pytest.mark.parametrize("case", list(CONVERT_CASES))
def test_convert(case, files, run_dir, tmp_path, capfd):
    from elf_eqx.convert import main

    argv, culprit = CONVERT_CASES[case]
    fails_in_one_line(main, argv(files, run_dir, tmp_path / "converted"), culprit, capfd)


def test_debug_flag_shows_the_traceback(files, tmp_path):
    from elf_eqx.train import main

    with pytest.raises(ValueError, match="bogus_key"):
        main(["--config", str(files["bogus.yaml"]), "--debug", "--output-dir", str(tmp_path)])


REAL_CASES = {
    "train": (lambda f: ["--config", str(f["bogus.yaml"])], "['bogus_key']"),
    "sample": (lambda f: [str(f["root"] / "no_such_run"), "--steps", "0"], "--steps"),
}


@pytest.mark.parametrize("command", list(REAL_CASES))
def test_real_commands(command, files):
    argv, culprit = REAL_CASES[command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", f"elf_eqx.{command}", *argv(files)], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and culprit in lines[0], proc.stderr
