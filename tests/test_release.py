"""Released checkpoints end to end: msgpack files and orbax folders without Flax, hub releases
(mocked), model sources, ``python -m elf_eqx.convert``, and the reference's 8-step ODE tokens."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from elf_eqx.checkpoint import load_model_from_checkpoint
from elf_eqx.convert import main as convert_main
from elf_eqx.encoders.load import load_text_encoder
from elf_eqx.io.flax_msgpack import read_flax_msgpack
from elf_eqx.model_source import load_model_source
from elf_eqx.sampler import Sampler


@pytest.fixture(scope="module")
def cases(reference_dir):
    return dict(np.load(reference_dir / "elf_cases.npz"))


def ode_tokens(model, cases) -> np.ndarray:
    """The reference's 8-step uniform-grid ODE run (self-conditioning, SC-CFG 3, no EOS masking)."""
    sampler = Sampler(num_steps=8, method="ode", time_grid="uniform", omega=3.0)
    return np.asarray(sampler(model, jax.random.key(0), z0=jnp.asarray(cases["ode_z0"])).tokens)


def test_release_file_samples_the_reference_tokens(reference_dir, cases):
    bundle = load_model_source(str(reference_dir / "checkpoint_1234"))
    np.testing.assert_array_equal(ode_tokens(bundle.model, cases), cases["ode_tokens"])
    assert bundle.step == 1234 and "ema_params1" in bundle.origin and "ELF-T" in bundle.origin
    assert bundle.encoder == str(reference_dir / "t5_encoder.pkl")  # the pickle beside it
    load_text_encoder(bundle.encoder)  # the reference T5 pickle is a usable encoder source
    raw = load_model_source(str(reference_dir / "checkpoint_1234"), weights="raw")
    assert not np.allclose(raw.model.unembed.weight, bundle.model.unembed.weight)


def test_orbax_release_folder_and_task_layouts(reference_dir, cases, tmp_path):
    tree = read_flax_msgpack(reference_dir / "checkpoint_1234")
    folder = tmp_path / "ELF-B-de-en" / "checkpoint_1234"
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(folder, tree)
    bundle = load_model_source(str(folder))
    np.testing.assert_array_equal(ode_tokens(bundle.model, cases), cases["ode_tokens"])
    assert (bundle.max_length, bundle.max_input_length, bundle.pad_mode) == (128, 64, "eos")
    assert bundle.sampling["method"] == "ode" and bundle.sampling["cfg_weight"] == 2.0
    assert load_model_source(str(tmp_path / "ELF-B-de-en"), task="xsum").max_length == 1088


def test_hub_release_downloads_the_newest_checkpoint(reference_dir, cases, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "t5_small_encoder_jax").mkdir(parents=True)
    shutil.copy(reference_dir / "checkpoint_1234", repo / "checkpoint_1234")
    shutil.copy(reference_dir / "t5_encoder.pkl", repo / "t5_small_encoder_jax" / "t5_small_encoder_jax.pkl")
    asked = {}

    def fake_download(repo_id, allow_patterns):
        asked.update(repo_id=repo_id, patterns=allow_patterns)
        return str(repo)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "list_repo_files",
                        lambda repo_id: ["checkpoint_10", "checkpoint_1234", "README.md"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    bundle = load_model_source("embedded-language-flows/ELF-B-owt")
    assert asked["repo_id"] == "embedded-language-flows/ELF-B-owt" and "checkpoint_1234" in asked["patterns"]
    assert bundle.encoder.endswith("t5_small_encoder_jax.pkl") and bundle.tokenizer == "google-t5/t5-small"
    assert (bundle.max_length, bundle.max_input_length, bundle.sampling["num_steps"]) == (1024, 0, 32)
    np.testing.assert_array_equal(ode_tokens(bundle.model, cases), cases["ode_tokens"])


def test_convert_writes_our_format_once(reference_dir, cases, tmp_path):
    out = tmp_path / "converted"
    convert_main([str(reference_dir / "checkpoint_1234"), str(out), "--weights", "both", "--copy-encoder"])
    assert (out / "t5_encoder.pkl").is_file()
    model = load_model_from_checkpoint(out)
    np.testing.assert_array_equal(ode_tokens(model, cases), cases["ode_tokens"])
    bundle = load_model_source(str(out))
    assert bundle.encoder == str((out / "t5_encoder.pkl").absolute()) and bundle.step == 1234
    assert bundle.sampling["method"] == "sde" and bundle.latent_std == 0.2
    raw = load_model_source(str(out), weights="raw")
    reference_raw = load_model_source(str(reference_dir / "checkpoint_1234"), weights="raw")
    np.testing.assert_array_equal(raw.model.unembed.weight, reference_raw.model.unembed.weight)
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        convert_main([str(reference_dir / "checkpoint_1234"), str(out)])


def test_bad_sources_are_named(tmp_path):
    garbage = tmp_path / "checkpoint_5"
    garbage.write_bytes(b"\x00not msgpack at all")
    with pytest.raises(ValueError, match="checkpoint_5"):
        load_model_source(str(garbage))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no release checkpoint"):
        load_model_source(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="model source not found"):
        load_model_source("./no/such/thing")
    with pytest.raises(ValueError, match="--task 'mt'"):
        load_model_source(str(garbage), task="mt")


def test_mismatched_release_lists_every_difference(reference_dir):
    from elf_eqx.config import preset
    from elf_eqx.io.flax_msgpack import flatten_params
    from elf_eqx.io.release_params import model_from_reference_params

    flat = flatten_params(read_flax_msgpack(reference_dir / "checkpoint_1234")["ema_params1"])
    with pytest.raises(ValueError) as err:
        model_from_reference_params(flat, preset("ELF-T", encoder_dim=16, vocab_size=50))
    text = str(err.value)
    assert "proj_kernel: checkpoint (64, 32) vs model (64, 16)" in text and "unembed_kernel" in text
