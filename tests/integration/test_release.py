"""Released checkpoints without Flax: msgpack files and orbax folders, the reference's 8-step ODE
tokens from them, hub releases (mocked), and clear errors for what is not a release."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import orbax.checkpoint as ocp
import pytest

from elf_eqx.config import preset
from elf_eqx.encoders.load import load_text_encoder
from elf_eqx.io.flax_msgpack import read_flax_msgpack
from elf_eqx.release.checkpoint import read_release_weights
from elf_eqx.release.model_source import load_model_source
from elf_eqx.release.tasks import preset_name
from elf_eqx.sampler import Sampler


@pytest.fixture(scope="module")
def cases(reference_dir):
    return dict(np.load(reference_dir / "elf_cases.npz"))


def ode_tokens(model, cases) -> np.ndarray:
    """The reference's 8-step uniform-grid ODE run (self-conditioning, SC-CFG 3, no EOS masking)."""
    sampler = Sampler(num_steps=8, method="ode", time_grid="uniform", omega=3.0)
    return np.asarray(sampler(model, jax.random.key(0), z0=jnp.asarray(cases["ode_z0"])).tokens)


def write_orbax_release(reference_dir: Path, folder: Path) -> None:
    """The fixture's whole dict (params, ema_params1, opt_state, scalars) as an orbax PyTree folder."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(folder.absolute(), read_flax_msgpack(reference_dir / "checkpoint_1234"))


def release_repo(reference_dir: Path, repo: Path) -> Path:
    """A local folder laid out like a release repo: checkpoint file + the T5 encoder pickle."""
    (repo / "t5_small_encoder_jax").mkdir(parents=True)
    shutil.copy(reference_dir / "checkpoint_1234", repo / "checkpoint_1234")
    shutil.copy(reference_dir / "t5_encoder.pkl", repo / "t5_small_encoder_jax" / "t5_small_encoder_jax.pkl")
    return repo


def test_release_file_samples_the_reference_tokens(reference_dir, cases):
    bundle = load_model_source(str(reference_dir / "checkpoint_1234"))
    np.testing.assert_array_equal(ode_tokens(bundle.model, cases), cases["ode_tokens"])
    assert bundle.step == 1234 and "ema_params1" in bundle.origin and "custom" in bundle.origin
    assert bundle.encoder == str(reference_dir / "t5_encoder.pkl")  # the pickle beside it
    load_text_encoder(bundle.encoder)  # the reference T5 pickle is a usable encoder source
    assert (bundle.layout.max_length, bundle.layout.max_input_length, bundle.layout.pad_mode, bundle.tokenizer) == (
        1024, 0, "pad", "google-t5/t5-small")
    assert bundle.sampling.to_dict() == {"method": "sde", "steps": 32, "gamma": 1.5, "omega": 3.0, "cfg_weight": 1.0,
                                         "time_grid": "logit_normal", "self_condition": True, "solver": "euler",
                                         "sde_noise": "reference", "grid_exponent": 2.0, "grid_seed": None}
    assert (bundle.latent_mean, bundle.latent_std) == (0.0, 0.2)
    assert bundle.flow.to_dict() == {"p_mean": -1.5, "p_std": 0.8, "noise_scale": 2.0, "t_eps": 0.05}
    raw = load_model_source(str(reference_dir / "checkpoint_1234"), weights="raw")
    assert "params" in raw.origin and not np.allclose(raw.model.unembed.weight, bundle.model.unembed.weight)


def test_orbax_release_folder_task_layouts_and_steps(reference_dir, cases, tmp_path):
    repo = tmp_path / "ELF-B-de-en"
    write_orbax_release(reference_dir, repo / "checkpoint_1234")
    bundle = load_model_source(str(repo / "checkpoint_1234"), step=1234)
    np.testing.assert_array_equal(ode_tokens(bundle.model, cases), cases["ode_tokens"])
    assert (bundle.layout.max_length, bundle.layout.max_input_length, bundle.layout.pad_mode, bundle.step) == (128, 64, "eos", 1234)
    assert bundle.sampling.method == "ode" and bundle.sampling.steps == 64
    assert bundle.sampling.cfg_weight == 2.0 and bundle.sampling.omega == 1.0
    assert load_model_source(str(repo), task="xsum").layout.max_length == 1088
    shutil.copy(reference_dir / "checkpoint_1234", repo / "checkpoint_99")  # an older msgpack beside it
    assert load_model_source(str(repo)).step == 1234
    older = read_release_weights(repo / "checkpoint_99", ("ema", "raw"))
    newer = read_release_weights(repo / "checkpoint_1234", ("ema", "raw"))
    for kind in ("ema", "raw"):
        assert older.params[kind].keys() == newer.params[kind].keys()
        for name, value in older.params[kind].items():
            np.testing.assert_array_equal(newer.params[kind][name], value)
    with pytest.raises(ValueError, match="step=5 cannot be chosen for the single checkpoint"):
        load_model_source(str(repo / "checkpoint_1234"), step=5)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint_5; its steps: \[99, 1234\]"):
        load_model_source(str(repo), step=5)
    assert preset_name(preset("ELF-B", encoder_dim=512, vocab_size=32100)) == "ELF-B"
    nested = tmp_path / "managed" / "checkpoint_77"  # an orbax CheckpointManager step: item in default/
    nested.mkdir(parents=True)
    shutil.move(repo / "checkpoint_1234", nested / "default")
    assert load_model_source(str(nested), task="owt").step == 1234


def test_hub_release_downloads_one_checkpoint_and_the_pickle(reference_dir, cases, tmp_path, monkeypatch):
    import huggingface_hub

    repo = release_repo(reference_dir, tmp_path / "repo" / "de-en")
    asked = []

    def fake_download(repo_id, allow_patterns):
        asked.append((repo_id, allow_patterns))
        return str(tmp_path / "repo")

    monkeypatch.setattr(huggingface_hub, "list_repo_files",
                        lambda repo_id: ["de-en/checkpoint_10", "de-en/checkpoint_1234", "README.md"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    bundle = load_model_source("embedded-language-flows/ELF-B/de-en")
    assert asked[-1] == ("embedded-language-flows/ELF-B",
                         ["de-en/checkpoint_1234", "de-en/checkpoint_1234/*", "*.pkl"])
    assert bundle.encoder == str(repo / "t5_small_encoder_jax" / "t5_small_encoder_jax.pkl")
    assert bundle.tokenizer == "google-t5/t5-small" and bundle.step == 1234
    assert (bundle.layout.max_length, bundle.layout.max_input_length, bundle.layout.pad_mode) == (128, 64, "eos")
    np.testing.assert_array_equal(ode_tokens(bundle.model, cases), cases["ode_tokens"])

    def offline(repo_id):
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", offline)  # the cache decides
    (repo / "t5_small_encoder_jax" / "t5_small_encoder_jax.pkl").unlink()
    bundle = load_model_source("embedded-language-flows/ELF-B/de-en", encoder="offline-minilm")
    assert asked[-1][1] == ["de-en/checkpoint_*", "*.pkl"] and bundle.encoder == "offline-minilm"
    assert load_model_source("embedded-language-flows/ELF-B/de-en").encoder == "google-t5/t5-small"


def test_hub_failures_are_clear(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id: ["README.md"])
    with pytest.raises(FileNotFoundError, match="hub repo org/ELF-X has no checkpoint_<step>"):
        load_model_source("org/ELF-X")

    def unreachable(repo_id, allow_patterns):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id: ["checkpoint_1"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(FileNotFoundError, match="could not fetch the release 'org/ELF-X'"):
        load_model_source("org/ELF-X")


def test_bad_sources_are_named(reference_dir, tmp_path, monkeypatch):
    garbage = tmp_path / "checkpoint_5"
    garbage.write_bytes(b"\x00not msgpack at all")
    with pytest.raises(ValueError, match="checkpoint_5 is not a Flax msgpack checkpoint"):
        load_model_source(str(garbage))
    truncated = tmp_path / "checkpoint_6"
    whole = (reference_dir / "checkpoint_1234").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="checkpoint_6 .*truncated"):
        load_model_source(str(truncated))
    other = tmp_path / "checkpoint_7"
    other.write_bytes(msgpack.packb({"weights": {"w": 1}}))
    with pytest.raises(ValueError, match=r"checkpoint_7 has no 'ema_params1' entry: it holds \['weights'\]"):
        load_model_source(str(other))
    broken = tmp_path / "checkpoint_8"
    broken.mkdir()
    (broken / "_METADATA").write_text("{not json")
    with pytest.raises(ValueError, match="checkpoint_8: cannot read this orbax checkpoint"):
        load_model_source(str(broken))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty holds no release checkpoint"):
        load_model_source(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="model source not found: ./no/such/thing"):
        load_model_source("./no/such/thing")
    monkeypatch.chdir(tmp_path.parent)  # mistyped local paths are never asked of the hub
    for mistyped in (str(tmp_path / "no" / "run"), f"{tmp_path.name}/no_such_run"):
        with pytest.raises(FileNotFoundError, match=r"model source not found: .*\(looked for a local"):
            load_model_source(mistyped)
    with pytest.raises(ValueError, match="--task 'mt'"):
        load_model_source(str(reference_dir / "checkpoint_1234"), task="mt")


def test_a_preset_that_does_not_fit_lists_every_difference(reference_dir):
    with pytest.raises(ValueError) as err:
        load_model_source(str(reference_dir / "checkpoint_1234"), architecture="ELF-T")
    text = str(err.value)
    assert "checkpoint_1234 (ema_params1)" in text
    assert "text_proj/proj1/kernel: checkpoint (32, 8) vs model (32, 128)" in text
    assert "text_proj/proj2/kernel: checkpoint (8, 64) vs model (128, 64)" in text
    with pytest.raises(ValueError, match="blocks_2/norm1/weight"):
        load_model_source(str(reference_dir / "checkpoint_1234"), architecture="ELF-XS")
