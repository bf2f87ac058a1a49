"""``python -m elf_eqx.convert``: a release written once into our orbax format reads back with the
same weights and settings, through both ``load_model_from_checkpoint`` and ``load_model_source``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from elf_eqx.training.run_directory import load_model_from_checkpoint
from elf_eqx.convert import main as convert_main
from elf_eqx.encoders.load import load_text_encoder
from elf_eqx.data import DataSpec
from elf_eqx.release.model_source import load_model_source
from elf_eqx.training.run_directory import open_run, read_run_record
from test_release import ode_tokens

SETTINGS = ("tokenizer", "latent_mean", "latent_std", "layout",
            "flow", "sampling", "step")


@pytest.fixture(scope="module")
def cases(reference_dir):
    return dict(np.load(reference_dir / "elf_cases.npz"))


def test_convert_writes_our_format_once(reference_dir, cases, tmp_path):
    out = tmp_path / "converted"
    convert_main([str(reference_dir / "checkpoint_1234"), str(out), "--weights", "both", "--copy-encoder"])
    assert (out / "t5_encoder.pkl").is_file() and sorted(p.name for p in (out / "checkpoints").iterdir()) == ["1234"]
    np.testing.assert_array_equal(ode_tokens(load_model_from_checkpoint(out), cases), cases["ode_tokens"])

    release = load_model_source(str(reference_dir / "checkpoint_1234"))
    bundle = load_model_source(str(out))
    np.testing.assert_array_equal(ode_tokens(bundle.model, cases), cases["ode_tokens"])
    assert {f: getattr(bundle, f) for f in SETTINGS} == {f: getattr(release, f) for f in SETTINGS}
    assert bundle.encoder == str((out / "t5_encoder.pkl").absolute()) and bundle.kind == "run"
    load_text_encoder(bundle.encoder)
    record, step = read_run_record(out)
    with open_run(out) as run:
        assert run.manager.metadata(step)["metadata"]["weights"] == "both"
    assert step == 1234 and record.converted_from == release.origin and record.elf == release.model.config
    assert record.run.sampling.settings_for(record.model_family) == release.sampling and record.run.objective.flow == release.flow
    assert record.data_spec == DataSpec(vocab_size=50, pad_id=0, eos_id=1, max_length=1024, max_input_length=None,
                                        pad_mode="pad", packing=False)
    raw = load_model_source(str(out), weights="raw")
    reference_raw = load_model_source(str(reference_dir / "checkpoint_1234"), weights="raw")
    np.testing.assert_array_equal(raw.model.unembed.weight, reference_raw.model.unembed.weight)

    with pytest.raises(SystemExit, match="already holds checkpoints"):
        convert_main([str(reference_dir / "checkpoint_1234"), str(out)])
    moved = tmp_path / "moved"
    shutil.move(out, moved)  # the copied encoder travels with the directory
    assert load_model_source(str(moved / "checkpoints" / "1234")).encoder == str((moved / "t5_encoder.pkl").absolute())


def test_convert_ema_only_a_task_and_our_own_runs(reference_dir, cases, tmp_path):
    release = tmp_path / "release"
    release.mkdir()
    shutil.copy(reference_dir / "checkpoint_1234", release / "checkpoint_1234")
    out = tmp_path / "xsum"
    convert_main([str(release), str(out), "--task", "xsum", "--encoder", "offline-minilm"])
    bundle = load_model_source(str(out / "checkpoints"))
    assert (bundle.layout.max_length, bundle.layout.max_input_length, bundle.layout.pad_mode) == (1088, 1024, "eos")
    assert bundle.sampling.method == "ode" and bundle.encoder == "offline-minilm"
    with pytest.raises(ValueError, match="holds only EMA weights"):
        load_model_source(str(out), weights="raw")

    again = tmp_path / "again"  # one of our runs converts too (its run config is kept)
    convert_main([str(out), str(again)])
    np.testing.assert_array_equal(ode_tokens(load_model_source(str(again)).model, cases), cases["ode_tokens"])
    assert read_run_record(again)[0].data_spec.max_input_length == 1024


def test_convert_errors_and_help(reference_dir, tmp_path, capsys):
    with pytest.raises(SystemExit, match="model source not found"):
        convert_main(["./missing", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="--copy-encoder: the encoder 'google-t5/t5-small' is not a local"):
        convert_main([str(reference_dir / "checkpoint_1234"), str(tmp_path / "out"), "--copy-encoder",
                      "--encoder", "google-t5/t5-small"])
    with pytest.raises(SystemExit, match=r"text_proj/proj1/kernel: checkpoint \(32, 8\) vs model \(32, 128\)"):
        convert_main([str(reference_dir / "checkpoint_1234"), str(tmp_path / "out"), "--architecture", "ELF-T"])
    assert not (tmp_path / "out" / "checkpoints").exists()
    with pytest.raises(SystemExit):
        convert_main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--weights", "--task", "--encoder", "--tokenizer", "--architecture", "--step", "--copy-encoder"):
        assert flag in text
    assert "ema_params1" in text and "self-contained" in text
