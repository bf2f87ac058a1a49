"""Prepared data (``python -m elf_eqx.prepare``, elf_eqx/data/prepared.py): the shards hold the rows
the datasets pipeline lays out, a loader over them yields the same batches (per process, in order,
after a restore), each process reads only its own rows, and a mismatched run is refused in one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from elf_eqx.data import DataSpec, Loader, prepare_data
from elf_eqx.errors import DataError
from elf_eqx.data.pipeline import open_prepared, run_data
from elf_eqx.data.prepared import MANIFEST, PreparedRows, is_prepared, write_prepared
from elf_eqx.encoders.load import load_tokenizer
from elf_eqx.prepare import main as prepare_main
from helpers import assert_same_batches


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("offline-minilm")


@pytest.fixture(scope="module")
def reference(tokenizer, tmp_path_factory):
    spec = DataSpec.from_tokenizer(tokenizer, 16, packing=True)
    return spec, prepare_data("embedded", tokenizer, spec, cache_dir=tmp_path_factory.mktemp("cache"))


def test_prepared_rows_are_the_laid_out_rows(reference, tmp_path):
    spec, data = reference
    write_prepared(data.rows, spec, tmp_path / "p", conditional=False, rows_per_shard=100)
    rows = PreparedRows(str(tmp_path / "p"))
    assert len(rows) == len(data.rows) and len(rows.names) == -(-len(data.rows) // 100)
    picked = [0, 99, 100, 101, len(rows) - 1, 5]
    expected = data.rows.select(picked)
    for got, want in zip(rows.fetch(np.array(picked)), expected["input_ids"]):
        assert got.tolist() == list(want)
    assert rows.cond_lengths[picked].tolist() == list(expected["cond_length"])
    assert rows.rows_read == len(picked)


def test_each_process_reads_only_its_rows_in_the_local_loaders_order(reference, tmp_path):
    spec, data = reference
    write_prepared(data.rows, spec, tmp_path / "p", conditional=False, rows_per_shard=64)
    for process in range(2):
        prepared = PreparedRows(str(tmp_path / "p"))
        mine = Loader(prepared, spec, 8, seed=3, process_index=process, process_count=2)
        theirs = Loader(data.rows, spec, 8, seed=3, process_index=process, process_count=2)
        assert_same_batches(mine, theirs, 5)
        assert prepared.rows_read == 5 * 4, "only this process's 4 rows of each global batch of 8"
        state = mine.state()
        resumed = Loader(PreparedRows(str(tmp_path / "p")), spec, 8, seed=3, process_index=process, process_count=2)
        resumed.restore(state)
        np.testing.assert_array_equal(next(resumed)["input_ids"], next(theirs)["input_ids"])


def test_prepare_cli_and_a_run_that_does_not_fit(tokenizer, tmp_path, capsys):
    out = tmp_path / "kjv"
    args = ["--data", "embedded", "--tokenizer", "offline-minilm", "--max-length", "16", "--packing"]
    prepare_main([*args, "--output", str(out)])
    assert (out / MANIFEST).is_file() and is_prepared(str(out)) and not is_prepared("embedded")
    assert "rows/s" in capsys.readouterr().out
    # two workers (a subprocess: datasets' workers pickle what pytest's captured stdout cannot) write the same shards
    done = subprocess.run([sys.executable, "-m", "elf_eqx.prepare", *args, "--output", str(tmp_path / "two"),
                           "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("shard-00000.tokens", "shard-00000.lengths.npy"):
        assert (tmp_path / "two" / name).read_bytes() == (out / name).read_bytes()
    spec = DataSpec.from_tokenizer(tokenizer, 16, packing=True)
    data = run_data(str(out), tokenizer, spec)
    assert isinstance(data.rows, PreparedRows)
    with pytest.raises(DataError, match="max_length: prepared 16, this run 32"):
        open_prepared(str(out), tokenizer, DataSpec.from_tokenizer(tokenizer, 32, packing=True))
    with pytest.raises(SystemExit):  # never replaced without --overwrite
        prepare_main(["--data", "embedded", "--output", str(out), "--tokenizer", "offline-minilm", "--max-length", "16"])
    assert "exists" in capsys.readouterr().err


def test_several_processes_prepare_once_into_the_shared_cache(reference, tokenizer, tmp_path):
    spec, data = reference
    first = run_data("embedded", tokenizer, spec, cache_dir=str(tmp_path), process_index=0, process_count=2)
    second = run_data("embedded", tokenizer, spec, cache_dir=str(tmp_path), process_index=1, process_count=2, wait=5.0)
    assert len(first.rows) == len(second.rows) == len(data.rows)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("prepared-")]) == 1
    with pytest.raises(DataError, match="waited 0.5 s for process 0"):
        run_data("embedded", tokenizer, DataSpec.from_tokenizer(tokenizer, 24), cache_dir=str(tmp_path),
                 process_index=1, process_count=2, wait=0.5)
