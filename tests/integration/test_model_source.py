"""``load_model_source`` on our own training output directories: every way of naming one, the
settings stored with the run, and the raw weights."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import numpy as np
import pytest
from run_fixtures import OLD_FLAT_RUN_CONFIG, store_old_run_config

from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.training.run_directory import load_model_from_checkpoint
from elf_eqx.release.names import load_release_checkpoint
from elf_eqx.release.model_source import load_model_source, load_model_source_weights
from elf_eqx.training.optim import make_optimizer
from elf_eqx.flow import FlowConstants
from elf_eqx.sampler import SamplerSettings
from elf_eqx.training.step import TrainState


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, reference_dir):
    """A training output directory as train.py leaves it: a TrainState checkpoint (step 7) of a
    conditional model (the reference fixture's weights: quicker than initialising one) with the
    run config stored beside it."""
    out = tmp_path_factory.mktemp("run") / "out"
    # The flat run config of checkpoints written before the config had sections: still read.
    flat = {**OLD_FLAT_RUN_CONFIG, "model": "ELF-T", "encoder": "offline-minilm", "max_length": 16, "max_input_length": 8,
            "pad_mode": "eos", "latent_std": 0.28, "sample_steps": 4, "sample_method": "ode", "sample_omega": 1.0,
            "sample_cfg_weight": 2.0}
    model = load_release_checkpoint(reference_dir / "checkpoint_1234", which="params")
    state = TrainState.create(model, make_optimizer(model, 1e-3, name="adamw"))
    state = eqx.tree_at(lambda s: s.ema, state, load_release_checkpoint(reference_dir / "checkpoint_1234"))
    spec = {"vocab_size": 50, "pad_id": 0, "eos_id": 1, "max_length": 16, "max_input_length": 8, "pad_mode": "eos",
            "packing": False}
    run_config = {"elf": dataclasses.asdict(model.config), "encoder": "offline-minilm", "tokenizer": "offline-minilm",
                  "data_spec": spec, "run": flat}
    with CheckpointManager(out) as manager:
        manager.save(7, state, {"data": {}})
    store_old_run_config(out / "checkpoints" / "7", run_config)
    return out


def test_a_training_run_in_every_spelling(run_dir):
    expected = load_model_from_checkpoint(run_dir)
    for source in (run_dir, run_dir / "checkpoints", run_dir / "checkpoints" / "7"):
        bundle = load_model_source(str(source))
        np.testing.assert_array_equal(bundle.model.unembed.weight, expected.unembed.weight)
        assert bundle.step == 7 and bundle.kind == "run" and "custom" in bundle.origin
    assert (bundle.encoder, bundle.tokenizer, bundle.latent_std, bundle.latent_mean) == (
        "offline-minilm", "offline-minilm", 0.28, 0.0)
    assert (bundle.layout.max_length, bundle.layout.max_input_length, bundle.layout.pad_mode) == (16, 8, "eos")
    assert bundle.sampling == SamplerSettings(method="ode", steps=4, gamma=1.5, omega=1.0, cfg_weight=2.0)
    assert bundle.flow == FlowConstants()
    assert load_model_source(str(run_dir), encoder="x.pkl", tokenizer="t").encoder == "x.pkl"


def test_raw_weights_steps_and_presets(run_dir):
    both = load_model_source_weights(str(run_dir), ("ema", "raw"))
    raw = load_model_from_checkpoint(run_dir, "model")
    np.testing.assert_array_equal(both["raw"].model.unembed.weight, raw.unembed.weight)
    assert not np.allclose(both["ema"].model.final_linear.weight, raw.final_linear.weight)
    assert "raw weights" in both["raw"].origin
    with pytest.raises(FileNotFoundError, match="no complete checkpoint for step 3"):
        load_model_source(str(run_dir), step=3)
    with pytest.raises(ValueError, match="conflicts with the step folder"):
        load_model_source(str(run_dir / "checkpoints" / "7"), step=8)
    with pytest.raises(ValueError, match="the model is custom .* not ELF-B"):
        load_model_source(str(run_dir), architecture="ELF-B")
    with pytest.raises(ValueError, match="unknown ELF preset 'ELF-Q'"):
        load_model_source(str(run_dir), architecture="ELF-Q")
    with pytest.raises(TypeError, match="parameter 'weights'"):  # the tests' type checker (Literal items)
        load_model_source_weights(str(run_dir), ("best",))
    with pytest.raises(ValueError, match=r"weights must be among 'ema', 'raw', got \[\]"):
        load_model_source_weights(str(run_dir), ())


def test_a_record_newer_than_this_reader_is_one_line_not_damage(run_dir, tmp_path, capfd):
    import json
    import shutil

    from elf_eqx.errors import IncompatibleModelError
    from elf_eqx.training.run_record import RUN_RECORD_VERSION

    newer = tmp_path / "newer"
    shutil.copytree(run_dir, newer)
    step_dir = newer / "checkpoints" / "7"
    stored = json.loads((step_dir / "meta" / "metadata").read_text())["run_config"]
    store_old_run_config(step_dir, {**stored, "version": RUN_RECORD_VERSION + 1})
    with pytest.raises(IncompatibleModelError) as err:
        load_model_source(str(newer))
    assert f"version {RUN_RECORD_VERSION + 1}" in str(err.value) and f"version {RUN_RECORD_VERSION})" in str(err.value)
    assert "cannot be read" not in capfd.readouterr().err  # refused, not skipped as a damaged step
