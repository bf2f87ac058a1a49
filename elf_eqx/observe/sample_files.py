"""Reading back the sample files a training run writes (``samples/step_<N>.txt``, written by
:meth:`elf_eqx.training.setup.TrainingRun.write_samples`): a ``# step N, <sampler>, <k> NFE`` header,
then one ``[i] text`` block per sample, blocks separated by a blank line."""

from __future__ import annotations

import re
from pathlib import Path

from elf_eqx.io import storage

_SAMPLE = re.compile(r"^\[(\d+)\] ?", re.MULTILINE)
_FILE = re.compile(r"^step_(\d+)\.txt$")


def read_sample_file(path: str | Path | storage.AnyPath) -> list[str]:
    """The sample texts of one file, in order (``[]`` for a file that is not there)."""
    try:
        text = storage.as_path(path).read_text()
    except OSError:
        return []
    marks = list(_SAMPLE.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return [text[m.end():end].rstrip("\n") for m, end in zip(marks, ends)]


def sample_header(path: str | Path | storage.AnyPath) -> str:
    """The file's first line without its ``#`` (the step, sampler and NFE), or ``""``."""
    try:
        with storage.as_path(path).open() as f:
            first = f.readline()
    except OSError:
        return ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


def sample_files(run_dir: str | Path | storage.AnyPath) -> list[tuple[int, storage.AnyPath]]:
    """``(step, path)`` of every sample file of a run, by step."""
    folder = storage.as_path(run_dir) / "samples"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _FILE.match(p.name))]
    return sorted(found)
